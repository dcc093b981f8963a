"""Per-video VOS inference: one :meth:`InferenceCore.step` per frame, driven by engines.

Each frame runs the engines of :mod:`vseg.export.graphs` through a backend
(:mod:`vseg.runtime.backends`): ``encode_key``, then ``decode`` against the memory (not on
the first frame, whose mask is given), then ``encode_value`` when the frame writes memory or
goes into the memory's previous-frame slot (by default, every other frame). The
model family's scheduler policy (:mod:`vseg.runtime.policies`) decides what each frame runs
and which extra inputs and state the key encoder has; the loop itself has no model- or
backend-specific branch. Each memory frame records which objects its mask shows, and an
object reads only those frames (and the pinned first one; ``skip_absent=False`` reads all): a
target that has left the picture is looked for where it was seen. Per-video state is
double-buffered (:mod:`vseg.runtime.state`): a frame that fails half way leaves the state of
the last finished frame.

The first frame comes with the user's id mask; ids can be any of 1..255 (e.g. 3 and 7) and
the core maps the model's object index (0..K-1) back to them. Objects that enter later (as in
YouTube-VOS, whose masks come on each object's first frame) are announced on the first frame
(``later_ids``: their object slots are reserved, switched off) and start on the frame whose
mask shows them; a later mask sets the objects it shows to its pixels, the others keep the
prediction elsewhere, and the frame is a pinned memory write (:mod:`vseg.runtime.memory`).
Frames are padded to a multiple of 16 and the outputs cropped back; frames smaller than the
model config's ``min_side`` run scaled up (:mod:`vseg.runtime.framing`). Engines with a fixed
number of object slots get the unused ones switched off by ``object_valid``.

A step is three calls, :meth:`~InferenceCore.begin_step` (encode and decode),
:meth:`~InferenceCore.finish_step` (memory write and output, from the frame's probabilities or
ones given) and :meth:`~InferenceCore.commit_step`, so that an ensemble can write several cores'
averaged answer to each of their memories (:mod:`vseg.runtime.mirrored`, ``vseg run --flip``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vseg.errors import InputError
from vseg.export.graphs import ENGINES
from vseg.runtime.backends import Backend, Geometry, TorchBackend
from vseg.runtime.framing import Framing
from vseg.runtime.given_masks import GivenMask, merge_given
from vseg.runtime.memory import MemoryStore
from vseg.runtime.policies import KEYFRAME_KINDS, FrameGflops, MemoryPolicy, make_policy
from vseg.runtime.state import VideoState


@dataclass
class StepResult:
    """One frame's output.

    probabilities [K+1, H, W] float32 (background first, then objects in ``object_ids``
    order); ids [H, W] uint8 numpy array of the user's object ids (0 = background); kind: the
    policy's frame kind (first, memory, refresh, sparse, plain); gflops: dense and realized
    GFLOPs of the frame; seconds: wall time of the step.
    """

    frame_index: int
    probabilities: torch.Tensor
    ids: np.ndarray
    object_ids: tuple[int, ...]
    memory_written: bool
    kind: str
    gflops: FrameGflops
    seconds: float

    @property
    def key_cost(self):
        """spvos: the :class:`~vseg.models.cost.FrameCost` of its gated engines (None otherwise)."""
        return self.gflops.key


@dataclass
class PendingStep:
    """A frame between :meth:`InferenceCore.begin_step` and its commit: what the memory write
    needs. probs [1, K+1, Hp, Wp]: the frame's probabilities (padded, at the working size)."""

    index: int
    image: torch.Tensor
    plan: object
    key_out: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    probs: torch.Tensor
    given: GivenMask | None
    first_output: tuple[torch.Tensor, np.ndarray] | None
    start: float
    gflops: FrameGflops | None = None


def gflops_summary(costs: list[FrameGflops]) -> dict:
    """A video's GFLOPs, dense and realized: in total, per frame on average, and frame by frame."""
    n = len(costs)
    dense, realized = sum(c.dense for c in costs), sum(c.realized for c in costs)
    return {"dense_total": round(dense, 4), "realized_total": round(realized, 4),
            "dense_per_frame": round(dense / n, 4) if n else None,
            "realized_per_frame": round(realized / n, 4) if n else None,
            "per_frame": [[round(c.dense, 4), round(c.realized, 4)] for c in costs]}


