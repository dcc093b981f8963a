"""The VOS memory store: a fixed-capacity ring buffer of memory frames (no model inside).

Engines take static shapes, so the memory always has ``capacity`` slots and a validity mask
says which hold a frame. The first frame written (the one with the user's mask, the only
ground truth) is pinned in slot 0 and never overwritten; later writes cycle through slots
1..capacity-1, replacing the oldest.

With ``keep_previous`` the last slot is instead a temporary one, as in STM (Oh et al., ICCV
2019): it holds the previous frame between memory writes (:meth:`set_previous`, overwritten
every frame) so the newest appearance is always in memory; a memory write, which puts that
same newest frame into the ring, empties it. The ring is then slots 1..capacity-2.

Each write also says which objects its mask shows (``present``); :attr:`valid_per_object` is
then the memory each object reads: the frames where it was visible, and always the pinned
first frame. An object that has left the picture thus looks for itself in the frames that
show it, instead of in frames that label every pixel, look-alikes included, as not it.

Objects that first appear later (YouTube-VOS gives their masks on the frame where they enter)
come with a pinned write of their own (``add(..., pin=True, introduces=...)``): that frame,
the only ground truth for them, is never overwritten either, the ring shrinks by one slot,
and the new objects stop reading the first frame, whose mask labels them background
everywhere. Until then their slots read the first frame like every other, which keeps
their (switched off) read well defined.

Layout, for B frames per batch, Ck key and Cv value channels, K objects, T = capacity and an
h x w stride-16 grid: keys [B, Ck, T, h, w], values [B, K, Cv, T, h, w], valid [B, T] bool,
valid_per_object [B, K, T] bool: exactly what :meth:`vseg.models.stm.MemoryNetwork.read_memory`
takes.
"""

from __future__ import annotations

import torch


