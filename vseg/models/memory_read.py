"""Space-time memory read: L2 affinity, top-k softmax and per-object readout.

Shapes: B frames in the batch, Ck key channels, T memory frames (the fixed capacity), h x w the
stride-16 grid, N = T*h*w memory pixels, Q = h*w query pixels, K objects, Cv value channels.

Everything here is traceable with static shapes: the memory always has T slots and a validity
mask ``mem_valid`` ([B, T], or [B, K, T] per object) says which hold a frame; ``k`` is a Python
int fixed by the shapes.

Affinity (STCN): the negative squared L2 distance -||q - m||^2 = 2 q.m - ||m||^2 - ||q||^2; the
last term is the same for every memory pixel of a query, so softmax over memory ignores it and
we drop it. Scaled by 1/sqrt(Ck). Top-k keeps the k largest affinities per query pixel; the
readout gathers only those k memory values instead of multiplying by a mostly-zero [N, Q] matrix.
"""

from __future__ import annotations

import math

import torch


def l2_affinity(query_key: torch.Tensor, mem_key: torch.Tensor, mem_valid: torch.Tensor) -> torch.Tensor:
    """Affinity of every query pixel to every memory pixel.

    query_key [B, Ck, Q], mem_key [B, Ck, N] float; mem_valid [B, N] bool (pixel-level).
    Returns [B, Q, N] float: (2 q.m - ||m||^2) / sqrt(Ck), and -inf where the memory pixel is
    invalid (whatever garbage, even NaN, the invalid slot holds).
    """
    scale = 1.0 / math.sqrt(query_key.shape[1])
    valid = mem_valid.unsqueeze(1)  # [B, 1, N]
    # Zero the invalid keys so the product stays finite whatever they held; the -inf bias then
    # masks them. Everything per memory pixel goes into a [B, 1, N] bias added by the GEMM, so
    # no extra elementwise pass runs over the [B, Q, N] result.
    mem_key = torch.where(valid, mem_key, torch.zeros_like(mem_key))
    bias = (mem_key.pow(2).sum(1, keepdim=True) * -scale).masked_fill(~valid, float("-inf"))
    return torch.baddbmm(bias, query_key.transpose(1, 2), mem_key, alpha=2.0 * scale)


def topk_softmax(affinity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the k largest affinities of each query pixel.

    affinity [B, Q, N] -> (weights [B, Q, k] float summing to 1 over k, indices [B, Q, k] int64
    into N). ``k`` is clamped to N. Requires at least one finite affinity per query (the pinned
    first memory frame guarantees it); -inf entries that make it into the top k get weight 0.
    """
    k = min(k, affinity.shape[-1])
    top_values, top_indices = torch.topk(affinity, k, dim=-1, sorted=False)
    return torch.softmax(top_values, dim=-1), top_indices


def gather_readout(mem_values: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the selected memory values.

    mem_values [B, C, N], weights / indices [B, Q, k] -> readout [B, C, Q]. One row gather
    (ONNX Gather on a [B*N, C] table) rather than an expanded [B, C, Q*k] index, so the
    exported graph does not materialise C copies of the indices.
    """
    b, c, n = mem_values.shape
    q, k = indices.shape[1], indices.shape[2]
    table = mem_values.transpose(1, 2).reshape(b * n, c)  # [B*N, C]
    offsets = (torch.arange(b, device=indices.device) * n).view(b, 1, 1)
    picked = table.index_select(0, (indices + offsets).reshape(-1)).view(b, q, k, c)
    readout = (weights.unsqueeze(-1) * picked).sum(2)  # [B, Q, C]
    return readout.transpose(1, 2)


def read_memory(query_key: torch.Tensor, mem_keys: torch.Tensor, mem_values: torch.Tensor,
                mem_valid: torch.Tensor, top_k: int) -> torch.Tensor:
    """Read per-object values from a fixed-capacity memory.

    query_key [B, Ck, h, w]; mem_keys [B, Ck, T, h', w']; mem_values [B, K, Cv, T, h', w'];
    mem_valid bool, [B, T] (which slots hold a frame, the same for every object) or [B, K, T]
    (per object: the runtime leaves out the frames where an object was not visible). Returns
    readout [B, K, Cv, h, w]. The affinity depends on keys only, so it is computed once; a
    shared mask also shares one top-k and one gather; a per-object mask takes one top-k per
    slot, then a small top-k and a gather per object (K is static, so the loop unrolls in an
    exported graph).
    """
    b, ck, h, w = query_key.shape
    _, num_objects, cv, t, hm, wm = mem_values.shape
    n = t * hm * wm
    mem_valid = mem_valid.to(torch.bool)
    per_object = mem_valid.dim() == 3
    slot_valid = mem_valid.any(1) if per_object else mem_valid  # [B, T]
    valid = slot_valid.view(b, t, 1).expand(b, t, hm * wm).reshape(b, n)
    affinity = l2_affinity(query_key.reshape(b, ck, h * w), mem_keys.reshape(b, ck, n), valid)
    # Zero invalid slots so that 0-weight picks of uninitialised (even NaN) memory add nothing.
    values = torch.where(valid.view(b, 1, 1, n), mem_values.reshape(b, num_objects, cv, n),
                         torch.zeros((), dtype=mem_values.dtype, device=mem_values.device))
    if not per_object:
        weights, indices = topk_softmax(affinity, top_k)
        readout = gather_readout(values.reshape(b, num_objects * cv, n), weights, indices)
        return readout.view(b, num_objects, cv, h, w)
    # Per object, without a top-k over all N memory pixels each: the k best of any set of slots
    # are among the k best of each of those slots, so one top-k per slot (over h'*w' pixels,
    # together as cheap as the shared one) leaves T*k candidates, and each object's exact top-k
    # is a small top-k over the candidates of its own slots.
    hw = hm * wm
    per_slot = min(top_k, hw)
    slot_values, slot_indices = torch.topk(affinity.view(b, h * w, t, hw), per_slot, dim=-1, sorted=False)
    slot_indices = slot_indices + (torch.arange(t, device=slot_indices.device) * hw).view(1, 1, t, 1)
    candidates = slot_values.reshape(b, h * w, t * per_slot)
    candidate_indices = slot_indices.reshape(b, h * w, t * per_slot)
    reads = []
    for k in range(num_objects):
        # An object with no slot of its own (never the runtime's case: the pinned first frame
        # counts for all) falls back to the shared mask rather than to a softmax over nothing.
        own = mem_valid[:, k] | ~mem_valid[:, k].any(1, keepdim=True)  # [B, T]
        hidden = ~own.view(b, 1, t, 1).expand(b, 1, t, per_slot).reshape(b, 1, t * per_slot)
        weights, picked = topk_softmax(candidates.masked_fill(hidden, float("-inf")), top_k)
        reads.append(gather_readout(values[:, k], weights, candidate_indices.gather(-1, picked)))
    return torch.stack(reads, 1).view(b, num_objects, cv, h, w)
