"""Scheduler policies: per model family, what each frame runs and what state carries over.

The frame loop (:class:`~vseg.runtime.inference_core.InferenceCore`) is the same for every
model and backend; everything family-specific sits in ONE policy object, chosen by
:func:`make_policy` from the model name:

- :class:`MemoryPolicy` (stm, and lite without STFF): a memory write on the first frame,
  every ``mem_every`` frames and on every frame that comes with a mask (kind "mask"), and
  (``keep_previous``, the default) every other frame goes into the memory's temporary
  previous-frame slot, as STM does: one more ``encode_value`` per frame, and the newest
  appearance is always in memory; no other state.
- :class:`StffPolicy` (lite): the same plus STFF's previous frame, the raw stride-16 feature
  ``prev_feat16`` [1, C16, h, w] and the foreground probability ``prev_fg`` [1, 1, H, W].
- :class:`SparsePolicy` (spvos): the same memory writes; the key encoder runs all-dense on
  the first frame, on memory writes and once ``dense_every`` frames have passed since the last
  dense frame, gated at ``budget`` otherwise (a gated frame's key may go into the previous-
  frame slot: the next frame overwrites it, so it needs no dense key); the gated decoder
  likewise, and also on the first decoded frame (frame 0 is not decoded, so there is no previous decode to reuse); the gate
  state of both engines (``state_in.*``) carries over; the realized GFLOPs come from the
  engines' int32 ``decision.*`` outputs. After a "mask" frame the decoder runs all-dense
  once: its kept outputs for the objects that entered there are those of switched-off slots.

A policy holds options and cost tables, never per-video state: that lives in the double-
buffered :class:`~vseg.runtime.state.VideoState` the loop passes in, so one policy object can
serve any number of videos. Engine input/output names are those of :mod:`vseg.export.graphs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import torch

from vseg.errors import VsegError
from vseg.export.graphs import DECISION, STATE_IN, STATE_OUT
from vseg.models.cost import FrameCost, cost_model_for, summarise_frame_costs
from vseg.models.gates import check_budget
from vseg.runtime.backends import Geometry, TensorSpec
from vseg.runtime.state import VideoState

VOS_MODELS = ("stm", "lite", "spvos")
KEYFRAME_KINDS = ("first", "mask", "memory", "refresh")  # frames that write memory or run all-dense


@dataclass(frozen=True)
class FramePlan:
    """What one frame runs. kind: "first" (the mask frame), "mask" (a later frame with a mask
    for objects that enter there: decoded, then written to memory, pinned), "memory" (a memory
    write), "refresh" (spvos all-dense, no write), "sparse" (spvos gated), "plain" (key + decode)."""

    index: int
    kind: str
    writes_memory: bool
    dense: bool  # the key encoder computes every output (always, for the dense models)
    decode_dense: bool = True  # the decoder does (spvos: also on the first decoded frame)
    writes_previous: bool = False  # the frame goes into the memory's previous-frame slot

    @property
    def encodes_value(self) -> bool:
        return self.writes_memory or self.writes_previous

    @property
    def keyframe(self) -> bool:
        return self.kind in KEYFRAME_KINDS


@dataclass(frozen=True)
class FrameGflops:
    """GFLOPs of one frame: ``dense`` if every layer ran densely, ``realized`` for what ran
    (they differ only on spvos's gated frames); ``key``: spvos's detail for its gated engines
    (encode_key and, when the frame decoded, the decoder)."""

    dense: float
    realized: float
    key: FrameCost | None = None


class MemoryPolicy:
    """stm's schedule: memory writes every ``mem_every`` frames (see the module docstring)."""

    def __init__(self, model_name: str, config: dict, mem_every: int = 5, keep_previous: bool = True) -> None:
        if mem_every < 1:
            raise VsegError(f"mem_every must be >= 1, got {mem_every}")
        self.model_name, self.config, self.mem_every = model_name, dict(config), mem_every
        self.keep_previous = keep_previous
        self._gflops: dict[str, float] = {}

    def options(self) -> dict:
        return {"mem_every": self.mem_every, "keep_previous": self.keep_previous}

    def bind(self, geometry: Geometry, specs: dict[str, dict[str, TensorSpec]], device: torch.device) -> dict:
        """Count the engines' GFLOPs at ``geometry``; returns the initial state values (the
        engine inputs a first frame needs besides the frame loop's own, from ``specs``:
        {engine: {input name: spec}})."""
        self._gflops = _engine_gflops(self.model_name, json.dumps(self.config, sort_keys=True), geometry)
        return {}

    def _meta_model(self):
        return _meta_model(self.model_name, self.config)

    def plan(self, index: int, state: VideoState, given_mask: bool = False) -> FramePlan:
        """What frame ``index`` runs; given_mask: the frame comes with a mask (always a memory write)."""
        writes = index % self.mem_every == 0 or given_mask
        return FramePlan(index, _kind(index, given_mask, writes, "plain"), writes, dense=True,
                         writes_previous=self._writes_previous(writes))

    def _writes_previous(self, writes_memory: bool) -> bool:
        return self.keep_previous and not writes_memory

    def key_feeds(self, plan: FramePlan, state: VideoState) -> dict[str, torch.Tensor]:
        """encode_key inputs besides ``frame``."""
        return {}

    def decode_feeds(self, plan: FramePlan, state: VideoState) -> dict[str, torch.Tensor]:
        """decode inputs besides the features, the memory and ``object_valid``."""
        return {}

    def after_frame(self, plan: FramePlan, outputs: dict[str, torch.Tensor], probs: torch.Tensor,
                    state: VideoState) -> None:
        """Write what the next frame needs into the state's back buffer. outputs: the frame's
        encode_key and (unless it is the first frame) decode outputs by name; probs [1, K+1, H, W]."""

    def frame_gflops(self, plan: FramePlan, outputs: dict[str, torch.Tensor]) -> FrameGflops:
        """GFLOPs of the frame; outputs as in :meth:`after_frame`."""
        dense = self._gflops["encode_key"] + (self._gflops["segment"] if plan.kind != "first" else 0.0)
        dense += self._gflops["encode_value"] if plan.encodes_value else 0.0
        return FrameGflops(dense, dense)

    def summary(self, costs: list[FrameGflops]) -> dict:
        """Policy-specific part of a video's summary (spvos: its sparse-cost figures)."""
        return {}


class StffPolicy(MemoryPolicy):
    """lite with STFF: memory writes plus the previous frame's feature and foreground."""

    def bind(self, geometry: Geometry, specs: dict[str, dict[str, TensorSpec]], device: torch.device) -> dict:
        super().bind(geometry, specs, device)
        key_specs = specs["encode_key"]
        return {name: torch.zeros(key_specs[name].shape, dtype=key_specs[name].dtype, device=device)
                for name in ("prev_feat16", "prev_fg")}

    def key_feeds(self, plan: FramePlan, state: VideoState) -> dict[str, torch.Tensor]:
        return {"prev_feat16": state["prev_feat16"], "prev_fg": state["prev_fg"]}

    def after_frame(self, plan, outputs, probs, state) -> None:
        state.set("prev_feat16", outputs["next_feat16"])
        state.set("prev_fg", 1 - probs[:, :1])


class SparsePolicy(MemoryPolicy):
    """spvos: memory writes, dense refreshes, gate state and budget (see the module docstring)."""

    def __init__(self, model_name: str, config: dict, mem_every: int = 5, budget: float | None = None,
                 dense_every: int | None = None, keep_previous: bool = True) -> None:
        super().__init__(model_name, config, mem_every, keep_previous)
        low, high = config["budget_low"], config["budget_high"]
        self.budget = check_budget(config["budget"] if budget is None else budget, low, high)
        self.dense_every = config["dense_every"] if dense_every is None else dense_every
        if self.dense_every < 1:
            raise VsegError(f"dense_every must be >= 1, got {self.dense_every}")
        self._cost_model = None
        self._key_state: list[str] = []  # gate-state names of encode_key (without the state_in. prefix)
        self._decoder_state: list[str] = []  # and of decode

    def options(self) -> dict:
        return {**super().options(), "budget": self.budget, "dense_every": self.dense_every}

    def bind(self, geometry: Geometry, specs: dict[str, dict[str, TensorSpec]], device: torch.device) -> dict:
        super().bind(geometry, specs, device)
        self._cost_model = cost_model_for(self._meta_model(), geometry.height, geometry.width, geometry.objects)
        initial = {}
        for engine, names in (("encode_key", self._key_state), ("decode", self._decoder_state)):
            names[:] = [n[len(STATE_IN):] for n in specs[engine] if n.startswith(STATE_IN)]
            initial.update({STATE_IN + n: torch.zeros(specs[engine][STATE_IN + n].shape,
                                                      dtype=specs[engine][STATE_IN + n].dtype, device=device)
                            for n in names})
        return {**initial, "last_dense": -1, "decoder_ready": False}

    def plan(self, index: int, state: VideoState, given_mask: bool = False) -> FramePlan:
        writes = index % self.mem_every == 0 or given_mask
        refresh = index - state["last_dense"] >= self.dense_every
        kind = _kind(index, given_mask, writes, "refresh" if refresh else "sparse")
        dense = writes or refresh
        return FramePlan(index, kind, writes, dense=dense, decode_dense=dense or not state["decoder_ready"],
                         writes_previous=self._writes_previous(writes))

    def key_feeds(self, plan: FramePlan, state: VideoState) -> dict[str, torch.Tensor]:
        feeds = {"dense": torch.tensor([plan.dense]), "budget": torch.tensor([self.budget], dtype=torch.float32)}
        feeds.update({STATE_IN + n: state[STATE_IN + n] for n in self._key_state})
        return feeds

    def decode_feeds(self, plan: FramePlan, state: VideoState) -> dict[str, torch.Tensor]:
        if not self._decoder_state:  # a key-encoder-only spvos
            return {}
        feeds = {"dense": torch.tensor([plan.decode_dense]),
                 "budget": torch.tensor([self.budget], dtype=torch.float32)}
        feeds.update({STATE_IN + n: state[STATE_IN + n] for n in self._decoder_state})
        return feeds

    def after_frame(self, plan, outputs, probs, state) -> None:
        decoded = "logits" in outputs
        for name in self._key_state + (self._decoder_state if decoded else []):
            state.set(STATE_IN + name, outputs[STATE_OUT + name])
        if decoded:
            # Objects entering with a given mask were switched off in this decode: the next
            # decode must compute their outputs instead of reusing these.
            state.set("decoder_ready", plan.kind != "mask")
        if plan.dense:
            state.set("last_dense", plan.index)

    def frame_gflops(self, plan: FramePlan, outputs: dict[str, torch.Tensor]) -> FrameGflops:
        model = self._cost_model
        key_decisions = [outputs[DECISION + n] for n in model.key.names]
        decoded = "logits" in outputs
        decoder_decisions = [outputs[DECISION + n] for n in model.decoder.names] if decoded else None
        cost = model.frame_cost(key_decisions, plan.dense, decoder_decisions, plan.decode_dense)
        # what the cost model leaves out: the memory read and the memory write
        rest = self._gflops["segment"] - model.decode_dense_flops / 1e9 if decoded else 0.0
        rest += self._gflops["encode_value"] if plan.encodes_value else 0.0
        return FrameGflops(cost.dense_gflops + rest, cost.realized_gflops + rest, cost)

    def summary(self, costs: list[FrameGflops]) -> dict:
        return {"sparse": {"budget": self.budget, "dense_every": self.dense_every,
                           "gated_share_of_dense": round(self._cost_model.gated_share(), 4),
                           **summarise_frame_costs([c.key for c in costs])}}


def _kind(index: int, given_mask: bool, writes: bool, otherwise: str) -> str:
    """A frame's kind: the first, one with a given mask, a memory write, or ``otherwise``."""
    if index == 0:
        return "first"
    if given_mask:
        return "mask"
    return "memory" if writes else otherwise


def _meta_model(model_name: str, config: dict):
    from vseg.models.registry import build_model

    with torch.device("meta"):  # architecture only: counting needs no weights
        return build_model(model_name, **config)


@lru_cache(maxsize=16)
def _engine_gflops(model_name: str, config_json: str, geometry: Geometry) -> dict[str, float]:
    """step_gflops of the engines at ``geometry``, counted once per (model, config, geometry)."""
    from vseg.models.registry import step_gflops

    model = _meta_model(model_name, json.loads(config_json))
    return step_gflops(model, geometry.height, geometry.width, geometry.objects, geometry.capacity)


def value_encode_share(mem_every: int, keep_previous: bool) -> float:
    """Share of a long clip's frames that run ``encode_value`` under :class:`MemoryPolicy`'s
    schedule: the memory writes, and with ``keep_previous`` every other frame as well."""
    return 1.0 if keep_previous else 1.0 / mem_every


def make_policy(model_name: str, config: dict, mem_every: int = 5, budget: float | None = None,
                dense_every: int | None = None, keep_previous: bool = True) -> MemoryPolicy:
    """The scheduler policy of a model family; ``budget``/``dense_every`` only for spvos."""
    if model_name not in VOS_MODELS:
        raise VsegError(f"{model_name} is not a VOS model; this runtime runs {', '.join(VOS_MODELS)}")
    if model_name == "spvos":
        return SparsePolicy(model_name, config, mem_every, budget, dense_every, keep_previous)
    if budget is not None or dense_every is not None:
        raise VsegError(f"--budget and --dense-every apply to spvos, not {model_name}")
    if model_name == "lite" and config.get("use_stff", False):
        return StffPolicy(model_name, config, mem_every, keep_previous)
    return MemoryPolicy(model_name, config, mem_every, keep_previous)
