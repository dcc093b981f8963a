"""Per-video VOS inference: the frame loop's state and one :meth:`InferenceCore.step` per frame.

One :class:`InferenceCore` per video. The first frame comes with the user's id mask; its ids
can be any values (e.g. 3 and 7), and the core keeps the mapping from the model's object index
(0..K-1) to them. Every frame is padded to a multiple of the model's stride (16) and the
outputs are cropped back, so any frame size works. Memory is written on the first frame
(pinned) and every ``mem_every`` frames after it, into a fixed-capacity :class:`MemoryStore`.
Models whose ``encode_key`` takes the previous frame (lite's STFF) get it from here: the
previous raw feature and foreground probability are state of the core, not of the model.

Key-encoder policy hook: a model whose key encoder carries state between frames (spvos's gate
state) provides ``make_key_policy(**options)``; the returned object decides per frame how the
key encoder runs and holds that state, through one method, ``encode_key(image, frame_index,
writes_memory) -> KeyFeatures``. The core calls it instead of ``model.encode_key`` and has no
model-specific branches. Pass ``key_policy`` to choose its options (e.g. spvos's budget); a
policy holds one video's state, so each core needs a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vseg.errors import InputError
from vseg.models.stm import KeyFeatures, MemoryNetwork
from vseg.runtime.memory import MemoryStore


@dataclass
class StepResult:
    """One frame's output.

    probabilities [K+1, H, W] float32 (background first, then objects in ``object_ids`` order,
    summing to 1 per pixel); ids [H, W] uint8 numpy array of the user's object ids (0 =
    background); memory_written: whether this frame went into the memory.
    """

    frame_index: int
    probabilities: torch.Tensor
    ids: np.ndarray
    object_ids: tuple[int, ...]
    memory_written: bool


class InferenceCore:
    """Runs a VOS model over one video, frame by frame (see the module docstring).

    The model is put in eval mode and run under ``torch.inference_mode`` on its own device.
    """

    def __init__(self, model: MemoryNetwork, mem_every: int = 5, capacity: int = 8, key_policy=None) -> None:
        if mem_every < 1:
            raise ValueError(f"mem_every must be >= 1, got {mem_every}")
        self.model = model.eval()
        self.mem_every = mem_every
        self.memory = MemoryStore(capacity)
        self.device = next(model.parameters()).device
        self.frame_index = 0
        self.object_ids: tuple[int, ...] = ()
        self._size: tuple[int, int] | None = None  # (H, W) of the video
        self._pad = (0, 0, 0, 0)  # left, right, top, bottom, as F.pad takes them
        self._id_lookup: torch.Tensor | None = None  # model index + 1 -> user id, [K+1] uint8
        self._prev_feat16: torch.Tensor | None = None
        self._prev_fg: torch.Tensor | None = None
        make_policy = getattr(model, "make_key_policy", None)
        self.key_policy = key_policy if key_policy is not None else (make_policy() if make_policy else None)

    def step(self, frame: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor | None = None,
             object_ids: list[int] | tuple[int, ...] | None = None, mask_name: str = "mask") -> StepResult:
        """Segment one frame.

        frame: uint8 RGB, [H, W, 3] or [3, H, W] (numpy or torch). mask (first frame only): [H, W]
        integer ids, 0 = background; object_ids picks which ids to track (default: all ids in the
        mask, ascending). mask_name names the mask in error messages (e.g. its path).
        """
        first = self.frame_index == 0
        if first and mask is None:
            raise ValueError("the first frame needs a mask")
        if not first and mask is not None:
            raise ValueError("a mask is only taken on the first frame")
        image = self._prepare_frame(frame)
        with torch.inference_mode():
            if first:  # the mask is checked before any model work
                probs = self._probabilities_from_mask(mask, object_ids, mask_name)
                feats = self._encode_key(image)
            else:
                feats = self._encode_key(image)
                probs = self._segment(feats)
            written = self._maybe_write_memory(image, probs, feats)
            self._remember_previous(feats, probs)
            result = self._result(probs, written)
        self.frame_index += 1
        return result

    # -- input -------------------------------------------------------------------------------

    def _prepare_frame(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [H, W, 3] / [3, H, W] -> padded float [1, 3, Hp, Wp] in [0, 1] on the device."""
        x = frame if isinstance(frame, torch.Tensor) else torch.as_tensor(np.asarray(frame))
        if x.dtype != torch.uint8 or x.dim() != 3 or 3 not in (x.shape[0], x.shape[-1]):
            raise ValueError(f"a frame must be uint8 [H, W, 3] or [3, H, W], got {x.dtype} {tuple(x.shape)}")
        if x.shape[-1] == 3:  # channels last, as decoders give frames
            x = x.permute(2, 0, 1)
        h, w = int(x.shape[1]), int(x.shape[2])
        if self._size is None:
            self._set_size(h, w)
        elif (h, w) != self._size:
            raise InputError(f"frame {self.frame_index} is {h}x{w} but the video started at "
                             f"{self._size[0]}x{self._size[1]}")
        image = x.to(self.device, torch.float32).unsqueeze(0) / 255.0
        return F.pad(image, self._pad)

    def _set_size(self, h: int, w: int) -> None:
        s = self.model.stride
        pad_h, pad_w = -h % s, -w % s
        # Split the padding between both sides so the content stays centred.
        self._pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        self._size = (h, w)

    def _probabilities_from_mask(self, mask: np.ndarray | torch.Tensor, object_ids, mask_name: str) -> torch.Tensor:
        """User id mask [H, W] -> padded one-hot probabilities [1, K+1, Hp, Wp]; sets the id map."""
        ids = (mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))).to(self.device)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InputError(f"{mask_name}: a mask must hold integer object ids, got {ids.dtype}")
        if ids.dim() != 2 or (ids.shape[0], ids.shape[1]) != self._size:
            raise InputError(f"{mask_name}: mask is {'x'.join(map(str, ids.shape))} but the video frames are "
                             f"{self._size[0]}x{self._size[1]}")
        present = [int(v) for v in torch.unique(ids).tolist() if v != 0]
        if object_ids is None:
            chosen = present
        else:
            chosen = [int(v) for v in object_ids]
            missing = [v for v in chosen if v not in present]
            if missing:
                raise InputError(f"{mask_name}: object id(s) {missing} not in the mask (it has {present})")
        if not chosen:
            raise InputError(f"{mask_name}: the mask has no objects (all background)")
        if max(chosen) > 255 or min(chosen) < 1:
            raise InputError(f"{mask_name}: object ids must be 1..255, got {chosen}")
        self.object_ids = tuple(chosen)
        self._id_lookup = torch.tensor([0, *chosen], dtype=torch.uint8, device=self.device)
        objects = torch.stack([ids == v for v in chosen]).to(torch.float32).unsqueeze(0)  # [1, K, H, W]
        objects = F.pad(objects, self._pad)  # padding is background
        return torch.cat([1 - objects.sum(1, keepdim=True), objects], dim=1)

    # -- model stages ------------------------------------------------------------------------

    def _encode_key(self, image: torch.Tensor) -> KeyFeatures:
        if self.key_policy is not None:
            return self.key_policy.encode_key(image, self.frame_index, self._writes_memory())
        if self.model.uses_prev_frame:
            return self.model.encode_key(image, self._prev_feat16, self._prev_fg)
        return self.model.encode_key(image)

    def _segment(self, feats: KeyFeatures) -> torch.Tensor:
        """Memory read + decode -> probabilities [1, K+1, Hp, Wp]."""
        mem = self.memory
        logits = self.model.segment(feats.key, feats.feat16, feats.skip8, feats.skip4,
                                    mem.keys, mem.values, mem.valid)
        return torch.softmax(logits, dim=1)

    def _writes_memory(self) -> bool:
        return self.frame_index % self.mem_every == 0

    def _maybe_write_memory(self, image: torch.Tensor, probs: torch.Tensor, feats: KeyFeatures) -> bool:
        if not self._writes_memory():
            return False
        values = self.model.encode_value(image, probs[:, 1:], feats.feat16)
        self.memory.add(feats.key, values, frame_index=self.frame_index)
        return True

    def _remember_previous(self, feats: KeyFeatures, probs: torch.Tensor) -> None:
        if self.model.uses_prev_frame:
            self._prev_feat16 = feats.next_feat16
            self._prev_fg = 1 - probs[:, :1]

    # -- output ------------------------------------------------------------------------------

    def _result(self, probs: torch.Tensor, written: bool) -> StepResult:
        left, _, top, _ = self._pad
        h, w = self._size
        cropped = probs[0, :, top:top + h, left:left + w].float()
        ids = self._id_lookup[cropped.argmax(0)].cpu().numpy()
        return StepResult(self.frame_index, cropped, ids, self.object_ids, written)
