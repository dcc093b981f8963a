"""MemoryStore: ring-buffer order, first-frame pinning, validity, layout for read_memory."""

import pytest
import torch

from vseg.models.memory_read import read_memory
from vseg.runtime.memory import MemoryStore


def frame(i, batch=1, objects=2):
    """A memory frame whose every element equals i: key [B, 3, 2, 2], values [B, K, 4, 2, 2]."""
    return torch.full((batch, 3, 2, 2), float(i)), torch.full((batch, objects, 4, 2, 2), float(i))


def slot_contents(store):
    """The frame number held by each slot, read back from the buffers (-1 for empty)."""
    held = store.keys[0, 0, :, 0, 0].tolist()
    return [int(v) if ok else -1 for v, ok in zip(held, store.valid[0].tolist())]


def test_pinned_ring_buffer_order():
    store = MemoryStore(capacity=4)
    slots = [store.add(*frame(i), frame_index=10 * i) for i in range(7)]
    # Slot 0 is pinned; writes 1.. cycle through slots 1, 2, 3.
    assert slots == [0, 1, 2, 3, 1, 2, 3]
    assert slot_contents(store) == [0, 4, 5, 6]
    assert store.frame_indices == [0, 40, 50, 60]
    assert store.oldest_to_newest() == [0, 1, 2, 3]
    store.add(*frame(7))
    assert slot_contents(store) == [0, 7, 5, 6]  # the oldest unpinned frame (4) went
    assert store.oldest_to_newest() == [0, 2, 3, 1]
    assert store.num_writes == 8


def test_first_frame_is_never_overwritten():
    store = MemoryStore(capacity=2)
    for i in range(5):
        store.add(*frame(i))
    assert slot_contents(store) == [0, 4]
    torch.testing.assert_close(store.values[:, :, :, 0], frame(0)[1])


def test_unpinned_ring_uses_every_slot():
    store = MemoryStore(capacity=3, pin_first=False)
    for i in range(4):
        store.add(*frame(i))
    assert slot_contents(store) == [3, 1, 2]


def test_validity_and_layout():
    store = MemoryStore(capacity=5)
    store.add(*frame(1, batch=2))
    store.add(*frame(2, batch=2))
    assert store.num_valid == 2
    assert store.valid.dtype == torch.bool
    assert store.valid.tolist() == [[True, True, False, False, False]] * 2
    assert store.keys.shape == (2, 3, 5, 2, 2) and store.values.shape == (2, 2, 4, 5, 2, 2)
    assert store.frame_indices == [0, 1, -1, -1, -1]
    # Empty slots are zeros, and the layout is what read_memory takes.
    assert store.keys[:, :, 2:].abs().sum() == 0
    readout = read_memory(torch.randn(2, 3, 2, 2), store.keys, store.values, store.valid, top_k=4)
    assert readout.shape == (2, 2, 4, 2, 2)
    # Every value in the valid slots is 1 or 2, so every readout is a convex mix of them.
    assert readout.min() >= 1 - 1e-5 and readout.max() <= 2 + 1e-5


def test_add_copies_the_tensors():
    store = MemoryStore(capacity=2)
    key, values = frame(3)
    store.add(key, values)
    key.zero_()
    assert store.keys[0, 0, 0, 0, 0] == 3


def test_misuse_is_reported():
    with pytest.raises(ValueError, match="too small"):
        MemoryStore(capacity=1)
    store = MemoryStore(capacity=3)
    with pytest.raises(RuntimeError, match="empty"):
        _ = store.keys
    store.add(*frame(0))
    with pytest.raises(ValueError, match="does not fit"):
        store.add(*frame(1, objects=3))
