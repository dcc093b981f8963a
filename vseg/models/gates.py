"""The triple gate of `spvos`: per output tile, REUSE / COARSE / DENSE.

One :class:`TripleGate` per gated convolution. It looks at the convolution's input x_t and at
the input its previous output came from (x_{t-1}; for a tile REUSEd since frame s, x_s:
:func:`reference_input`), average-pooled to the tile grid of the convolution's OUTPUT (one
window of ``tile * stride`` input pixels per output tile): the pooled temporal change
|x_t - x_ref| (temporal redundancy) and the pooled x_t (content), concatenated, then two 1x1 convolutions
give three logits per tile, in the order of the decision values (0 REUSE, 1 COARSE, 2 DENSE).

Budget conditioning: one set of weights serves a range of budgets. The budget b (the target
fraction of the gated layers' dense FLOPs, REUSE costing 0, COARSE 0.25 and DENSE 1 per
tile) is normalised to [-1, 1] over the trained range [low, high] and enters twice: as a
FiLM scale and shift on the hidden layer (the gate can change *which* tiles it keeps with the
budget) and as a per-choice bias on the logits (it can move the overall mix). Mixed sparse
training draws b uniformly from [low, high] for every sparse batch and the sparsity loss pulls
the expected cost to b, so every budget in the range is seen in training and the gate's
output is a smooth function of b in between: any budget in [low, high] works at inference.
A budget outside the range was never trained and is refused (:func:`check_budget`).

Training: :func:`gumbel_softmax_st` (hard one-hot forward, soft gradients backward, with a
temperature) gives the per-tile weights the masked-dense convolution blends with. Inference:
argmax, as int32 decisions [N, 1, th, tw] for the custom op.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vseg.errors import VsegError
from vseg.ops.gated_sparse_conv import (
    DENSE,
    REUSE,
    gated_sparse_conv2d,
    masked_dense_gated_conv2d,
)

# Cost of one tile per choice, relative to computing it densely (index = decision value).
CHOICE_COST = (0.0, 0.25, 1.0)


def gumbel_softmax_st(logits: torch.Tensor, tau: float = 1.0, dim: int = 1,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through Gumbel-softmax sample along ``dim``.

    logits [..., C, ...] -> weights of the same shape whose forward value is exactly one-hot
    (the argmax of logits + Gumbel noise) and whose gradient is that of the relaxed sample
    softmax((logits + g) / tau). ``generator`` makes the noise reproducible.
    """
    if tau <= 0:
        raise ValueError(f"the Gumbel-softmax temperature must be > 0, got {tau}")
    uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    tiny = torch.finfo(logits.dtype).tiny
    exponential = (-torch.log(uniform.clamp(min=tiny))).clamp(min=tiny)  # -log(u) > 0
    gumbel = -torch.log(exponential)
    soft = torch.softmax((logits + gumbel) / tau, dim)
    hard = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    # soft - soft.detach() is exactly 0 in value, so the forward value is exactly `hard`.
    return hard + (soft - soft.detach())