class MemoryStore:
    """Ring buffer of memory keys/values. Buffers are allocated on the first :meth:`add`, on
    that key's device and dtype, with its shapes; later adds must match them."""

    def __init__(self, capacity: int = 8, pin_first: bool = True, keep_previous: bool = False) -> None:
        needed = 1 + pin_first + keep_previous
        if capacity < needed:
            parts = ["a ring slot"] + ["the pinned first frame"] * pin_first + ["the previous frame"] * keep_previous
            raise ValueError(f"memory capacity {capacity} is too small: {', '.join(parts)} need {needed} slots")
        self.capacity = capacity
        self.pin_first = pin_first
        self.keep_previous = keep_previous
        self.num_writes = 0  # memory writes (add); set_previous is not counted
        self._clock = 0  # every write of either kind, to order the slots
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._valid = [False] * capacity  # host copy of the mask: counting needs no device sync
        self._valid_mask: torch.Tensor | None = None  # [B, T] bool, on the buffers' device
        self._present: torch.Tensor | None = None  # [B, K, T] bool: the slot's mask shows the object
        self._frame_index = [-1] * capacity  # which frame each slot holds, -1 = empty
        self._write_number = [-1] * capacity  # which write filled each slot
        self._pinned = [False] * capacity  # never overwritten: the first frame, later given masks

    @property
    def previous_slot(self) -> int | None:
        """The temporary slot of :meth:`set_previous` (None without ``keep_previous``)."""
        return self.capacity - 1 if self.keep_previous else None

    @property
    def pinned_slots(self) -> list[int]:
        """Slots holding frames that are never overwritten (the first, and later given masks)."""
        return [s for s in range(self.capacity) if self._pinned[s]]

    @property
    def pinnable(self) -> int:
        """How many more frames :meth:`add` can pin (the first write aside): one ring slot must remain."""
        pinned = max(sum(self._pinned), int(self.pin_first))  # the first is pinned even before it is written
        return self.capacity - self.keep_previous - pinned - 1

    def next_slot(self) -> int:
        """The slot the next :meth:`add` writes to: the first one when the first frame is pinned
        and none is written yet, else the first empty ring slot, else the oldest ring frame."""
        if self.pin_first and self.num_writes == 0:
            return 0
        ring = [s for s in range(self.capacity - self.keep_previous) if not self._pinned[s]]
        empty = [s for s in ring if self._write_number[s] < 0]
        return empty[0] if empty else min(ring, key=lambda s: self._write_number[s])

    def add(self, key: torch.Tensor, values: torch.Tensor, frame_index: int | None = None,
            present: torch.Tensor | None = None, pin: bool = False,
            introduces: torch.Tensor | None = None) -> int:
        """Write one memory frame: key [B, Ck, h, w], values [B, K, Cv, h, w], present [B, K]
        bool (which objects the frame's mask shows; None: all). Returns the slot.

        pin: the frame is never overwritten (the first write is pinned anyway with
        ``pin_first``); a ring slot must remain. introduces [B, K] bool: objects whose first
        mask this frame holds; they stop reading the first frame (module docstring).
        The tensors are copied into the buffers (no reference to them is kept). Empties the
        temporary slot, if any: the frame it would hold is now in the ring.
        """
        first = self.pin_first and self.num_writes == 0
        if pin and not first and self.pinnable < 1:
            raise ValueError(f"memory capacity {self.capacity} is too small to pin {sum(self._pinned) + 1} "
                             f"frames: a ring slot must remain")
        slot = self.next_slot()
        self._put(slot, key, values, self.num_writes if frame_index is None else frame_index, present,
                  every_object=first)
        self._pinned[slot] = pin or first
        if introduces is not None and self.pin_first:
            stop = introduces.to(self._present.device, torch.bool).expand_as(self._present[:, :, 0])
            self._present[:, :, 0] &= ~stop
        self.num_writes += 1
        if self.keep_previous:
            self._valid[self.previous_slot] = False
            self._valid_mask[:, self.previous_slot] = False
            self._frame_index[self.previous_slot] = -1
        return slot

    def set_previous(self, key: torch.Tensor, values: torch.Tensor, frame_index: int,
                     present: torch.Tensor | None = None) -> int:
        """Put the previous frame (shapes as in :meth:`add`) in the temporary slot; returns it.
        Needs ``keep_previous`` and a first :meth:`add` (the pinned frame comes first)."""
        if not self.keep_previous:
            raise RuntimeError("this memory keeps no previous frame (keep_previous=False)")
        if self.num_writes == 0:
            raise RuntimeError("the first frame must be added before a previous frame")
        self._put(self.previous_slot, key, values, frame_index, present)
        return self.previous_slot

    def _put(self, slot: int, key: torch.Tensor, values: torch.Tensor, frame_index: int,
             present: torch.Tensor | None, every_object: bool = False) -> None:
        if self._keys is None:
            self._allocate(key, values)
        assert self._keys is not None and self._values is not None and self._valid_mask is not None
        if key.shape != self._keys[:, :, 0].shape or values.shape != self._values[:, :, :, 0].shape:
            raise ValueError(f"memory frame of shapes {tuple(key.shape)}, {tuple(values.shape)} does not fit "
                             f"a memory of {tuple(self._keys.shape)}, {tuple(self._values.shape)}")
        self._keys[:, :, slot] = key
        self._values[:, :, :, slot] = values
        self._valid[slot] = True
        self._valid_mask[:, slot] = True
        if present is None or every_object:  # the first frame's mask: every object reads it
            self._present[:, :, slot] = True
        else:
            self._present[:, :, slot] = present.to(self._present.device, torch.bool).expand_as(self._present[:, :, slot])
        self._frame_index[slot] = frame_index
        self._write_number[slot] = self._clock
        self._clock += 1

    def copy_from(self, other: MemoryStore, slots) -> None:
        """Make this store equal ``other``, given that they differ at most in ``slots``.

        Copies those slots' keys and values and all the (small) bookkeeping; used by the
        runtime's double-buffered memory, whose two stores differ by the last write only.
        """
        if (other.capacity, other.pin_first, other.keep_previous) != (self.capacity, self.pin_first,
                                                                      self.keep_previous):
            raise ValueError("copy_from needs a store of the same capacity, pinning and previous slot")
        if other._keys is None:  # other is empty: so becomes this one
            self._keys = self._values = self._valid_mask = self._present = None
            slots = ()
        elif self._keys is None:
            self._allocate(other._keys[:, :, 0], other._values[:, :, :, 0])
        for slot in slots:
            self._keys[:, :, slot] = other._keys[:, :, slot]
            self._values[:, :, :, slot] = other._values[:, :, :, slot]
        if other._valid_mask is not None:
            self._valid_mask.copy_(other._valid_mask)
            self._present.copy_(other._present)
        self.num_writes, self._clock = other.num_writes, other._clock
        self._valid = list(other._valid)
        self._frame_index = list(other._frame_index)
        self._write_number = list(other._write_number)
        self._pinned = list(other._pinned)

    def _allocate(self, key: torch.Tensor, values: torch.Tensor) -> None:
        b, ck, h, w = key.shape
        _, k, cv, _, _ = values.shape
        # Zero-filled: empty slots are masked out by `valid`, and zeros keep them harmless anyway.
        self._keys = key.new_zeros(b, ck, self.capacity, h, w)
        self._values = values.new_zeros(b, k, cv, self.capacity, h, w)
        self._valid_mask = torch.zeros(b, self.capacity, dtype=torch.bool, device=key.device)
        self._present = torch.zeros(b, k, self.capacity, dtype=torch.bool, device=key.device)

    @property
    def keys(self) -> torch.Tensor:
        """[B, Ck, T, h, w]."""
        self._require_data()
        return self._keys

    @property
    def values(self) -> torch.Tensor:
        """[B, K, Cv, T, h, w]."""
        self._require_data()
        return self._values

    @property
    def valid(self) -> torch.Tensor:
        """[B, T] bool: True for slots holding a frame."""
        self._require_data()
        return self._valid_mask.clone()  # a copy: callers cannot corrupt the store

    @property
    def valid_per_object(self) -> torch.Tensor:
        """[B, K, T] bool: the slots each object reads (holding a frame whose mask shows it, or
        the pinned first frame)."""
        self._require_data()
        return self._present & self._valid_mask.unsqueeze(1)

    @property
    def frame_indices(self) -> list[int]:
        """Per slot, the frame index given to :meth:`add` / :meth:`set_previous` (or the write
        count), -1 if empty."""
        return list(self._frame_index)

    @property
    def num_valid(self) -> int:
        return sum(self._valid)

    def oldest_to_newest(self) -> list[int]:
        """Slots holding frames, in write order (the pinned slot first when pinning, the
        previous frame last when it is held)."""
        slots = [s for s in range(self.capacity) if self._valid[s]]
        return sorted(slots, key=lambda s: self._write_number[s])

    def _require_data(self) -> None:
        if self._keys is None:
            raise RuntimeError("the memory is empty: add() the first frame before reading")