class InferenceCore:
    """Runs one video through a backend's engines, frame by frame (see the module docstring).

    engine: a :class:`Backend` (activated here if it is not), or a model, which is run by a
    :class:`TorchBackend` on its device. capacity: memory slots (an engine folder's own count
    wins). mem_every / budget / dense_every / keep_previous: the scheduler policy's options
    (budget and dense_every for spvos only), or pass a ready ``policy``. skip_absent: each
    object reads only the memory frames whose mask shows it, and the first (needs a decode
    engine with a per-object ``mem_valid`` [1, K, T]; an older engine folder reads them all).
    min_side: the working size's shorter side (:mod:`vseg.runtime.framing`); None takes the model
    config's, 0 runs every frame at its own size.
    """

    def __init__(self, engine, mem_every: int = 5, capacity: int = 8, budget: float | None = None,
                 dense_every: int | None = None, policy: MemoryPolicy | None = None,
                 keep_previous: bool = True, skip_absent: bool = True, min_side: int | None = None) -> None:
        self.backend: Backend = engine if isinstance(engine, Backend) else TorchBackend(engine)
        self.backend.activate()
        self.policy = policy or make_policy(self.backend.model_name, self.backend.model_config, mem_every,
                                            budget, dense_every, keep_previous)
        self.capacity = capacity
        self.skip_absent = skip_absent
        self.min_side = int(self.backend.model_config.get("min_side", 0)) if min_side is None else int(min_side)
        if self.min_side < 0:
            raise InputError(f"min_side must be 0 or more (0: frames run at their own size), got {self.min_side}")
        self._per_object_valid = True  # the decode engine takes mem_valid [1, K, T] (set on bind)
        self.object_ids: tuple[int, ...] = ()
        self.geometry: Geometry | None = None
        self.state: VideoState | None = None
        self.costs: list[FrameGflops] = []
        self.kinds: list[str] = []
        self.framing: Framing | None = None  # the video's size, working size and padding
        self._id_lookup: torch.Tensor | None = None  # model index + 1 -> user id, [K+1] uint8
        self._object_valid: torch.Tensor | None = None  # [1, K] bool

    @property
    def frame_index(self) -> int:
        """Index of the next frame (frames finished so far)."""
        return 0 if self.state is None else self.state["frame_index"]

    @property
    def memory(self) -> MemoryStore:
        """The memory as the last finished frame left it."""
        if self.state is None:
            raise RuntimeError("no frame has run yet")
        return self.state.memory.front

    def step(self, frame: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor | None = None,
             object_ids: list[int] | tuple[int, ...] | None = None, mask_name: str = "mask",
             later_ids: list[int] | tuple[int, ...] = ()) -> StepResult:
        """Segment one frame.

        frame: uint8 RGB, [H, W, 3] or [3, H, W] (numpy or torch). mask: [H, W] integer ids,
        0 = background; required on the first frame, where object_ids picks which ids to track
        (default: all ids in the mask, ascending) and later_ids announces the ids whose first
        mask comes on a later frame. On a later frame a mask is optional: it may show tracked
        and announced ids (module docstring). mask_name names the mask in error messages
        (e.g. its path). Output object order: object_ids, then later_ids ascending.
        """
        pending = self.begin_step(frame, mask, object_ids, mask_name, later_ids)
        try:
            result = self.finish_step(pending)
        except BaseException:
            self.abort_step(pending)
            raise
        self.commit_step(pending)
        return result

    # -- a step in three parts, for ensembles that combine several cores' probabilities ----------

    def begin_step(self, frame: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor | None = None,
                   object_ids: list[int] | tuple[int, ...] | None = None, mask_name: str = "mask",
                   later_ids: list[int] | tuple[int, ...] = ()) -> PendingStep:
        """The first part of :meth:`step` (same arguments): encode and decode the frame, write
        nothing. The state stays open until :meth:`commit_step` or :meth:`abort_step`."""
        start = time.perf_counter()
        index = self.frame_index
        if index == 0 and mask is None:
            raise ValueError("the first frame needs a mask")
        if index > 0 and later_ids:  # (object_ids, like it, is read on the first frame only)
            raise ValueError("later_ids are only taken on the first frame")
        image = self._prepare_frame(frame, index)
        first_probs, first_output = self._start_video(mask, object_ids, later_ids, mask_name) if index == 0 \
            else (None, None)
        given = self._given_mask(mask, mask_name) if index > 0 and mask is not None else None
        state = self.state
        state.begin()
        try:
            plan = self.policy.plan(index, state, given_mask=given is not None)
            key_out = self.backend.infer("encode_key", {"frame": image, **self.policy.key_feeds(plan, state)})
            outputs = key_out if first_probs is not None else {**key_out, **self._decode(key_out, plan, state)}
            probs = first_probs if first_probs is not None else torch.softmax(outputs["logits"].float(), dim=1)
            if given is not None:
                probs = merge_given(probs, given.work, given.shown)
        except BaseException:
            state.discard()
            raise
        return PendingStep(index, image, plan, key_out, outputs, probs, given, first_output, start)

    def finish_step(self, pending: PendingStep, probs: torch.Tensor | None = None) -> StepResult:
        """The second part: the memory write and the policy's state from ``probs`` [1, K+1, Hp, Wp]
        (default: the frame's own, ``pending.probs``; frame 0 always keeps its given mask), and
        the frame's output. Then :meth:`commit_step`, or :meth:`abort_step` if anything failed."""
        index, image, plan, given = pending.index, pending.image, pending.plan, pending.given
        if probs is None or pending.first_output is not None:
            probs = pending.probs
        elif probs.shape != pending.probs.shape:
            raise ValueError(f"probabilities must be {tuple(pending.probs.shape)}, got {tuple(probs.shape)}")
        state = self.state
        if plan.encodes_value:
            values = self.backend.infer("encode_value", {"frame": image, "masks": probs[:, 1:],
                                                         "feat16": pending.key_out["feat16"]})["values"]
            state.memory.write(pending.key_out["key"], values, frame_index=index, previous=not plan.writes_memory,
                               present=self._present(probs) if self.skip_absent else None,
                               pin=given is not None, introduces=given.new if given is not None else None)
        self.policy.after_frame(plan, pending.outputs, probs, state)
        state.set("frame_index", index + 1)
        pending.gflops = self.policy.frame_gflops(plan, pending.outputs)
        probabilities, ids = self._crop(probs, given) if pending.first_output is None else pending.first_output
        return StepResult(index, probabilities, ids, self.object_ids, plan.writes_memory, plan.kind, pending.gflops,
                          time.perf_counter() - pending.start)

    def commit_step(self, pending: PendingStep) -> None:
        """The frame is finished: its state becomes the one the next frame reads."""
        self.state.commit()
        if pending.given is not None:  # the entering objects are decoded from the next frame on
            self._object_valid = self._object_valid | pending.given.new
        self.costs.append(pending.gflops)
        self.kinds.append(pending.plan.kind)

    def abort_step(self, pending: PendingStep) -> None:
        """Drop the frame: the state stays that of the last finished frame."""
        self.state.discard()

    def content(self, probs: torch.Tensor) -> torch.Tensor:
        """Padded working-size [..., Hp, Wp] -> the view of the frame's own pixels [..., h, w]
        (the working size without the padding)."""
        return self.framing.content(probs)

    # -- input -------------------------------------------------------------------------------

    def _prepare_frame(self, frame: np.ndarray | torch.Tensor, index: int) -> torch.Tensor:
        """uint8 [H, W, 3] / [3, H, W] -> padded float [1, 3, Hp, Wp] in [0, 1] on the backend's device."""
        x = frame if isinstance(frame, torch.Tensor) else torch.as_tensor(np.asarray(frame))
        if x.dtype != torch.uint8 or x.dim() != 3 or 3 not in (x.shape[0], x.shape[-1]):
            raise ValueError(f"a frame must be uint8 [H, W, 3] or [3, H, W], got {x.dtype} {tuple(x.shape)}")
        if x.shape[-1] == 3:  # channels last, as decoders give frames
            x = x.permute(2, 0, 1)
        h, w = int(x.shape[1]), int(x.shape[2])
        if index == 0:
            self.framing = Framing.of(h, w, self.min_side)
        elif (h, w) != self.framing.size:
            raise InputError(f"frame {index} is {h}x{w} but the video started at {self.framing.size_text}")
        return self.framing.frame_in(x.to(self.backend.device, torch.float32).unsqueeze(0) / 255.0)

    def _read_ids(self, mask, mask_name: str) -> torch.Tensor:
        """A user's id mask -> [H, W] integer tensor, checked against the video's size."""
        ids = (mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask)))
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InputError(f"{mask_name}: a mask must hold integer object ids, got {ids.dtype}")
        if ids.dim() != 2 or (ids.shape[0], ids.shape[1]) != self.framing.size:
            raise InputError(f"{mask_name}: mask is {'x'.join(map(str, ids.shape))} but the video frames are "
                             f"{self.framing.size_text}")
        return ids

    def _object_masks(self, ids: torch.Tensor, shown: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [H, W] -> masks [1, S, H, W] (float 0/1, at the video's size) of the ``shown`` ids
        in their object slots (S: the engines' slots; zeros elsewhere), and the same padded at
        the working size [1, S, Hp, Wp]."""
        device = self.backend.device
        ids = ids.to(device)
        objects = torch.zeros(1, self.geometry.objects, *self.framing.size, device=device)
        for k, v in enumerate(self.object_ids):
            if v in shown:
                objects[0, k] = (ids == v).float()
        return objects, self.framing.masks_in(objects)

    def _start_video(self, mask, object_ids, later_ids, mask_name: str) -> tuple[torch.Tensor, tuple[torch.Tensor, np.ndarray]]:
        """First frame: read the mask, bind the engines' shapes, start the state. Returns the
        mask as probabilities [1, K+1, Hp, Wp] over the engines' K object slots (padded, at the
        working size), and frame 0's output (probabilities [K+1, H, W] of the tracked objects,
        user ids) at the video's size."""
        ids = self._read_ids(mask, mask_name)
        present = [int(v) for v in torch.unique(ids).tolist() if v != 0]
        chosen = present if object_ids is None else [int(v) for v in object_ids]
        missing = [v for v in chosen if v not in present]
        if missing:
            raise InputError(f"{mask_name}: object id(s) {missing} not in the mask (it has {present})")
        if not chosen:
            raise InputError(f"{mask_name}: the mask has no objects (all background)")
        later = sorted({int(v) for v in later_ids})
        if set(later) & set(chosen):
            raise InputError(f"{mask_name}: object id(s) {sorted(set(later) & set(chosen))} are in the first "
                             f"mask already; only objects that enter later come with a later mask")
        if max(chosen + later) > 255 or min(chosen + later) < 1:
            raise InputError(f"{mask_name}: object ids must be 1..255, got {chosen + later}")
        try:
            self.geometry = self.backend.bind(Geometry(*self.framing.padded, len(chosen) + len(later), self.capacity))
        except InputError as e:
            if not self.framing.scaled:
                raise
            raise InputError(f"{e} (the {self.framing.size_text} frames run scaled up to the model's "
                             f"min_side {self.min_side}; --min-side 0 runs them at their own size)") from None
        device = self.backend.device
        specs = {e: self.backend.input_specs(e) for e in ENGINES}
        self._per_object_valid = len(specs["decode"]["mem_valid"].shape) == 3
        initial = self.policy.bind(self.geometry, specs, device)
        try:
            self.state = VideoState(self.geometry.capacity, self.policy.keep_previous, frame_index=0, **initial)
        except ValueError as e:  # a memory too small for the schedule
            hint = " or --no-keep-previous" if self.policy.keep_previous else ""
            raise InputError(f"{e}: use a larger capacity{hint}") from None
        self.costs, self.kinds = [], []
        self.object_ids = tuple(chosen + later)
        self._id_lookup = torch.tensor([0, *self.object_ids], dtype=torch.uint8)
        slots = self.geometry.objects  # the engines' object slots; the unused ones stay empty
        self._object_valid = (torch.arange(slots) < len(chosen)).unsqueeze(0).to(device)
        objects, work = self._object_masks(ids, chosen)
        # Frame 0's output is the given mask itself, not its round trip through the working size.
        given = objects[0, :len(self.object_ids)].cpu()
        given = torch.cat([1 - given.sum(0, keepdim=True), given])
        return torch.cat([1 - work.sum(1, keepdim=True), work], dim=1), \
            (given, self.ids_of(given))

    def _given_mask(self, mask, mask_name: str) -> GivenMask:
        """A later frame's mask -> its objects at both sizes and which slots it sets / starts."""
        ids = self._read_ids(mask, mask_name)
        shown = [int(v) for v in torch.unique(ids).tolist() if v != 0]
        if not shown:
            raise InputError(f"{mask_name}: the mask has no objects (all background)")
        unknown = [v for v in shown if v not in self.object_ids]
        if unknown:
            raise InputError(f"{mask_name}: object id(s) {unknown} were not announced on the first frame "
                             f"(tracking {list(self.object_ids)}); an object entering later needs later_ids")
        if self.memory.pinnable < 1:
            raise InputError(f"{mask_name}: the memory ({self.geometry.capacity} slots) cannot pin another mask "
                             f"frame; give masks on fewer frames or use a larger capacity")
        objects, work = self._object_masks(ids, shown)
        slots = torch.tensor([[v in shown for v in self.object_ids]
                              + [False] * (self.geometry.objects - len(self.object_ids))], device=objects.device)
        return GivenMask(objects, work, slots, slots & ~self._object_valid)

    # -- engines -----------------------------------------------------------------------------

    def _decode(self, key_out: dict[str, torch.Tensor], plan, state: VideoState) -> dict[str, torch.Tensor]:
        """Memory read + decode of the front memory -> the decode engine's outputs by name
        (logits [1, K+1, Hp, Wp], and what the policy's decode_feeds ask for back)."""
        mem = state.memory.front
        feeds = {name: key_out[name] for name in ("key", "feat16", "skip8", "skip4")}
        valid = mem.valid_per_object if self._per_object_valid else mem.valid
        feeds.update(mem_keys=mem.keys, mem_values=mem.values, mem_valid=valid, object_valid=self._object_valid)
        feeds.update(self.policy.decode_feeds(plan, state))
        return self.backend.infer("decode", feeds)

    @staticmethod
    def _present(probs: torch.Tensor) -> torch.Tensor:
        """probs [1, K+1, H, W] -> [1, K] bool: which objects win at least one pixel (on the
        device, so no sync)."""
        winner = probs.argmax(1, keepdim=True)  # [1, 1, H, W]
        labels = torch.arange(1, probs.shape[1], device=probs.device).view(1, -1, 1, 1)
        return (winner == labels).flatten(2).any(2)

    # -- output ------------------------------------------------------------------------------

    def _crop(self, probs: torch.Tensor, given: GivenMask | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Padded probabilities at the working size -> (probabilities [K+1, H, W] of the tracked
        objects at the video's size, user ids); a given mask's objects are its own pixels."""
        k = len(self.object_ids)
        cropped = self.framing.to_video(probs[:, :1 + k])
        if given is not None:  # not their round trip through the working size, as on frame 0
            cropped = merge_given(cropped, given.video[:, :k], given.shown[:, :k])
        cropped = cropped[0].cpu()
        return cropped, self.ids_of(cropped)

    def ids_of(self, probabilities: torch.Tensor) -> np.ndarray:
        """probabilities [K+1, H, W] (background first, objects in ``object_ids`` order) -> the
        user's ids [H, W] uint8 where each pixel's most probable one wins."""
        return self._id_lookup[probabilities.argmax(0)].numpy()

    # -- summary -----------------------------------------------------------------------------

    def summary(self) -> dict:
        """JSON-ready per-video figures: frames by kind, memory writes, GFLOPs per frame and in
        total (dense and realized), per-engine time, the policy's options and extras."""
        return {
            "frames": len(self.costs), "objects": list(self.object_ids),
            "working_size": list(self.framing.work) if self.framing else None, "min_side": self.min_side,
            "engine_size": [self.geometry.height, self.geometry.width] if self.geometry else None,
            "object_slots": self.geometry.objects if self.geometry else None,
            "memory_capacity": self.geometry.capacity if self.geometry else None,
            "frame_kinds": {k: self.kinds.count(k) for k in dict.fromkeys(self.kinds)},
            "keyframes": sum(k in KEYFRAME_KINDS for k in self.kinds),
            "memory_writes": self.memory.num_writes if self.state is not None else 0,
            "gflops": gflops_summary(self.costs),
            "engine_ms": self.backend.timing_summary(),
            "policy": self.policy.options(),
            "skip_absent": self.skip_absent and self._per_object_valid,
            "flip": False,  # test-time flip augmentation: vseg.runtime.mirrored
            **self.policy.summary(self.costs),
        }
