"""Training clips for the VOS models, sampled from a DAVIS-2017 or YouTube-VOS folder.

:class:`VOSClipDataset` is a plain ``torch.utils.data.Dataset``. Sample number ``g`` (any
non-negative int) maps deterministically to one clip:

- the sequence is ``permutation(seed, g // num_sequences)[g % num_sequences]``: every pass over
  the data (an epoch) visits each sequence once, in a fresh order;
- everything random about the clip (frames, scale, crop, flip, objects) comes from a numpy
  generator seeded by ``(seed, epoch, g % num_sequences)``.

So a training run that asks for samples ``step * batch + i`` gets the same clips whether or not
it was interrupted, and DataLoader workers need no shared random state.

A clip is ``clip_len`` annotated frames in temporal order with gaps of 1..``max_skip`` annotated
frames (``skip_schedule`` can change ``max_skip`` from given sample numbers on: a curriculum that
depends only on the sample number, so it survives a resume too); its objects are chosen among the
ids present in its first (cropped) frame, at most
``max_objects`` of them, renumbered 1..K in ascending order of their dataset ids. Frames whose
first frame shows no object are redrawn.

Re-entry clips (``reentry_fraction`` > 0): that share of the samples, where the sequence has one,
is drawn around an object that leaves the picture and comes back: the first frame shows it, a
middle frame has none of its pixels (in the whole frame, not just the crop) and the last shows
it again; the crop is chosen to show it in the first and last frames, and it is always among the
clip's objects. The runtime's weak spot is exactly this (a returning target must be matched to
the memory, not to the previous frame), and random gaps of at most ``max_skip`` rarely show it.
Whether a sample is one is decided by a generator of its own, so the other samples are the clips
a run with ``reentry_fraction`` 0 and the same seed would draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from vseg.data.datasets import UNANNOTATED, DavisDataset, YouTubeVOSDataset, detect_layout, load_sequence
from vseg.errors import InputError

CACHE_LIMIT_BYTES = 2 << 30  # "auto" caching keeps decoded sequences in RAM below this estimate


def resize_frames(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 RGB frames [T, H, W, 3] -> float [T, 3, h, w] in [0, 1] at ``size`` = (h, w).

    Bilinear, with antialiasing when shrinking (so small validation copies do not alias).
    """
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def resize_ids(masks: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 id masks [T, H, W] -> uint8 [T, h, w] by nearest neighbour (ids must not blend)."""
    m = torch.as_tensor(np.asarray(masks))
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(torch.uint8)


def scheduled_skip(sample: int, max_skip: int, schedule: tuple[tuple[int, int], ...]) -> int:
    """The skip of the last (first sample, skip) entry of ``schedule`` starting at or before
    ``sample``, else ``max_skip``."""
    skip = max_skip
    for first, later in schedule:
        if sample >= first:
            skip = later
    return skip


class VOSClipDataset(Dataset):
    """Random training clips (see the module docstring).

    root: a DAVIS-2017 (``JPEGImages/480p``...) or YouTube-VOS (``<split>/JPEGImages``) folder.
    crop: (h, w) of the returned clips; a frame smaller than the crop (after scaling) is
    scaled up to cover it. scale_range: the clip is resized by a factor drawn uniformly from it
    before cropping. cache: keep decoded sequences in RAM (None: when they fit in 2 GiB).

    ``dataset[g]`` returns a dict:
      frames [T, 3, h, w] float32 in [0, 1]; masks [T, K, h, w] float32 0/1 with
      K = ``max_objects`` (padding objects are all zero); object_valid [K] bool;
      object_ids [K] int64 (the dataset ids, 0 for padding); frame_indices [T] int64 (indices
      into the sequence's frames); sequence (name).
    """

    def __init__(self, root: str | Path, split: str = "train", clip_len: int = 3, max_skip: int = 5,
                 max_objects: int = 2, crop: tuple[int, int] = (128, 224), flip: bool = True,
                 scale_range: tuple[float, float] = (1.0, 1.0), seed: int = 0, cache: bool | None = None,
                 min_object_pixels: int = 16, crop_tries: int = 10, max_redraws: int = 50,
                 skip_schedule: tuple[tuple[int, int], ...] = (), reentry_fraction: float = 0.0) -> None:
        if clip_len < 3:
            raise ValueError(f"clip_len must be >= 3 (one memory frame, two query frames), got {clip_len}")
        if max_skip < 1 or max_objects < 1:
            raise ValueError(f"max_skip and max_objects must be >= 1, got {max_skip}, {max_objects}")
        starts = [int(first) for first, _ in skip_schedule]
        if any(skip < 1 for _, skip in skip_schedule) or starts != sorted(starts) or any(v < 0 for v in starts):
            raise ValueError(f"skip_schedule needs ascending first samples >= 0 and skips >= 1, got {skip_schedule}")
        if not 0.0 <= reentry_fraction <= 1.0:
            raise ValueError(f"reentry_fraction must be in [0, 1], got {reentry_fraction}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.root = Path(root)
        layout = detect_layout(self.root)
        if layout == "davis":
            self.sequences = DavisDataset(self.root, split).sequences
        elif layout == "youtube-vos":
            self.sequences = YouTubeVOSDataset(self.root, split).sequences
        else:
            raise InputError(f"{self.root}: a {layout} folder holds no VOS annotations (need DAVIS or YouTube-VOS)")
        # Clips are drawn from annotated frames only (YouTube-VOS annotates every 5th frame).
        self.sequences = [s for s in self.sequences if len(s.annotated) >= clip_len]
        if not self.sequences:
            raise InputError(f"{self.root}: no {split!r} sequence has {clip_len} annotated frames")
        self.clip_len, self.max_skip, self.max_objects = clip_len, max_skip, max_objects
        self.skip_schedule = tuple((int(first), int(skip)) for first, skip in skip_schedule)
        self.crop = (int(crop[0]), int(crop[1]))
        self.flip, self.scale_range, self.seed = flip, (float(scale_range[0]), float(scale_range[1])), seed
        self.min_object_pixels, self.crop_tries, self.max_redraws = min_object_pixels, crop_tries, max_redraws
        self.reentry_fraction = float(reentry_fraction)
        self.epoch = 0
        self.cache = self._fits_in_ram() if cache is None else cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, list[int]]] = {}
        self._exits: dict[int, list[tuple[int, list[int], list[int]]]] = {}

    def __len__(self) -> int:
        """One epoch: each sequence once."""
        return len(self.sequences)

    def set_epoch(self, epoch: int) -> None:
        """For a standard DataLoader (indices 0..len-1): index i becomes sample epoch*len + i."""
        self.epoch = epoch

    def _fits_in_ram(self) -> bool:
        from PIL import Image

        with Image.open(self.sequences[0].frames[0]) as img:
            w, h = img.size
        frames = sum(len(s.annotated) for s in self.sequences)
        return frames * h * w * 4 < CACHE_LIMIT_BYTES  # RGB + ids, one byte each

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(frames uint8 [N, H, W, 3], masks uint8 [N, H, W], annotated frame indices) of the
        annotated frames of sequence ``index``."""
        if index in self._cache:
            return self._cache[index]
        seq = self.sequences[index]
        frames, masks = load_sequence(seq)
        annotated = seq.annotated
        item = (frames[annotated], masks[annotated], annotated)
        if self.cache:
            self._cache[index] = item
        return item

    def sequence_of(self, sample: int) -> int:
        """Which sequence sample number ``sample`` starts from (before any redraw)."""
        n = len(self.sequences)
        order = np.random.default_rng(np.random.SeedSequence([self.seed, sample // n, 0])).permutation(n)
        return int(order[sample % n])

    def __getitem__(self, index: int) -> dict:
        sample = int(index) + self.epoch * len(self.sequences)
        n = len(self.sequences)
        seq_index = self.sequence_of(sample)
        max_skip = self.max_skip_at(sample)
        reentry_rng = self._clip_rng(sample, 1)
        if self.reentry_fraction > 0 and reentry_rng.random() < self.reentry_fraction:
            clip = self._draw_reentry(seq_index, self._clip_rng(sample), reentry_rng)
            if clip is not None:
                return clip
        rng = self._clip_rng(sample)  # afresh: a failed re-entry draw leaves the plain clip as it was
        for _ in range(self.max_redraws):
            clip = self._draw(seq_index, rng, max_skip)
            if clip is not None:
                return clip
            seq_index = int(rng.integers(n))  # first frame had no object: another sequence
        raise InputError(f"{self.root}: found no clip with an object in its first frame after "
                         f"{self.max_redraws} tries (are the annotations empty?)")

    def _clip_rng(self, sample: int, *stream: int) -> np.random.Generator:
        """The generator of everything random about sample number ``sample``'s clip; ``stream``
        (e.g. 1) a further one of the same sample, independent of it."""
        n = len(self.sequences)
        return np.random.default_rng(np.random.SeedSequence([self.seed, sample // n, 1 + sample % n, *stream]))

    def max_skip_at(self, sample: int) -> int:
        """The largest frame gap of sample number ``sample`` (see :func:`scheduled_skip`)."""
        return scheduled_skip(sample, self.max_skip, self.skip_schedule)

    def _frame_positions(self, count: int, rng: np.random.Generator, max_skip: int) -> np.ndarray:
        """clip_len increasing positions in 0..count-1 with gaps of 1..max_skip."""
        skip = max(1, min(max_skip, (count - 1) // (self.clip_len - 1)))
        gaps = rng.integers(1, skip + 1, size=self.clip_len - 1)
        start = int(rng.integers(0, count - int(gaps.sum())))
        return start + np.concatenate([[0], np.cumsum(gaps)])

    def exits_of(self, seq_index: int, masks: np.ndarray | None = None) -> list[tuple[int, list[int], list[int]]]:
        """[(object id, visible, absent)] for each object of sequence ``seq_index`` that
        disappears and comes back. visible: the annotated-frame positions with at least
        ``min_object_pixels`` of it; absent: those with none of it that have a visible
        position before and after them. masks: the sequence's annotated masks, if loaded."""
        if seq_index not in self._exits:
            if masks is None:
                _, masks, _ = self._load(seq_index)
            found = []
            for obj in np.unique(masks).tolist():
                if obj in (0, UNANNOTATED):
                    continue
                counts = (masks == obj).reshape(len(masks), -1).sum(axis=1)
                visible = np.flatnonzero(counts >= self.min_object_pixels).tolist()
                if not visible:
                    continue
                absent = [b for b in np.flatnonzero(counts == 0).tolist() if visible[0] < b < visible[-1]]
                if absent:
                    found.append((int(obj), visible, absent))
            self._exits[seq_index] = found
        return self._exits[seq_index]

    def _reentry_positions(self, exits: list[tuple[int, list[int], list[int]]],
                           rng: np.random.Generator) -> tuple[int, np.ndarray] | None:
        """(object id, clip_len positions) from ``exits_of``: the first shows the object, one in
        between lacks it, the last shows it again; None when no exit leaves room for the clip."""
        options = [(obj, visible, b) for obj, visible, absent in exits for b in absent]
        while options:
            obj, visible, b = options.pop(int(rng.integers(len(options))))
            first = int(rng.choice([v for v in visible if v < b]))
            last = int(rng.choice([v for v in visible if v > b]))
            between = [p for p in range(first + 1, last) if p != b]
            if len(between) < self.clip_len - 3:
                continue
            middle = rng.choice(between, self.clip_len - 3, replace=False).tolist() + [b]
            return obj, np.array(sorted([first, *middle, last]))
        return None

    def _draw_reentry(self, seq_index: int, rng: np.random.Generator, reentry_rng: np.random.Generator) -> dict | None:
        item = self._load(seq_index)
        drawn = self._reentry_positions(self.exits_of(seq_index, item[1]), reentry_rng)
        if drawn is None:
            return None
        obj, positions = drawn
        return self._make_clip(seq_index, item, positions, rng, required=obj)

    def _draw(self, seq_index: int, rng: np.random.Generator, max_skip: int) -> dict | None:
        item = self._load(seq_index)
        positions = self._frame_positions(len(item[2]), rng, max_skip)
        return self._make_clip(seq_index, item, positions, rng)

    def _make_clip(self, seq_index: int, item: tuple[np.ndarray, np.ndarray, list[int]], positions: np.ndarray,
                   rng: np.random.Generator, required: int | None = None) -> dict | None:
        """The clip of ``positions`` (indices into the annotated frames of ``item`` =
        ``_load(seq_index)``), scaled, cropped and flipped with ``rng``; ``required``: an object
        id to keep in the crop (first and last frames) and among the objects. None when the
        first frame's crop shows no object."""
        frames, masks, annotated = item
        h, w = frames.shape[1:3]
        crop_h, crop_w = self.crop
        scale = max(rng.uniform(*self.scale_range), crop_h / h, crop_w / w)
        size = (max(crop_h, round(h * scale)), max(crop_w, round(w * scale)))
        images = resize_frames(frames[positions], size)  # [T, 3, H', W']
        ids = resize_ids(masks[positions], size)  # [T, H', W'] uint8
        y, x, chosen = self._choose_crop(ids[0], rng, required=None if required is None else (required, ids[-1]))
        if not chosen:
            return None
        images = images[:, :, y:y + crop_h, x:x + crop_w]
        ids = ids[:, y:y + crop_h, x:x + crop_w]
        if self.flip and rng.random() < 0.5:
            images, ids = images.flip(-1), ids.flip(-1)
        if len(chosen) > self.max_objects:
            if required in chosen:
                others = [c for c in chosen if c != required]
                chosen = sorted([required, *rng.choice(others, self.max_objects - 1, replace=False).tolist()])
            else:
                chosen = sorted(rng.choice(chosen, self.max_objects, replace=False).tolist())
        object_ids = torch.zeros(self.max_objects, dtype=torch.int64)
        object_ids[:len(chosen)] = torch.tensor(chosen)
        object_masks = torch.zeros(self.clip_len, self.max_objects, crop_h, crop_w)
        for k, obj in enumerate(chosen):
            object_masks[:, k] = (ids == obj).float()
        return {
            "frames": images.contiguous(),
            "masks": object_masks,
            "object_valid": object_ids > 0,
            "object_ids": object_ids,
            "frame_indices": torch.tensor([annotated[p] for p in positions], dtype=torch.int64),
            "sequence": self.sequences[seq_index].name,
        }

    def _choose_crop(self, first_ids: torch.Tensor, rng: np.random.Generator,
                     required: tuple[int, torch.Tensor] | None = None) -> tuple[int, int, list[int]]:
        """A crop corner whose window shows objects of the first frame; retries keep the crop
        with the most objects. Returns (y, x, object ids with >= min_object_pixels in it).

        required: (object id, last frame's ids [H, W]): prefer windows showing that object in
        both the first and the last frame (three times the tries to find one)."""
        crop_h, crop_w = self.crop
        best: tuple[int, int, list[int]] = (0, 0, [])
        best_key = (False, 0)
        for _ in range(self.crop_tries * (3 if required else 1)):
            y = int(rng.integers(0, first_ids.shape[0] - crop_h + 1))
            x = int(rng.integers(0, first_ids.shape[1] - crop_w + 1))
            window = first_ids[y:y + crop_h, x:x + crop_w]
            values, counts = torch.unique(window, return_counts=True)
            present = [int(v) for v, c in zip(values.tolist(), counts.tolist())
                       if v not in (0, UNANNOTATED) and c >= self.min_object_pixels]
            shows_required = required is not None and required[0] in present and int(
                (required[1][y:y + crop_h, x:x + crop_w] == required[0]).sum()) >= self.min_object_pixels
            key = (shows_required, len(present))
            if key > best_key:
                best, best_key = (y, x, present), key
            if len(present) >= self.max_objects and (required is None or shows_required):
                break
        return best


class ContinuingSampler(Sampler[int]):
    """Sample numbers start, start+1, ... without end: with ``VOSClipDataset`` a run resumed at
    step s (start = s * batch) sees exactly the clips the uninterrupted run would have."""

    def __init__(self, start: int = 0) -> None:
        self.start = start

    def __iter__(self):
        sample = self.start
        while True:
            yield sample
            sample += 1