def expected_tile_cost(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-tile expected cost from choice probabilities [N, 3, th, tw] -> [N, th, tw]."""
    cost = torch.tensor(CHOICE_COST, dtype=probabilities.dtype, device=probabilities.device)
    return torch.einsum("nchw,c->nhw", probabilities, cost)


def sparsity_loss(expected_cost: torch.Tensor, budget: float | torch.Tensor) -> torch.Tensor:
    """Squared distance of the expected cost to the budget, averaged over the batch.

    expected_cost [N]: fraction of the gated layers' dense FLOPs (see
    :meth:`vseg.models.cost.SparseCostModel.expected_cost`); budget a float or [N].
    Two-sided on purpose: a gate that spends less than its budget wastes accuracy the budget
    paid for, and a budget-conditioned gate must learn to hit the budget from both sides.
    """
    target = torch.as_tensor(budget, dtype=expected_cost.dtype, device=expected_cost.device)
    return ((expected_cost - target) ** 2).mean()


def sample_budget(rng, low: float, high: float) -> float:
    """A budget drawn uniformly from [low, high] for one sparse batch.

    rng: anything with ``uniform(low, high)`` (``random.Random``, ``numpy.random.Generator``),
    so a training run's budget sequence is reproducible from its seed.
    """
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"a budget range must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
    return float(rng.uniform(low, high))


def mixed_batch_budget(step: int, rng, low: float, high: float, sparse_every: int = 2) -> float | None:
    """Mixed sparse training's schedule: None for a dense batch, else a budget drawn uniformly
    from [low, high]. Every ``sparse_every``-th batch is sparse (2: dense and sparse alternate,
    starting dense; 1: every batch sparse). ``rng``: see :func:`sample_budget`."""
    if sparse_every < 1:
        raise ValueError(f"sparse_every must be >= 1, got {sparse_every}")
    if (step + 1) % sparse_every:
        return None
    return sample_budget(rng, low, high)


def check_budget(budget: float, low: float, high: float) -> float:
    """The budget if it lies in the trained range [low, high]; a one-line VsegError if not."""
    if not low - 1e-9 <= budget <= high + 1e-9:
        raise VsegError(f"budget {budget:g} is outside the range this model was trained for "
                        f"[{low:g}, {high:g}]")
    return float(budget)


class GateOutput(NamedTuple):
    """What one gate decided for one frame.

    decision int32 [N, 1, th, tw] (0 REUSE, 1 COARSE, 2 DENSE); weights [N, 3, th, tw] the
    straight-through one-hot sample in training mode, None in eval mode; probabilities
    [N, 3, th, tw] = softmax(logits) (for the expected cost).
    """

    decision: torch.Tensor
    weights: torch.Tensor | None
    probabilities: torch.Tensor


class TripleGate(nn.Module):
    """Per-tile REUSE / COARSE / DENSE gate of one convolution (see the module docstring).

    in_channels: the convolution's input channels; tile, stride: the convolution's output tile
    and stride (one pooling window = tile * stride input pixels); budget_range: (low, high).
    """

    def __init__(self, in_channels: int, tile: int, stride: int, budget_range: tuple[float, float],
                 hidden: int = 16) -> None:
        super().__init__()
        self.window = tile * stride
        self.low, self.high = float(budget_range[0]), float(budget_range[1])
        self.hidden = hidden
        self.embed = nn.Conv2d(2 * in_channels, hidden, 1)
        self.film = nn.Linear(1, 2 * hidden)  # budget -> (scale, shift) of the hidden layer
        self.head = nn.Conv2d(hidden, 3, 1)
        self.budget_bias = nn.Linear(1, 3)  # budget -> per-choice logit bias
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        # Start from "more budget, more DENSE and less REUSE" so an untrained gate already
        # follows the budget in the right direction.
        with torch.no_grad():
            self.budget_bias.weight.copy_(torch.tensor([[-2.0], [0.0], [2.0]]))
            self.budget_bias.bias.zero_()

    def normalised_budget(self, budget: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
        """budget (float or [N]) -> [N, 1] in [-1, 1] over the trained range."""
        b = torch.as_tensor(budget, dtype=like.dtype, device=like.device).reshape(-1, 1).expand(batch, 1)
        mid, half = 0.5 * (self.low + self.high), max(0.5 * (self.high - self.low), 1e-6)
        return (b - mid) / half

    def logits(self, x: torch.Tensor, x_prev: torch.Tensor, budget: float | torch.Tensor) -> torch.Tensor:
        """x, x_prev [N, Cin, H, W] (the convolution's input now and one frame before) ->
        logits [N, 3, th, tw] on the output tile grid."""
        pool = {"kernel_size": self.window, "stride": self.window, "ceil_mode": True}
        change = F.avg_pool2d(torch.sub(x, x_prev).abs_(), **pool)
        content = F.avg_pool2d(x, **pool)
        b = self.normalised_budget(budget, x.shape[0], x)
        scale, shift = self.film(b).view(-1, 2 * self.hidden, 1, 1).chunk(2, dim=1)
        h = torch.relu(self.embed(torch.cat([change, content], 1)) * (1 + scale) + shift)
        return self.head(h) + self.budget_bias(b).view(-1, 3, 1, 1)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor, budget: float | torch.Tensor, tau: float = 1.0,
                generator: torch.Generator | None = None) -> GateOutput:
        logits = self.logits(x, x_prev, budget)
        probabilities = torch.softmax(logits, 1)
        if self.training:
            weights = gumbel_softmax_st(logits, tau, 1, generator)
            decision = weights.detach().argmax(1, keepdim=True).to(torch.int32)
            return GateOutput(decision, weights, probabilities)
        return GateOutput(logits.argmax(1, keepdim=True).to(torch.int32), None, probabilities)


def reference_input(x: torch.Tensor, x_prev: torch.Tensor, decision: torch.Tensor, window: int) -> torch.Tensor:
    """The input a gated conv's gate compares the next frame against -> [N, Cin, H, W].

    x, x_prev [N, Cin, H, W] (now, and the reference the previous frame kept); decision int32
    [N, 1, th, tw]; window = tile * stride input pixels per output tile. Where a tile was
    computed (COARSE or DENSE) its output now comes from x; where it was REUSEd the output is
    still the one computed from x_prev, so x_prev stays the reference. The gate thus sees the
    change accumulated since a tile was last computed, not only the last frame's.
    """
    n, _, th, tw = decision.shape
    reuse = decision.eq(REUSE)[:, :, :, None, :, None].expand(n, 1, th, window, tw, window)
    reuse = reuse.reshape(n, 1, th * window, tw * window)[:, :, :x.shape[2], :x.shape[3]]
    return torch.where(reuse, x_prev, x)


def run_gated_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, gate: TripleGate,
                   x: torch.Tensor, x_prev: torch.Tensor, y_prev: torch.Tensor, *, activation: str, tile: int,
                   coarse_mode: str, budget: float | torch.Tensor, tau: float = 1.0,
                   generator: torch.Generator | None = None, force_dense: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One GatedSparseConv2d driven by its gate -> (y, decision int32 [N, 1, th, tw],
    probabilities [N, 3, th, tw]).

    conv gives the geometry (kernel, stride, padding, dilation, groups); weight [Cout, Cin/g, k, k]
    and bias [Cout] the values (the key encoder passes them with its BatchNorm folded in).
    x, x_prev [N, Cin, H, W]; y_prev [N, Cout, Ho, Wo]. A gate in training mode samples
    Gumbel-softmax straight-through and the conv runs masked-dense (differentiable); in eval
    mode the gate takes the argmax and the conv runs the tile-sparse custom op. force_dense
    (bool, broadcastable to the decisions; eval mode): where True every tile is DENSE, so one
    exported graph serves keyframes and sparse frames.
    """
    attrs = {"kernel": conv.kernel_size[0], "stride": conv.stride[0], "padding": conv.padding[0],
             "dilation": conv.dilation[0], "groups": conv.groups, "tile": tile, "coarse_mode": coarse_mode,
             "activation": activation}
    g = gate(x, x_prev, budget, tau, generator)
    if g.weights is not None:  # a training-mode gate
        return masked_dense_gated_conv2d(x, g.weights, y_prev, weight, bias, **attrs), g.decision, g.probabilities
    decision = g.decision
    if force_dense is not None:
        decision = torch.where(force_dense, torch.full_like(decision, DENSE), decision)
    return gated_sparse_conv2d(x, decision, y_prev, weight, bias, **attrs), decision, g.probabilities


__all__ = [
    "CHOICE_COST",
    "GateOutput",
    "TripleGate",
    "check_budget",
    "expected_tile_cost",
    "gumbel_softmax_st",
    "mixed_batch_budget",
    "reference_input",
    "run_gated_conv",
    "sample_budget",
    "sparsity_loss",
]
