"""Readers for video segmentation datasets on disk, without any training framework.

Each dataset is a list of :class:`Sequence` (frame paths and the annotation path of each
frame, or None) and :func:`load_sequence` turns one into arrays. Layouts:

- DAVIS 2017 (:class:`DavisDataset`): ``JPEGImages/<res>/<seq>/*.jpg``,
  ``Annotations/<res>/<seq>/*.png`` (every frame, or only frame 0 as in test sets),
  ``ImageSets/2017/<split>.txt``. Also what ``vseg data synth-vos`` writes.
- YouTube-VOS (:class:`YouTubeVOSDataset`): ``<split>/JPEGImages/<vid>/*.jpg``,
  ``<split>/Annotations/<vid>/*.png`` (some frames only) and ``<split>/meta.json`` listing each
  object's category and frames; objects may first appear after frame 0.
- CamVid (:class:`CamVidDataset`): ``<split>/`` frames and ``<split>annot/`` labels, either one
  folder per sequence (``vseg data synth-vss``) or the flat SegNet layout
  (``train/0001TP_006690.png``) grouped into sequences by the name before ``_``.

A folder that is missing or malformed raises :class:`~vseg.errors.InputError` naming it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vseg.data.palette import read_mask
from vseg.errors import InputError

UNANNOTATED = 255  # load_sequence's mask value on frames that have no annotation
CAMVID_CLASSES = ["sky", "building", "pole", "road", "sidewalk", "vegetation", "sign", "fence", "car",
                  "pedestrian", "bicyclist"]
CAMVID_COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                  (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
SEGNET_IGNORE = 11  # the flat SegNet CamVid labels mark unlabelled pixels 11
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class ObjectInfo:
    """An annotated object of a sequence (YouTube-VOS meta.json)."""

    category: str | None
    first_frame: int  # index into Sequence.frames of its first annotated frame


@dataclass
class Sequence:
    """One video: frame files in order and, per frame, its annotation file or None."""

    name: str
    frames: list[Path]
    masks: list[Path | None]
    objects: dict[int, ObjectInfo] = field(default_factory=dict)  # empty when the layout lists none
    palette: np.ndarray | None = None  # [256, 3] uint8 for RGB masks; None means DAVIS

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def annotated(self) -> list[int]:
        """Indices of the frames that have an annotation file."""
        return [i for i, m in enumerate(self.masks) if m is not None]


class _SequenceList:
    """List-like access to sequences, by position or by name."""

    sequences: list[Sequence]

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self):
        return iter(self.sequences)

    def __getitem__(self, key: int | str) -> Sequence:
        if isinstance(key, str):
            for seq in self.sequences:
                if seq.name == key:
                    return seq
            raise KeyError(key)
        return self.sequences[key]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sequences]


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{path}: no such folder ({what})")
    return path


def _images(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no {'/'.join(suffixes)} frames in this folder")
    return files


def _matching_masks(frames: list[Path], mask_dir: Path) -> list[Path | None]:
    """Per frame, ``mask_dir/<frame stem>.png`` when it exists."""
    if not mask_dir.is_dir():
        return [None] * len(frames)
    present = {p.stem: p for p in mask_dir.glob("*.png")}
    return [present.get(f.stem) for f in frames]


class DavisDataset(_SequenceList):
    """DAVIS 2017 layout: the sequences named in ``ImageSets/2017/<split>.txt``."""

    def __init__(self, root: str | Path, split: str = "train", resolution: str = "480p"):
        self.root = _folder(Path(root), "DAVIS root")
        self.split, self.resolution = split, resolution
        listing = self.root / "ImageSets" / "2017" / f"{split}.txt"
        if not listing.is_file():
            have = sorted(p.stem for p in listing.parent.glob("*.txt")) if listing.parent.is_dir() else []
            raise InputError(f"{listing}: no such split list (splits here: {', '.join(have) or 'none'})")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        jpeg_root = _folder(self.root / "JPEGImages" / resolution, "DAVIS frames")
        self.sequences = []
        for name in names:
            folder = jpeg_root / name
            if not folder.is_dir():
                raise InputError(f"{folder}: sequence listed in {listing} has no frame folder")
            frames = _images(folder, (".jpg", ".jpeg"))
            masks = _matching_masks(frames, self.root / "Annotations" / resolution / name)
            self.sequences.append(Sequence(name, frames, masks))


class YouTubeVOSDataset(_SequenceList):
    """YouTube-VOS layout under ``<root>/<split>``; objects and categories from ``meta.json``.

    Without a meta.json, every folder of JPEGImages is a video and objects are not listed.
    """

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = _folder(Path(root), "YouTube-VOS root")
        self.split = split
        split_dir = _folder(self.root / split, f"YouTube-VOS split {split!r}")
        jpeg_root = _folder(split_dir / "JPEGImages", "YouTube-VOS frames")
        meta_path = split_dir / "meta.json"
        videos = self._read_meta(meta_path) if meta_path.exists() else None
        names = sorted(videos) if videos is not None else sorted(p.name for p in jpeg_root.iterdir() if p.is_dir())
        self.sequences = []
        for name in names:
            folder = jpeg_root / name
            if not folder.is_dir():
                raise InputError(f"{folder}: video listed in {meta_path} has no frame folder")
            frames = _images(folder, (".jpg", ".jpeg"))
            masks = _matching_masks(frames, split_dir / "Annotations" / name)
            objects = {}
            if videos is not None:
                objects = self._objects(videos[name], frames, meta_path, name)
            self.sequences.append(Sequence(name, frames, masks, objects))

    @staticmethod
    def _read_meta(path: Path) -> dict:
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not readable JSON ({e})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
            raise InputError(f"{path}: expected {{\"videos\": {{<video>: {{\"objects\": ...}}}}}}")
        return meta["videos"]

    @staticmethod
    def _objects(entry, frames: list[Path], meta_path: Path, name: str) -> dict[int, ObjectInfo]:
        objects = entry.get("objects", {}) if isinstance(entry, dict) else None
        if not isinstance(objects, dict):
            raise InputError(f"{meta_path}: video {name!r} has no \"objects\" mapping")
        stems = [f.stem for f in frames]
        out = {}
        for key, info in objects.items():
            if not str(key).isdigit() or not isinstance(info, dict):
                raise InputError(f"{meta_path}: video {name!r} has a malformed object entry {key!r}")
            listed = sorted(str(f) for f in info.get("frames", []))
            first = next((i for i, s in enumerate(stems) if listed and s >= listed[0]), 0)
            out[int(key)] = ObjectInfo(info.get("category"), first)
        return dict(sorted(out.items()))


class CamVidDataset(_SequenceList):
    """CamVid-style ``<split>/`` + ``<split>annot/``: per-sequence folders or the flat SegNet layout.

    Class names, colours and the ignore index come from ``<root>/classes.json`` when present,
    else the 11 CamVid classes with the SegNet ignore index 11.
    """

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = _folder(Path(root), "CamVid root")
        self.split = split
        frame_dir = _folder(self.root / split, f"CamVid split {split!r}")
        label_dir = self.root / f"{split}annot"
        self.classes, self.colours, self.ignore_index = read_classes(self.root / "classes.json")
        palette = np.zeros((256, 3), np.uint8)
        palette[:len(self.colours)] = self.colours
        subdirs = sorted(p for p in frame_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.sequences = []
        if subdirs:
            self.layout = "folders"
            for folder in subdirs:
                frames = _images(folder)
                self.sequences.append(Sequence(folder.name, frames, _matching_masks(frames, label_dir / folder.name),
                                               palette=palette))
        else:
            self.layout = "flat"
            groups: dict[str, list[Path]] = {}
            has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in frame_dir.iterdir())
            for path in _images(frame_dir) if has_images else []:  # an empty split has no sequences
                prefix = path.stem.split("_", 1)[0]
                groups.setdefault(prefix, []).append(path)
            for prefix in sorted(groups):
                frames = sorted(groups[prefix], key=_frame_number)
                self.sequences.append(Sequence(prefix, frames, _matching_masks(frames, label_dir), palette=palette))


def read_classes(path: Path) -> tuple[list[str], list[tuple[int, int, int]], int]:
    """(names, colours, ignore index) from a classes.json; CamVid-11 when the file is absent."""
    if not path.exists():
        return list(CAMVID_CLASSES), list(CAMVID_COLOURS), SEGNET_IGNORE
    try:
        spec = json.loads(path.read_text())
        names = [str(n) for n in spec["names"]]
        colours = [tuple(int(c) for c in rgb) for rgb in spec["colors"]]
        ignore = int(spec["ignore_index"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: expected {{\"names\": [...], \"colors\": [[r, g, b], ...], "
                         f"\"ignore_index\": n}} ({e.__class__.__name__}: {e})") from None
    if len(colours) != len(names) or any(len(c) != 3 for c in colours):
        raise InputError(f"{path}: needs one [r, g, b] colour per class name")
    return names, colours, ignore


def _frame_number(path: Path) -> tuple[int, str]:
    """Sort key of a flat CamVid file: the number after the prefix (``0001TP_006690`` -> 6690,
    ``Seq05VD_f00930`` -> 930)."""
    digits = re.findall(r"\d+", path.stem.split("_", 1)[-1])
    return (int(digits[-1]) if digits else -1, path.name)


# ---------------------------------------------------------------- loading

def read_frame(path: str | Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3] RGB."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def load_sequence(seq: Sequence, with_masks: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a sequence: (frames uint8 [T, H, W, 3], masks uint8 [T, H, W] or None).

    masks is None when no frame is annotated (or ``with_masks`` is False); frames without an
    annotation are filled with :data:`UNANNOTATED` (255). Every frame and mask must have the
    size of the first frame.
    """
    first = read_frame(seq.frames[0])
    h, w = first.shape[:2]
    frames = np.empty((len(seq.frames), h, w, 3), np.uint8)
    for i, path in enumerate(seq.frames):
        img = first if i == 0 else read_frame(path)
        if img.shape[:2] != (h, w):
            raise InputError(f"{path}: frame is {img.shape[1]}x{img.shape[0]}, the sequence's first frame is {w}x{h}")
        frames[i] = img
    if not with_masks or not seq.annotated:
        return frames, None
    masks = np.full((len(seq.frames), h, w), UNANNOTATED, np.uint8)
    for i in seq.annotated:
        ids, _ = read_mask(seq.masks[i], seq.palette)
        if ids.shape != (h, w):
            raise InputError(f"{seq.masks[i]}: mask is {ids.shape[1]}x{ids.shape[0]}, the frames are {w}x{h}")
        masks[i] = ids
    return frames, masks


