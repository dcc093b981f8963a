"""An exponential moving average of a network's weights, the copy a run ships when ``--ema`` is on.

Why: a VOS run here steps with 4 clips at a time, so the weights it ends on carry the noise of
its last few batches (runs that differ only in their sampling seed land about 2 J&F apart,
BENCHMARKS.md, session 16). The average of the weights over the last ~1/(1 - decay) steps
(Polyak averaging; the "EMA model" of timm and of most detection and segmentation recipes)
smooths that out: in session 22's 3500-step `stm` fine-tune it scored 72.60 J&F where the same
run's last weights scored 71.66.

Only parameters are averaged. Buffers (BatchNorm running statistics) are copied from the live
network: averaging them would blend the statistics from before a recalibration with those after
it. For the same reason the average restarts from the live weights when BatchNorm is
recalibrated and frozen (``VOSTrainer.freeze_norms``), so it covers only weights trained with
the statistics it ships with.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """``average`` holds ``decay_at(n) * average + (1 - decay_at(n)) * live`` after the n-th
    :meth:`update` since the last :meth:`reset`, where ``decay_at(n) = min(decay, (1 + n) / (10 + n))``
    (the usual warm-up, so the first updates are not tied to the starting weights)."""

    def __init__(self, live: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.average = copy.deepcopy(live).eval().requires_grad_(False)
        # a buffer, so a checkpoint carries it and a resumed run continues the same average
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        d = self.decay_at(int(self.updates))
        for (name, avg), (live_name, p) in zip(self.average.named_parameters(), live.named_parameters()):
            if name != live_name:  # same architecture, same order: anything else is a bug
                raise RuntimeError(f"EMA parameter {name} does not match {live_name}")
            avg.lerp_(p.detach().to(avg.dtype), 1.0 - d)
        self._copy_buffers(live)
        self.updates += 1

    @torch.no_grad()
    def reset(self, live: nn.Module) -> None:
        """Start again from ``live``'s weights (after its BatchNorm statistics changed)."""
        for avg, p in zip(self.average.parameters(), live.parameters()):
            avg.copy_(p.detach())
        self._copy_buffers(live)
        self.updates.zero_()

    def _copy_buffers(self, live: nn.Module) -> None:
        for avg, b in zip(self.average.buffers(), live.buffers()):
            avg.copy_(b)
