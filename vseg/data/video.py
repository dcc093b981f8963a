"""Video decoding with picture types and motion vectors (PyAV / FFmpeg).

Each decoded frame comes with its picture type and, unless switched off, the codec's
motion vectors rasterised on a grid of 4x4-pixel cells (see :mod:`vseg.data.motion`).

SIGN CONVENTION. FFmpeg's ``AVMotionVector`` says ``src = dst + motion / motion_scale``:
the block at ``dst`` in the current frame was predicted from ``src`` in the reference
frame. Our ``mv`` points from a pixel of the current frame to where that content was in
the reference: ``mv = (motion_x, motion_y) / motion_scale = src - dst``. A vector's
``source`` is negative for a past reference and positive for a future one (B-frames); only
past-reference vectors are used.

Vectors are exported with ``flags2=+export_mvs`` and need slice threading: frame threading
hands frames back without their motion-vector side data.

Accumulating vectors back to a keyframe is exact only for IP-only streams with one
reference frame; :func:`check_motion_vectors_exact` tells, and ``vseg transcode`` fixes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from vseg.data.h264_sps import SpsInfo, find_sps
from vseg.data.motion import rasterize_motion_vectors
from vseg.errors import AmbiguousMotionError, InputError

# AVPictureType values: 1 I, 2 P, 3 B; S, SI, SP and BI pictures are reported as '?'.
_PICT_TYPES = {1: "I", 2: "P", 3: "B"}

# Codecs whose P-pictures always predict from the single previous I/P picture; FFmpeg
# exports motion vectors for these and for H.264 (whose reference count the SPS gives).
_SINGLE_REFERENCE_CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4", "h263", "h263p",
                                      "msmpeg4v2", "msmpeg4v3", "flv"})

_SPS_SCAN_PACKETS = 16  # in-band SPS: it comes with the first keyframe


@dataclass(frozen=True)
class StreamInfo:
    """What a stream allows its motion vectors to mean.

    ``has_b_frames``: the decoder reports a reorder delay, the SPS allows reordering, or a
    B-picture (or a future-reference vector) was seen. ``max_ref_frames``: H.264's
    ``max_num_ref_frames``, 1 for single-reference MPEG codecs, None when unknown.
    """

    codec: str
    has_b_frames: bool
    max_ref_frames: int | None
    reorder_frames: int | None = None

    @property
    def exports_motion_vectors(self) -> bool:
        return self.codec == "h264" or self.codec in _SINGLE_REFERENCE_CODECS

    @property
    def ip_only(self) -> bool:
        """No B-frames and one reference frame: vectors compose exactly frame to frame."""
        return not self.has_b_frames and self.max_ref_frames == 1

    def problems(self) -> list[str]:
        """Short phrases naming what makes accumulated vectors ambiguous (empty if none)."""
        if not self.exports_motion_vectors:
            return [f"codec {self.codec} exports no motion vectors"]
        found = []
        if self.has_b_frames:
            found.append("B-frames")
        if self.max_ref_frames is None:
            found.append("an unknown number of reference frames")
        elif self.max_ref_frames > 1:
            found.append(f"{self.max_ref_frames} reference frames")
        return found


@dataclass
class DecodedFrame:
    """One decoded picture, in display order.

    ``rgb`` uint8 [H, W, 3]; ``pict_type`` 'I', 'P', 'B' or '?'; ``mv`` float32
    [2, ceil(H/4), ceil(W/4)] (dx, dy in pixels, current -> reference) and ``intra`` bool
    [Hb, Wb] (cells no past-reference vector covers), both None when the source was opened
    without motion vectors. ``future_reference`` is True when any vector points forward.
    """

    index: int
    rgb: np.ndarray
    pict_type: str
    is_keyframe: bool
    mv: np.ndarray | None = None
    intra: np.ndarray | None = None
    time: float | None = None
    future_reference: bool = False


def _av_reason(err: Exception) -> str:
    # PyAV's messages repeat the file name; strerror is the part worth showing.
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _mp4_box_past_end(path: Path) -> str | None:
    """The type of the first top-level ISO-BMFF (mp4/mov) box that claims bytes past the end of
    the file, or None. A file cut at a packet boundary decodes to fewer frames with no FFmpeg
    error (the demuxer just meets the end of the file), but its media data box still declares
    the bytes that were lost."""
    size_of_file = path.stat().st_size
    offset = 0
    with path.open("rb") as f:
        while offset + 8 <= size_of_file:
            f.seek(offset)
            header = f.read(16)
            size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            if size == 1 and len(header) == 16:  # 64-bit size follows the type
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:  # the last box, to the end of the file
                return None
            if size < 8:  # not a box structure after all: leave it to FFmpeg
                return None
            if offset + size > size_of_file:
                return kind
            offset += size
    return None


def _open_container(path: Path):
    """Open ``path`` and return ``(container, video_stream)``; user errors -> InputError."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video file")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable video, or truncated ({_av_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    if not stream.codec_context.width or not stream.codec_context.height:
        container.close()
        raise InputError(f"{path}: video stream has no frame size (unsupported or damaged)")
    return container, stream


def _find_stream_sps(path: Path, stream) -> SpsInfo | None:
    extradata = stream.codec_context.extradata
    sps = find_sps(bytes(extradata)) if extradata else None
    if sps is not None:
        return sps
    # No SPS in the container header: look in-band, on a separate demuxer so the main one
    # still starts at the first packet.
    try:
        with av.open(str(path)) as scanner:
            for i, packet in enumerate(scanner.demux(scanner.streams.video[0])):
                if i >= _SPS_SCAN_PACKETS:
                    break
                sps = find_sps(bytes(packet)) if packet.size else None
                if sps is not None:
                    return sps
    except av.FFmpegError:
        return None  # damaged data is reported when decoding reaches it
    return None


def _stream_info(path: Path, stream) -> StreamInfo:
    codec = stream.codec_context.name
    has_b = bool(stream.codec_context.has_b_frames)
    if codec == "h264":
        sps = _find_stream_sps(path, stream)
        if sps is None:
            return StreamInfo(codec, has_b, None)
        reorder = sps.max_num_reorder_frames
        return StreamInfo(codec, has_b or bool(reorder), sps.max_num_ref_frames, reorder)
    refs = 1 if codec in _SINGLE_REFERENCE_CODECS else None
    return StreamInfo(codec, has_b, refs)


class VideoSource:
    """Decode a video file frame by frame, in display order.

    ``with VideoSource(path) as src: for f in src: ...`` yields :class:`DecodedFrame`.
    ``motion_vectors=False`` skips vector export and rasterisation and lets FFmpeg use
    frame threading (faster; ``mv``/``intra`` are None). Attributes: ``width``, ``height``,
    ``fps`` (float or None), ``frame_count`` (None if the container does not say),
    ``codec`` and ``info`` (:class:`StreamInfo`). A damaged stream raises
    :class:`InputError` where decoding fails; frames already yielded stay valid.
    Iterating again starts over from the first frame.
    """

    def __init__(self, path: str | Path, motion_vectors: bool = True, block: int = 4):
        self.path = Path(path)
        self.motion_vectors = motion_vectors
        self.block = block
        self._container, stream = _open_container(self.path)
        try:
            self.width = stream.codec_context.width
            self.height = stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            self.frame_count = stream.frames or None
            self.codec = stream.codec_context.name
            self.info = _stream_info(self.path, stream)
        except BaseException:
            self.close()
            raise
        self._fresh = True

    def _decoder(self):
        if not self._fresh or self._container is None:
            self.close()
            self._container, _ = _open_container(self.path)
        self._fresh = False
        stream = self._container.streams.video[0]
        if self.motion_vectors:
            stream.codec_context.options = {"flags2": "+export_mvs"}
            stream.thread_type = "SLICE"
        else:
            stream.thread_type = "AUTO"
        return self._container, stream

    def __iter__(self) -> Iterator[DecodedFrame]:
        container, stream = self._decoder()
        index = 0
        try:
            for frame in container.decode(stream):
                yield self._convert(frame, index)
                index += 1
        except av.FFmpegError as e:
            raise InputError(f"{self.path}: truncated or corrupt video, decoding stopped after "
                             f"{index} frames ({_av_reason(e)})") from None
        # Fewer frames than the index lists is normal after an edit list trims some; it is a
        # truncation when the file also ends inside a box.
        if self.frame_count and index < self.frame_count and "mp4" in container.format.name:
            box = _mp4_box_past_end(self.path)
            if box is not None:
                raise InputError(f"{self.path}: truncated or corrupt video, decoding stopped after {index} of "
                                 f"{self.frame_count} frames (the file ends inside its {box!r} box)")

    def _convert(self, frame, index: int) -> DecodedFrame:
        pict_type = _PICT_TYPES.get(int(frame.pict_type), "?")
        mv = intra = None
        future = False
        if self.motion_vectors:
            vectors = None
            for side_data in frame.side_data:
                if side_data.type is SideDataType.MOTION_VECTORS:
                    vectors = side_data.to_ndarray()
            if vectors is not None and len(vectors):
                future = bool((vectors["source"] > 0).any())
            mv, intra = rasterize_motion_vectors(vectors, frame.height, frame.width, self.block)
        return DecodedFrame(
            index=index,
            rgb=frame.to_ndarray(format="rgb24"),
            pict_type=pict_type,
            is_keyframe=bool(frame.key_frame),
            mv=mv,
            intra=intra,
            time=float(frame.time) if frame.time is not None else None,
            future_reference=future,
        )

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path: str | Path, motion_vectors: bool = True, block: int = 4) -> VideoSource:
    """Open ``path`` for decoding; see :class:`VideoSource`."""
    return VideoSource(path, motion_vectors=motion_vectors, block=block)


@dataclass(frozen=True)
class VideoProbe:
    """A video's metadata, read without decoding frames."""

    path: Path
    width: int
    height: int
    fps: float | None
    frame_count: int | None
    codec: str
    info: StreamInfo


def probe(path: str | Path) -> VideoProbe:
    """Size, frame rate, frame count (None if unknown), codec and :class:`StreamInfo`."""
    with VideoSource(path, motion_vectors=False) as src:
        return VideoProbe(src.path, src.width, src.height, src.fps, src.frame_count,
                          src.codec, src.info)


def read_frames(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode up to ``max_frames`` frames as RGB uint8 arrays [H, W, 3]."""
    frames: list[np.ndarray] = []
    if max_frames is not None and max_frames <= 0:
        return frames
    with VideoSource(path, motion_vectors=False) as src:
        for frame in src:
            frames.append(frame.rgb)
            if max_frames is not None and len(frames) >= max_frames:
                break
    return frames


def check_motion_vectors_exact(path: str | Path, scan_frames: int | None = 48) -> StreamInfo:
    """Raise :class:`AmbiguousMotionError` unless the stream's vectors compose exactly.

    Looks at the stream header (SPS reference count and reordering, decoder delay) and
    decodes the first ``scan_frames`` frames (all when None) for B-pictures and
    future-reference vectors. Returns the :class:`StreamInfo`, updated by the scan.
    """
    path = Path(path)
    with VideoSource(path, motion_vectors=True) as src:
        info = src.info
        if info.exports_motion_vectors and not info.has_b_frames:
            for frame in src:
                if frame.pict_type == "B" or frame.future_reference:
                    info = dataclasses.replace(info, has_b_frames=True)
                    break
                if scan_frames is not None and frame.index + 1 >= scan_frames:
                    break
    found = info.problems()
    if found:
        suggested = path.with_name(f"{path.stem}_ip.mp4")
        raise AmbiguousMotionError(
            f"{path}: {' and '.join(found)} make accumulated motion vectors ambiguous; "
            f"fix: vseg transcode {path} -o {suggested} --keyint 12")
    return info
