"""The ResNet-family model builder.

One function, :func:`build_model`, turns a configuration of the search space
into a network: residual blocks of type ``v1`` (post-activation), ``v2``
(pre-activation) or ``next`` (grouped bottleneck, ResNeXt style), with the
configured activation, stem width, per-stage width multiplier and blocks per
stage. Stage ``i`` (counting from 0) has ``filter_multiplier * 2**i`` output
channels and halves the resolution from the second stage on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepens.errors import SpaceError

SMALL_IMAGE = 64
"""Images up to this many pixels a side get a 3x3 stride-1 stem."""

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise SpaceError(
            f"activation {name!r} is unknown; allowed are {sorted(_ACTIVATIONS)}"
        ) from None


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class PostActivationBlock(nn.Module):
    """ResNet v1 basic block: conv-BN-act-conv-BN, add, then activate."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, activation: str
    ):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(
                in_channels, out_channels, 3, stride=stride, padding=1, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            _activation(activation),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.activation = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class PreActivationBlock(nn.Module):
    """ResNet v2 basic block: BN-act-conv-BN-act-conv, then add (no final act)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, activation: str
    ):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(in_channels), _activation(activation))
        self.body = nn.Sequential(
            nn.Conv2d(
                in_channels, out_channels, 3, stride=stride, padding=1, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            _activation(activation),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        # The v2 shortcut has no BN of its own: it projects the pre-activated input.
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if needs_projection
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.pre(x)
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        return self.body(activated) + shortcut


class GroupedBottleneckBlock(nn.Module):
    """ResNeXt block: 1x1 reduce, grouped 3x3, 1x1 expand, add, activate."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: str,
        cardinality: int,
    ):
        super().__init__()
        # Half the output width, rounded up so the grouped conv divides evenly.
        width = max(cardinality, -(-out_channels // 2 // cardinality) * cardinality)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            _activation(activation),
            nn.Conv2d(
                width,
                width,
                3,
                stride=stride,
                padding=1,
                groups=cardinality,
                bias=False,
            ),
            nn.BatchNorm2d(width),
            _activation(activation),
            nn.Conv2d(width, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.activation = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A residual network assembled from a search-space configuration."""

    def __init__(
        self,
        config: Mapping[str, Any],
        in_channels: int,
        num_classes: int,
        image_size: int,
    ):
        super().__init__()
        block_type = config["block_type"]
        activation = config["activation"]
        stem_filters = int(config["stem_filters"])
        multiplier = int(config["filter_multiplier"])
        cardinality = int(config.get("cardinality", 1))

        self.stem = _stem(in_channels, stem_filters, image_size, block_type, activation)
        layers: list[nn.Module] = []
        channels = stem_filters
        for stage in range(4):
            blocks = int(config[f"blocks_stage{stage + 1}"])
            out_channels = multiplier * 2**stage
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(
                    _block(
                        block_type,
                        channels,
                        out_channels,
                        stride,
                        activation,
                        cardinality,
                    )
                )
                channels = out_channels
        self.stages = nn.Sequential(*layers)

        # v2 blocks leave their output un-normalised, so the head normalises it.
        self.head_norm: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(channels), _activation(activation))
            if block_type == "v2"
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head_norm(self.stages(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(features), 1))


def _stem(
    in_channels: int, filters: int, image_size: int, block_type: str, activation: str
) -> nn.Module:
    if image_size <= SMALL_IMAGE:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, filters, 3, stride=1, padding=1, bias=False)
        ]
        pool: list[nn.Module] = []
    else:
        layers = [nn.Conv2d(in_channels, filters, 7, stride=2, padding=3, bias=False)]
        pool = [nn.MaxPool2d(3, stride=2, padding=1)]
    # A v2 network normalises inside each block, so its stem is a bare convolution.
    if block_type != "v2":
        layers += [nn.BatchNorm2d(filters), _activation(activation)]
    return nn.Sequential(*layers, *pool)


def _block(
    block_type: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    activation: str,
    cardinality: int,
) -> nn.Module:
    if block_type == "v1":
        return PostActivationBlock(in_channels, out_channels, stride, activation)
    if block_type == "v2":
        return PreActivationBlock(in_channels, out_channels, stride, activation)
    if block_type == "next":
        return GroupedBottleneckBlock(
            in_channels, out_channels, stride, activation, max(1, cardinality)
        )
    raise SpaceError(f"block_type {block_type!r} is unknown; allowed are v1, v2, next")


def build_model(
    config: Mapping[str, Any], in_channels: int, num_classes: int, image_size: int
) -> ResNet:
    """Build the network a configuration describes.

    Parameters
    ----------
    config : mapping
        A configuration of the search space (see :mod:`deepens.space`).
    in_channels : int
        1 for grayscale images, 3 for colour.
    num_classes : int
        Width of the output layer (logits).
    image_size : int
        The larger side of the input images; picks the stem.

    Returns
    -------
    ResNet
        An untrained network that maps ``(B, C, H, W)`` floats to ``(B, classes)``
        logits.
    """
    return ResNet(config, in_channels, num_classes, image_size)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable weights."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    """Floating-point operations to classify one image (multiply-add counts two)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sample = torch.zeros(1, in_channels, *image_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(sample)
    model.train(was_training)
    return int(counter.get_total_flops())


def load_model(
    config: Mapping[str, Any],
    weights_path: str | Path,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    device: torch.device | str = "cpu",
) -> ResNet:
    """Rebuild a network and load its saved weights, in evaluation mode."""
    model = build_model(config, in_channels, num_classes, image_size)
    state = torch.load(weights_path, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()
