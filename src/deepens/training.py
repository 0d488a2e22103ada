"""Training and inference steps for one network.

Images stay uint8 in memory; each batch is moved to the device and scaled to
[0, 1] there, then augmented there, so the CPU never holds a float copy of the
data set.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from deepens.augment import Augmentation
from deepens.library import loss_and_error

_logger = logging.getLogger(__name__)

INFERENCE_BATCH = 500


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def to_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a uint8 ``(B, C, H, W)`` batch to ``device`` as floats in [0, 1]."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def make_optimizer(
    model: nn.Module, config: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """Adam with the configuration's learning rate and L2 factor."""
    return torch.optim.Adam(
        model.parameters(),
        lr=float(config["learning_rate"]),
        weight_decay=float(config.get("l2", 0.0)),
    )


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay of the learning rate to zero over ``total_steps`` batches.

    Trials are short (a few epochs), and a constant Adam step leaves the last
    epoch's validation loss noisy; decaying over the full epoch budget makes the
    model a trial ends with close to its best, for every rung it reaches.
    """
    steps = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps)),
    )


def batch_slices(
    size: int, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffled index batches covering ``size`` samples.

    A final batch of one sample would make batch normalisation fail in training
    mode (it cannot estimate a variance from one value), so such a sample joins
    the batch before it.
    """
    order = torch.randperm(size, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    augmentation: Augmentation,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | str,
    generator: torch.Generator,
    autocast: bool = False,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """Train one epoch and return the mean training loss.

    Raises
    ------
    TrainingDiverged
        When a batch's loss is not finite; the caller records the trial as failed.
    """
    model.train()
    loss_function = nn.CrossEntropyLoss()
    total, seen = 0.0, 0
    device_type = torch.device(device).type
    for indices in batch_slices(len(images), batch_size, generator):
        if len(indices) == 1:
            # The whole training set is one image; BN cannot train on it.
            continue
        batch = augmentation(to_float(images[indices], device))
        targets = labels[indices].to(device, non_blocking=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_function(model(batch), targets)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training loss became {loss.item()}")

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(indices)
        seen += len(indices)
    return total / max(seen, 1)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device | str,
    batch_size: int = INFERENCE_BATCH,
) -> np.ndarray:
    """Class probabilities ``(N, C)`` as float32 numpy, in evaluation mode."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        logits = model(to_float(images[start : start + batch_size], device))
        outputs.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(outputs).numpy()


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (inf if any is not finite)."""
    return loss_and_error(probabilities, labels)[0]
