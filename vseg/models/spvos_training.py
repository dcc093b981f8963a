"""Mixed sparse training of `spvos`: gated clips with Gumbel straight-through gates.

A VOS training loop trains spvos (started by :func:`vseg.models.spvos.spvos_from_stm`) with,
per batch::

    budget = mixed_batch_budget(step, rng, cfg.budget_low, cfg.budget_high)
    loss, stats = spvos_training_step(model, frames, masks, object_valid, budget=budget, ...)
    loss.backward(); optimizer.step()

Dense batches (budget None) keep the dense path -- what keyframes run -- accurate; sparse
batches train gates and network together at a budget drawn from the trained range. A sparse
clip runs as inference does: frame 0 all-dense (key encoder; it is not decoded), frames
1..T-1 with gated key encoders; the decoder runs dense on frame 1 (no previous decoded frame
yet) and gated from frame 2 on, each frame taking the previous frame's state (gradients flow
through it). The sparsity loss pulls the expected cost of every gated conv whose gate ran,
weighted by its dense FLOPs (:meth:`vseg.models.cost.SparseCostModel.expected_cost`), to the
budget; clips of 3 frames train the decoder gates on their last frame only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from vseg.models.cost import cost_model_for
from vseg.models.gates import sparsity_loss
from vseg.models.stm import KeyFeatures

if TYPE_CHECKING:
    from vseg.models.spvos import SpVOS


class ClipKeys(NamedTuple):
    """Key features of a training clip: ``features`` per frame 0..T-1; per sparse frame
    1..T-1 the key gates' ``probabilities`` and ``decisions`` (tuples, one tensor per gated
    conv; empty lists on a dense batch)."""

    features: list[KeyFeatures]
    probabilities: list[tuple[torch.Tensor, ...]]
    decisions: list[tuple[torch.Tensor, ...]]


def encode_clip_keys(model: SpVOS, frames: torch.Tensor, budget: float | None, tau: float = 1.0,
                     generator: torch.Generator | None = None) -> ClipKeys:
    """Key features of clips frames [B, T, 3, H, W] in [0, 1].

    budget None: every frame dense (one batched call). Otherwise frame 0 runs dense (as the
    first frame does at inference) and frames 1..T-1 run gated at ``budget``, each taking the
    previous frame's state.
    """
    b, t = frames.shape[:2]
    if budget is None:
        out = model.encode_key(frames.flatten(0, 1), dense=True).features
        parts = [x.view(b, t, *x.shape[1:]).unbind(1) for x in out[:4]]
        return ClipKeys([KeyFeatures(*p) for p in zip(*parts)], [], [])
    first = model.encode_key(frames[:, 0], dense=True)
    features, state, probabilities, decisions = [first.features], first.state, [], []
    for i in range(1, t):
        out, p = model.encode_key_with_gates(frames[:, i], state, budget, tau=tau, generator=generator)
        features.append(out.features)
        state = out.state
        probabilities.append(p)
        decisions.append(out.decisions)
    return ClipKeys(features, probabilities, decisions)


class SparseRollout(NamedTuple):
    """A clip decoded with the gated decoder: ``logits`` [B, K+1, H, W] per frame 1..T-1, and
    per such frame the decoder gates' ``probabilities`` and ``decisions`` (empty tuples where
    the decoder ran dense)."""

    logits: list[torch.Tensor]
    probabilities: list[tuple[torch.Tensor, ...]]
    decisions: list[tuple[torch.Tensor, ...]]


def rollout_sparse_clip(model: SpVOS, frames: torch.Tensor, masks: torch.Tensor, object_valid: torch.Tensor,
                        features: list[KeyFeatures], budget: float, tau: float = 1.0,
                        generator: torch.Generator | None = None) -> SparseRollout:
    """:func:`vseg.train.losses.rollout_clip`'s memory schedule (frame 0 writes its ground
    truth, frame t >= 1 reads every earlier frame and, unless last, writes its detached
    prediction) with the decoder gated at ``budget`` and its state carried frame to frame.

    frames [B, T, 3, H, W]; masks [B, T, K, H, W]; object_valid [B, K]; features per frame.
    """
    b, t_len = frames.shape[:2]
    mem_keys = [features[0].key]
    mem_values = [model.encode_value(frames[:, 0], masks[:, 0], features[0].feat16)]
    logits, probabilities, decisions, state = [], [], [], None
    for t in range(1, t_len):
        f = features[t]
        valid = torch.ones(b, len(mem_keys), dtype=torch.bool, device=frames.device)
        readout = model.read_memory(f.key, torch.stack(mem_keys, 2), torch.stack(mem_values, 3), valid)
        out, p = model.decode_with_gates(readout, f.feat16, f.skip8, f.skip4, object_valid, state, budget,
                                         tau=tau, generator=generator)
        gated = state is not None
        logits.append(out.logits)
        probabilities.append(p)
        decisions.append(out.decisions if gated else ())
        state = out.state
        if t + 1 < t_len:
            probs = torch.softmax(out.logits.detach(), dim=1)[:, 1:]
            mem_keys.append(f.key)
            mem_values.append(model.encode_value(frames[:, t], probs, f.feat16))
    return SparseRollout(logits, probabilities, decisions)


def spvos_training_step(model: SpVOS, frames: torch.Tensor, masks: torch.Tensor, object_valid: torch.Tensor, *,
                        budget: float | None, tau: float = 1.0, generator: torch.Generator | None = None,
                        sparsity_weight: float = 1.0, top_fraction: float = 1.0, dice_weight: float = 0.0,
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one training batch (the caller runs backward and the optimizer).

    budget None: a dense batch (task loss only). Otherwise gated frames at ``budget``, loss =
    task + sparsity_weight * sparsity_loss(expected cost, budget), the expected cost being the
    mean over frames 1..T-1 of the FLOP-weighted expected fraction of the gated convs that ran
    gated on that frame. Task loss: :func:`vseg.train.losses.clip_task_loss`. Returns (loss,
    stats as floats: task, loss and, on sparse batches, budget, sparsity, expected_cost,
    realized_cost).
    """
    # imported here: the inference path must not pull in the training code
    from vseg.train.losses import clip_task_loss, rollout_clip

    keys = encode_clip_keys(model, frames, budget, tau, generator)
    if budget is None:
        logits = rollout_clip(model, frames, masks, object_valid, keys.features).logits
    else:
        roll = rollout_sparse_clip(model, frames, masks, object_valid, keys.features, budget, tau, generator)
        logits = roll.logits
    task = clip_task_loss(logits, masks, object_valid, top_fraction, dice_weight)
    stats = {"task": task.item()}
    loss = task
    if budget is not None:
        cost_model = cost_model_for(model, frames.shape[3], frames.shape[4], masks.shape[2])
        expected = torch.stack([cost_model.expected_cost(kp, dp)
                                for kp, dp in zip(keys.probabilities, roll.probabilities)]).mean(0)
        realized = [cost_model.realized_fraction(kd, dd) for kd, dd in zip(keys.decisions, roll.decisions)]
        sparsity = sparsity_loss(expected, budget)
        loss = task + sparsity_weight * sparsity
        stats.update(budget=float(budget), sparsity=sparsity.item(), expected_cost=expected.mean().item(),
                     realized_cost=sum(realized) / len(realized))
    stats["loss"] = loss.item()
    return loss, stats


__all__ = ["ClipKeys", "SparseRollout", "encode_clip_keys", "rollout_sparse_clip", "spvos_training_step"]
