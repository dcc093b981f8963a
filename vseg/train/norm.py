"""Freezing BatchNorm part-way through training, after recalibrating its statistics.

Why: trained from scratch with a batch of one clip, every BatchNorm normalises with the
statistics of that clip's few frames, and the network learns to lean on this per-clip
normalisation. At inference BatchNorm uses its running averages instead, and the mismatch
costs a lot (measured on a synthetic-trained `stm`: training-clip J&F 33 with running
statistics against 53 with per-frame batch statistics). Per-frame statistics at inference
would cure it but cannot be folded into the convolutions (which spvos's tile-sparse path and
TensorRT rely on). So, part-way through, the statistics are recomputed over many clips and
frozen, and the rest of training adapts the network to exactly what inference will use.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vseg.models.stm import MemoryNetwork
from vseg.train.losses import rollout_clip


def batchnorm_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics used, not updated); the affine
    weights still train. Call again after each ``model.train()``."""
    for layer in batchnorm_layers(model):
        layer.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: MemoryNetwork, batches: Iterable[dict], device: torch.device) -> int:
    """Recompute every BatchNorm's running mean/var as the plain average over ``batches``
    (collated training clips: frames [B, T, 3, H, W], masks [B, T, K, H, W], object_valid
    [B, K]), running the same rollout as training; returns the number of batches used."""
    was_training = model.training
    model.train()
    # only the layers training mode updates (spvos keeps its key encoder's BatchNorm frozen)
    layers = [layer for layer in batchnorm_layers(model) if layer.training]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the calibration batches
    count = 0
    try:
        for batch in batches:
            rollout_clip(model, batch["frames"].to(device), batch["masks"].to(device),
                         batch["object_valid"].to(device))
            count += 1
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
        model.train(was_training)
    return count
