"""Test-time flip augmentation: a video run twice, as it is and mirrored, and the two averaged.

:class:`MirroredCore` drives two :class:`~vseg.runtime.inference_core.InferenceCore` over one
backend, the second fed every frame (and mask) mirrored left to right. Each frame's output is
the two runs' probabilities averaged (the mirrored run's mirrored back). By default each run
writes its own masks to its own memory, two independent trackers whose mistakes do not spread
to the other; ``share_memory=True`` makes both memories write the average instead (the second
mirrored), as Cutie's ``flip_aug`` does, which measured no better here (BENCHMARKS.md, "Test-time
flip augmentation"). Twice the engine runs and twice the memory of one core; ``vseg run --flip``.

Frame 0 writes the given mask in both. A frame that fails in either core leaves both at the
last finished frame.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vseg.runtime.backends import Backend, TorchBackend
from vseg.runtime.inference_core import InferenceCore, StepResult, gflops_summary
from vseg.runtime.policies import FrameGflops


def mirror(image: np.ndarray | torch.Tensor | None):
    """Mirror a frame ([H, W, 3] or [3, H, W]) or an id mask ([H, W]) left to right; None stays None."""
    if image is None:
        return None
    if isinstance(image, torch.Tensor):
        return torch.flip(image, dims=[image.dim() - 2 if image.dim() == 3 and image.shape[-1] == 3 else -1])
    array = np.asarray(image)
    axis = 1 if array.ndim == 2 or array.shape[-1] == 3 else 2
    return np.ascontiguousarray(np.flip(array, axis=axis))


class MirroredCore:
    """Two inference cores, plain and mirrored, averaged (module docstring). Takes
    InferenceCore's arguments except ``policy`` (each core builds its own), and share_memory
    (write the average to both memories), and offers what callers of a core use: :meth:`step`,
    :meth:`summary`, ``memory``, ``geometry``, ``object_ids``, ``frame_index``, ``costs``,
    ``kinds`` and the options."""

    def __init__(self, engine, share_memory: bool = False, **options) -> None:
        if "policy" in options:
            raise TypeError("MirroredCore builds one policy per core; pass the policy's options instead")
        backend: Backend = engine if isinstance(engine, Backend) else TorchBackend(engine)
        self.plain = InferenceCore(backend, **options)
        self.mirrored = InferenceCore(backend, **options)
        self.backend = backend
        self.share_memory = share_memory
        self.costs: list[FrameGflops] = []

    # What run_vos and profile read off a core: the plain one's (the two agree).
    policy = property(lambda self: self.plain.policy)
    capacity = property(lambda self: self.plain.capacity)
    skip_absent = property(lambda self: self.plain.skip_absent)
    min_side = property(lambda self: self.plain.min_side)
    geometry = property(lambda self: self.plain.geometry)
    memory = property(lambda self: self.plain.memory)
    object_ids = property(lambda self: self.plain.object_ids)
    frame_index = property(lambda self: self.plain.frame_index)
    kinds = property(lambda self: self.plain.kinds)

    def step(self, frame, mask=None, object_ids=None, mask_name: str = "mask", later_ids=()) -> StepResult:
        """Segment one frame (InferenceCore.step's arguments and result); the result's
        probabilities are the average, its gflops the two runs' together."""
        start = time.perf_counter()
        a = self.plain.begin_step(frame, mask, object_ids, mask_name, later_ids)
        try:
            b = self.mirrored.begin_step(mirror(frame), mirror(mask), object_ids, mask_name, later_ids)
        except BaseException:
            self.plain.abort_step(a)
            raise
        try:
            shared_a = shared_b = None
            if a.index > 0 and self.share_memory:
                average = (self.plain.content(a.probs) + torch.flip(self.mirrored.content(b.probs), dims=[-1])) / 2
                shared_a, shared_b = a.probs.clone(), b.probs.clone()
                self.plain.content(shared_a).copy_(average)
                self.mirrored.content(shared_b).copy_(torch.flip(average, dims=[-1]))
            result = self.plain.finish_step(a, shared_a)
            other = self.mirrored.finish_step(b, shared_b)
            if a.index > 0 and not self.share_memory:  # (shared: the plain run's output is the average)
                result.probabilities = (result.probabilities + torch.flip(other.probabilities, dims=[-1])) / 2
                result.ids = self.plain.ids_of(result.probabilities)
        except BaseException:
            self.plain.abort_step(a)
            self.mirrored.abort_step(b)
            raise
        self.plain.commit_step(a)
        self.mirrored.commit_step(b)
        gflops = FrameGflops(a.gflops.dense + b.gflops.dense, a.gflops.realized + b.gflops.realized)
        self.costs.append(gflops)
        result.gflops, result.seconds = gflops, time.perf_counter() - start
        return result

    def summary(self) -> dict:
        """InferenceCore.summary of the plain run, with ``flip`` set and the GFLOPs of both runs
        (a policy's own figures, spvos's sparse ones, describe the plain run)."""
        return {**self.plain.summary(), "gflops": gflops_summary(self.costs), "flip": True,
                "flip_shares_memory": self.share_memory}


def make_core(engine, flip: bool = False, **options) -> InferenceCore | MirroredCore:
    """An InferenceCore, or with ``flip`` a MirroredCore, over ``engine`` with ``options``."""
    return MirroredCore(engine, **options) if flip else InferenceCore(engine, **options)
