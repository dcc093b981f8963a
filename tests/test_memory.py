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


def test_previous_frame_slot():
    store = MemoryStore(capacity=4, keep_previous=True)
    assert store.previous_slot == 3
    store.add(*frame(0), frame_index=0)
    for i in (1, 2):  # each frame between writes replaces the last
        assert store.set_previous(*frame(i), frame_index=i) == 3
        assert slot_contents(store) == [0, -1, -1, i]
    assert store.oldest_to_newest() == [0, 3]
    # the ring is slots 1 and 2 only; a memory write empties the previous-frame slot
    assert [store.add(*frame(i), frame_index=i) for i in (3, 4)] == [1, 2]
    assert slot_contents(store) == [0, 3, 4, -1] and store.frame_indices == [0, 3, 4, -1]
    store.set_previous(*frame(5), frame_index=5)
    assert store.add(*frame(6), frame_index=6) == 1  # replaces the oldest ring frame, 3
    store.set_previous(*frame(7), frame_index=7)
    assert slot_contents(store) == [0, 6, 4, 7]
    assert store.oldest_to_newest() == [0, 2, 1, 3] and store.num_writes == 4
    # what read_memory sees: exactly the valid slots
    assert store.valid.tolist() == [[True, True, True, True]]


def test_misuse_is_reported():
    with pytest.raises(ValueError, match="too small"):
        MemoryStore(capacity=1)
    with pytest.raises(ValueError, match="too small: a ring slot, the pinned first frame, the previous frame need 3"):
        MemoryStore(capacity=2, keep_previous=True)
    with pytest.raises(RuntimeError, match="first frame must be added"):
        MemoryStore(capacity=3, keep_previous=True).set_previous(*frame(0), frame_index=0)
    with pytest.raises(RuntimeError, match="keeps no previous frame"):
        MemoryStore(capacity=3).set_previous(*frame(0), frame_index=0)
    store = MemoryStore(capacity=3)
    with pytest.raises(RuntimeError, match="empty"):
        _ = store.keys
    store.add(*frame(0))
    with pytest.raises(ValueError, match="does not fit"):
        store.add(*frame(1, objects=3))


def random_memory(objects=2, slots=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 8, 3, 4, generator=g), torch.randn(1, 8, slots, 3, 4, generator=g),
            torch.randn(1, objects, 5, slots, 3, 4, generator=g))


def test_per_object_read_of_all_slots_is_the_shared_read():
    query, keys, values = random_memory()
    slots = torch.tensor([[True, True, True, False]])
    shared = read_memory(query, keys, values, slots, top_k=5)
    per_object = read_memory(query, keys, values, slots[:, None].expand(1, 2, 4), top_k=5)
    torch.testing.assert_close(per_object, shared, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("top_k", [3, 5, 12, 40])  # fewer than, as many as and more than a slot's 12 pixels
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_object_read_sees_only_that_objects_slots(top_k, seed):
    query, keys, values = random_memory(seed=seed)
    valid = torch.tensor([[[True, False, True, False], [True, True, False, True]]])
    got = read_memory(query, keys, values, valid, top_k=top_k)
    for k in range(2):  # each object alone, with its own slots as the shared mask (a top-k over them all)
        alone = read_memory(query, keys, values[:, k:k + 1], valid[:, k], top_k=top_k)
        torch.testing.assert_close(got[:, k], alone[:, 0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got[:, 0], read_memory(query, keys, values, valid.any(1), top_k=top_k)[:, 0])


def test_an_object_with_no_slot_reads_the_shared_memory():
    query, keys, values = random_memory()
    valid = torch.tensor([[[True, True, False, False], [False, False, False, False]]])
    got = read_memory(query, keys, values, valid, top_k=5)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[:, 1], read_memory(query, keys, values, valid.any(1), top_k=5)[:, 1])


def test_objects_read_the_frames_that_show_them_and_the_pinned_first():
    store = MemoryStore(capacity=5, keep_previous=True)
    shown = [[False, False], [True, False], [False, True], [True, True]]
    for i, present in enumerate(shown):
        store.add(*frame(i), present=torch.tensor([present]))
    # slot 0 is the user's mask: both objects read it whatever it was told
    assert store.valid_per_object[0].tolist() == [[True, True, False, True, False],
                                                  [True, False, True, True, False]]
    store.set_previous(*frame(4), frame_index=4, present=torch.tensor([[False, True]]))
    assert store.valid_per_object[0, :, 4].tolist() == [False, True]
    store.add(*frame(5))  # no present: every object; the previous slot is emptied
    assert store.valid_per_object[0, :, 1].tolist() == [True, True]
    assert store.valid_per_object[0, :, 4].tolist() == [False, False]
    copy = MemoryStore(capacity=5, keep_previous=True)
    copy.copy_from(store, range(5))
    assert torch.equal(copy.valid_per_object, store.valid_per_object)
