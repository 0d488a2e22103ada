"""Batched data augmentation on the training device, with kornia.

The search space's augmentation parameters follow the paper's Table 3:
``zoom`` and ``translation`` are fractions of the image size, ``shear`` is a
shear factor (the tangent of the shear angle), ``channel_shift`` is a fraction
of the full intensity range added per channel, and ``rotation`` is in degrees.
Each image in a batch draws its own transform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class Augmentation(nn.Module):
    """Random affine warp and per-channel intensity shift of floats in [0, 1]."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        zoom = float(config.get("zoom", 0.0))
        translation = float(config.get("translation", 0.0))
        shear = float(config.get("shear", 0.0))
        rotation = float(config.get("rotation", 0.0))
        self.channel_shift = float(config.get("channel_shift", 0.0))

        self.affine: nn.Module | None = None
        if zoom or translation or shear or rotation:
            # Imported here: kornia takes over a second to import and inference
            # (deepens predict) never needs it.
            import kornia.augmentation as kornia_augmentation

            self.affine = kornia_augmentation.RandomAffine(
                degrees=rotation,
                translate=(translation, translation) if translation else None,
                scale=(max(1.0 - zoom, 0.05), 1.0 + zoom) if zoom else None,
                shear=math.degrees(math.atan(shear)) if shear else None,
                padding_mode="zeros",
                p=1.0,
            )

    @property
    def is_identity(self) -> bool:
        """True when the configuration asks for no augmentation at all."""
        return self.affine is None and self.channel_shift == 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a ``(B, C, H, W)`` float batch; returns a batch of the same shape."""
        if self.affine is not None:
            images = self.affine(images)
        if self.channel_shift:
            batch, channels = images.shape[:2]
            shift = torch.empty(batch, channels, 1, 1, device=images.device)
            shift.uniform_(-self.channel_shift, self.channel_shift)
            images = (images + shift).clamp_(0.0, 1.0)
        return images
