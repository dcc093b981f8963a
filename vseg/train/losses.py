"""Task losses and the training-time clip rollout shared by `stm` and `lite` training.

Shapes: B clips, T frames, K objects (padded to a fixed K with ``object_valid``), H x W pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from vseg.models.stm import KeyFeatures, MemoryNetwork


def masks_to_ids(masks: torch.Tensor) -> torch.Tensor:
    """Exclusive object masks [B, K, H, W] (0/1) -> class map [B, H, W] int64, 0 = background."""
    k = masks.shape[1]
    weights = torch.arange(1, k + 1, device=masks.device, dtype=masks.dtype).view(1, k, 1, 1)
    return (masks * weights).sum(1).round().long()


def bootstrapped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, top_fraction: float = 1.0) -> torch.Tensor:
    """Cross-entropy averaged over the hardest ``top_fraction`` of each clip's pixels.

    logits [B, C, H, W], target [B, H, W] int64. With top_fraction 1 this is plain CE; below 1 the
    easy pixels (most of the background) stop diluting the loss, as in STCN's training.
    """
    per_pixel = F.cross_entropy(logits, target, reduction="none").flatten(1)  # [B, H*W]
    if top_fraction >= 1.0:
        return per_pixel.mean()
    k = max(1, int(per_pixel.shape[1] * top_fraction))
    return per_pixel.topk(k, dim=1, sorted=False).values.mean()


def dice_loss(logits: torch.Tensor, masks: torch.Tensor, object_valid: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per real object, averaged. logits [B, K+1, H, W] (background first),
    masks [B, K, H, W] 0/1, object_valid [B, K] bool."""
    probs = torch.softmax(logits, dim=1)[:, 1:].flatten(2)
    target = masks.flatten(2)
    dice = (2 * (probs * target).sum(-1) + eps) / (probs.sum(-1) + target.sum(-1) + eps)  # [B, K]
    valid = object_valid.to(dice.dtype)
    return ((1 - dice) * valid).sum() / valid.sum().clamp(min=1)


def clip_task_loss(frame_logits: list[torch.Tensor], masks: torch.Tensor, object_valid: torch.Tensor,
                   top_fraction: float = 1.0, dice_weight: float = 0.0) -> torch.Tensor:
    """Mean over the predicted frames 1..T-1 of bootstrapped CE (+ dice_weight * dice).

    frame_logits: T-1 tensors [B, K+1, H, W]; masks [B, T, K, H, W]; object_valid [B, K].
    """
    losses = []
    for t, logits in enumerate(frame_logits, start=1):
        loss = bootstrapped_cross_entropy(logits, masks_to_ids(masks[:, t]), top_fraction)
        if dice_weight > 0:
            loss = loss + dice_weight * dice_loss(logits, masks[:, t], object_valid)
        losses.append(loss)
    return torch.stack(losses).mean()


class ClipRollout(NamedTuple):
    """What one pass over a training clip produced: logits [B, K+1, H, W] for frames 1..T-1 and
    the KeyFeatures of every frame 0..T-1 (for feature distillation)."""

    logits: list[torch.Tensor]
    feats: list[KeyFeatures]


def rollout_clip(model: MemoryNetwork, frames: torch.Tensor, masks: torch.Tensor,
                 object_valid: torch.Tensor, features: list[KeyFeatures] | None = None) -> ClipRollout:
    """Run a memory network over a clip the way it runs at inference, with gradients.

    frames [B, T, 3, H, W] in [0, 1]; masks [B, T, K, H, W]; object_valid [B, K] bool. Frame 0
    writes its ground-truth masks to memory; frame t >= 1 is segmented from all earlier memory
    frames (top-k read) and, unless it is the last, written to memory with its PREDICTED
    probabilities, so the model learns to read memory holding its own (imperfect) masks.

    The predicted probabilities are detached before the write: they are an input of the value
    encoder as at inference, and a gradient through them would ask frame t's decoder to make
    masks that are convenient memory rather than accurate masks. Keys and values keep their
    gradients (the encoders learn from every later read).

    features: every frame's KeyFeatures computed by the caller (spvos's gated key encoder runs
    frame by frame with its state); None: encoded here.
    """
    b, t_len = frames.shape[:2]
    feats = list(features) if features is not None else _encode_keys(model, frames, masks)
    mem_keys = [feats[0].key]
    mem_values = [model.encode_value(frames[:, 0], masks[:, 0], feats[0].feat16)]
    frame_logits = []
    for t in range(1, t_len):
        valid = torch.ones(b, len(mem_keys), dtype=torch.bool, device=frames.device)
        logits = model.segment(feats[t].key, feats[t].feat16, feats[t].skip8, feats[t].skip4,
                               torch.stack(mem_keys, 2), torch.stack(mem_values, 3), valid, object_valid)
        frame_logits.append(logits)
        if model.uses_prev_frame and t + 1 < t_len:  # STFF of frame t+1 needs this frame's result
            fg = 1 - torch.softmax(logits.detach(), 1)[:, :1]
            feats.append(model.encode_key(frames[:, t + 1], feats[t].next_feat16, fg))
        if t + 1 < t_len:
            probs = torch.softmax(logits.detach(), dim=1)[:, 1:]
            mem_keys.append(feats[t].key)
            mem_values.append(model.encode_value(frames[:, t], probs, feats[t].feat16))
    return ClipRollout(frame_logits, feats)


def encode_clip_keys(model: MemoryNetwork, frames: torch.Tensor) -> list[KeyFeatures]:
    """Every frame's KeyFeatures in one batched call, for a model without a previous-frame input.

    frames [B, T, 3, H, W] -> T KeyFeatures of batch B (what :func:`rollout_clip` returns as
    ``feats``, without running the memory reads and the decoder).
    """
    if model.uses_prev_frame:
        raise ValueError("encode_clip_keys: this model's key encoder reads the previous frame's result")
    b, t_len = frames.shape[:2]
    f = model.encode_key(frames.flatten(0, 1))
    split = [x.view(b, t_len, *x.shape[1:]).unbind(1) for x in (f.key, f.feat16, f.skip8, f.skip4)]
    return [KeyFeatures(*parts) for parts in zip(*split)]


def _encode_keys(model: MemoryNetwork, frames: torch.Tensor, masks: torch.Tensor) -> list[KeyFeatures]:
    """KeyFeatures of all frames at once (one batched call) for models without a previous-frame
    input; for STFF models only frames 0 and 1 here (later frames need the previous prediction,
    see :func:`rollout_clip`). Frame 1's foreground prior is frame 0's ground truth, as at
    inference."""
    if not model.uses_prev_frame:
        return encode_clip_keys(model, frames)
    first = model.encode_key(frames[:, 0])
    fg0 = masks[:, 0].sum(1, keepdim=True).clamp(max=1)
    return [first, model.encode_key(frames[:, 1], first.next_feat16, fg0)]
