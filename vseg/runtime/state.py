"""Double-buffered per-video state of the frame loop.

A frame reads the FRONT buffer and writes the BACK one; :meth:`VideoState.commit` makes the
back buffer the front when the frame is complete, :meth:`VideoState.discard` drops it. So an
exception in the middle of a frame (a bad frame, Ctrl-C, an engine failure) leaves the state
exactly as the last finished frame left it, and a later frame or a resumed run goes on from
there. Engines with static I/O (TensorRT, CUDA graphs) want fixed buffers, which is also why
the memory keeps two fixed banks instead of reallocating.

- :class:`DoubleBufferedMemory`: two :class:`~vseg.runtime.memory.MemoryStore` banks. A frame
  writes at most one memory slot (a memory write or the previous frame), so the banks differ in
  at most the slots written since they were last synchronised; only those are copied before
  the next write.
- :class:`VideoState`: the memory plus named values (the policies' state: gate state, the
  STFF previous frame, counters), held as references in two dicts. Values are replaced, never
  changed in place, so the front dict can never see a half-written frame.
"""

from __future__ import annotations

from typing import Any

import torch

from vseg.runtime.memory import MemoryStore


class DoubleBufferedMemory:
    """Memory ring buffer in two banks: ``front`` (read by the current frame) and a back bank
    (the current frame's write). Layout of the banks: see :class:`MemoryStore`."""

    def __init__(self, capacity: int, keep_previous: bool = False) -> None:
        self.front = MemoryStore(capacity, keep_previous=keep_previous)
        self._back = MemoryStore(capacity, keep_previous=keep_previous)
        self._stale: set[int] = set()  # slots where the back bank differs from the front
        self._pending = False

    @property
    def capacity(self) -> int:
        return self.front.capacity

    def write(self, key: torch.Tensor, values: torch.Tensor, frame_index: int, previous: bool = False,
              present: torch.Tensor | None = None, pin: bool = False, introduces: torch.Tensor | None = None) -> int:
        """Write key [1, Ck, h, w], values [1, K, Cv, h, w] (present [1, K] bool: the objects
        the frame's mask shows, None: all) into the back bank, as a memory write (``pin`` and
        ``introduces`` as in :meth:`MemoryStore.add`) or (``previous``) into the previous-frame
        slot; returns the slot. Visible in ``front`` only after :meth:`commit`."""
        if self._pending:
            raise RuntimeError("one memory write per frame: commit() or discard() first")
        self._back.copy_from(self.front, sorted(self._stale))
        if previous:
            slot = self._back.set_previous(key, values, frame_index=frame_index, present=present)
        else:
            slot = self._back.add(key, values, frame_index=frame_index, present=present, pin=pin,
                                  introduces=introduces)
        self._stale = {slot}
        self._pending = True
        return slot

    def commit(self) -> None:
        if self._pending:
            # The old front becomes the back bank; it lacks exactly the slot just written.
            self.front, self._back = self._back, self.front
            self._pending = False

    def discard(self) -> None:
        # The back bank keeps the dropped write; that slot is already in _stale, so the next
        # write copies it back from the front first.
        self._pending = False


class VideoState:
    """Memory plus named values, double-buffered (see the module docstring).

    ``state[name]`` reads the front; :meth:`begin` starts a frame, :meth:`set` writes the back
    buffer, :meth:`get` reads the back buffer (this frame's value if already set, else the
    front's), :meth:`commit` / :meth:`discard` end the frame.
    """

    def __init__(self, capacity: int, keep_previous: bool = False, **initial: Any) -> None:
        self.memory = DoubleBufferedMemory(capacity, keep_previous)
        self._front: dict[str, Any] = dict(initial)
        self._back: dict[str, Any] | None = None

    def __getitem__(self, name: str) -> Any:
        return self._front[name]

    def __contains__(self, name: str) -> bool:
        return name in self._front

    def get(self, name: str, default: Any = None) -> Any:
        return self._writable().get(name, default)

    def begin(self) -> None:
        if self._back is not None:
            raise RuntimeError("a frame is already in progress: commit() or discard() it first")
        self._back = dict(self._front)  # references only: values are replaced, never mutated

    def set(self, name: str, value: Any) -> None:
        self._writable()[name] = value

    def commit(self) -> None:
        self._front = self._writable()
        self._back = None
        self.memory.commit()

    def discard(self) -> None:
        self._back = None
        self.memory.discard()

    def _writable(self) -> dict[str, Any]:
        if self._back is None:
            raise RuntimeError("no frame in progress: call begin() first")
        return self._back