# ---------------------------------------------------------------- layout detection

DEFAULT_SPLIT = {"davis": "val", "youtube-vos": "valid", "camvid": "val"}


def detect_layout(root: str | Path) -> str:
    """Which layout a dataset folder has: "davis", "youtube-vos" or "camvid"."""
    root = _folder(Path(root), "dataset root")
    if (root / "JPEGImages").is_dir() and ((root / "ImageSets").is_dir() or (root / "Annotations").is_dir()):
        return "davis"
    if any((p / "JPEGImages").is_dir() for p in root.iterdir() if p.is_dir()):
        return "youtube-vos"
    if any((root / f"{p.name}annot").is_dir() for p in root.iterdir() if p.is_dir()):
        return "camvid"
    raise InputError(f"{root}: not a DAVIS (JPEGImages/, ImageSets/), YouTube-VOS (<split>/JPEGImages/) "
                     "or CamVid (<split>/ with <split>annot/) dataset folder")


def open_dataset(root: str | Path, split: str | None = None) -> DavisDataset | YouTubeVOSDataset | CamVidDataset:
    """Open a dataset of any supported layout; ``split`` defaults to the layout's validation split."""
    layout = detect_layout(root)
    split = split or DEFAULT_SPLIT[layout]
    if layout == "davis":
        return DavisDataset(root, split)
    if layout == "youtube-vos":
        return YouTubeVOSDataset(root, split)
    return CamVidDataset(root, split)
