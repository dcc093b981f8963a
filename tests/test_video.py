"""Decoding with picture types and motion vectors, stream checks, SPS parsing, transcoding."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vseg.data.encode import H264Writer
from vseg.data.h264_sps import SpsInfo, find_sps, parse_sps, remove_emulation_prevention, split_annexb
from vseg.data.transcode import transcode
from vseg.data.video import VideoSource, check_motion_vectors_exact, open_video, probe, read_frames
from vseg.errors import AmbiguousMotionError, InputError, VsegError

W, H = 96, 64


def moving_frames(n: int, width: int = W, height: int = H, seed: int = 0) -> list[np.ndarray]:
    """A smooth random picture panning right by 2 px a frame: uint8 [H, W, 3] each."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, (width + 2 * n) // 8 + 2, 3))
    big = np.kron(coarse, np.ones((8, 8, 1))).astype(np.uint8)
    return [np.ascontiguousarray(big[:height, 2 * n - 2 * t:2 * n - 2 * t + width])
            for t in range(n)]


def encode(path: Path, frames: list[np.ndarray], codec: str = "libx264",
           options: dict | None = None, fps: int = 25, pix_fmt: str = "yuv420p",
           fmt: str | None = None, container_options: dict | None = None) -> Path:
    """Encode with arbitrary codec options (H264Writer always writes IP-only)."""
    container = av.open(str(path), "w", format=fmt, options=container_options or {})
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    stream.options = options or {}
    for t, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = t
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def x264(extra: str) -> dict:
    bframes = "3" if "bframes=3" in extra else "0"
    return {"bf": bframes, "x264-params": f"keyint=24:{extra}", "preset": "veryfast"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    frames = moving_frames(14)
    out = {}
    with H264Writer(root / "ip.mp4", W, H, keyint=6) as writer:
        for rgb in frames:
            writer.write(rgb)
    out["ip"] = root / "ip.mp4"
    out["bframes"] = encode(root / "b.mp4", frames, options=x264("bframes=3:b-adapt=0:ref=1"))
    out["refs4"] = encode(root / "r4.mp4", frames, options=x264("bframes=0:ref=4"))
    out["refs3"] = encode(root / "r3.mp4", frames, options=x264("bframes=0:ref=3"))
    return out


def test_decoded_frames_carry_picture_types_and_vectors(videos):
    with open_video(videos["ip"]) as source:
        assert (source.width, source.height, source.codec) == (W, H, "h264")
        assert source.fps == 25.0 and source.frame_count == 14
        frames = list(source)
    assert [f.index for f in frames] == list(range(14))
    assert "".join(f.pict_type for f in frames) == "IPPPPPIPPPPPIP"
    assert [f.index for f in frames if f.is_keyframe] == [0, 6, 12]
    for f in frames:
        assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
        assert f.mv.shape == (2, H // 4, W // 4) and f.mv.dtype == np.float32
        assert f.intra.shape == (H // 4, W // 4) and f.intra.dtype == bool
    assert frames[0].intra.all() and not frames[0].mv.any()
    # The picture pans right by 2 px: content came from 2 px to the left, mv = (-2, 0).
    p_frame = frames[3]
    interior = ~p_frame.intra[2:-2, 2:-2]
    assert interior.mean() > 0.8
    assert (p_frame.mv[0, 2:-2, 2:-2][interior] == -2.0).mean() > 0.9
    assert not any(f.future_reference for f in frames)


def test_source_without_vectors_gives_the_same_pixels_and_restarts(videos):
    with VideoSource(videos["ip"]) as with_mv:
        first = [f.rgb for f in with_mv]
    with VideoSource(videos["ip"], motion_vectors=False) as source:
        plain = list(source)
        again = list(source)  # a second pass starts from the first frame
    assert all(f.mv is None and f.intra is None for f in plain)
    assert len(plain) == len(again) == 14
    for a, b, c in zip(first, plain, again):
        np.testing.assert_array_equal(a, b.rgb)
        np.testing.assert_array_equal(a, c.rgb)


def test_probe_and_read_frames(videos):
    info = probe(videos["ip"])
    assert (info.width, info.height, info.frame_count, info.codec) == (W, H, 14, "h264")
    assert info.info.ip_only and info.info.max_ref_frames == 1
    frames = read_frames(videos["ip"], max_frames=4)
    assert len(frames) == 4 and frames[0].shape == (H, W, 3)
    assert len(read_frames(videos["ip"])) == 14


def test_ip_only_stream_passes_the_check(videos):
    info = check_motion_vectors_exact(videos["ip"])
    assert info.ip_only and not info.has_b_frames and info.max_ref_frames == 1
    assert info.problems() == []


def test_b_frames_are_detected_and_rejected(videos):
    path = videos["bframes"]
    assert probe(path).info.has_b_frames
    with VideoSource(path) as source:
        frames = list(source)
    assert "B" in {f.pict_type for f in frames}
    assert any(f.future_reference for f in frames)
    with pytest.raises(AmbiguousMotionError) as caught:
        check_motion_vectors_exact(path)
    message = str(caught.value)
    assert str(path) in message and "B-frames" in message and "\n" not in message
    assert f"vseg transcode {path} -o" in message and "--keyint 12" in message


def test_several_reference_frames_are_rejected(videos):
    info = probe(videos["refs4"]).info
    assert info.max_ref_frames == 4 and not info.has_b_frames and not info.ip_only
    with pytest.raises(AmbiguousMotionError, match="4 reference frames") as caught:
        check_motion_vectors_exact(videos["refs4"])
    assert "B-frames" not in str(caught.value)


@pytest.mark.parametrize("name, refs", [("ip", 1), ("refs3", 3), ("refs4", 4)])
def test_sps_from_mp4_extradata(videos, name, refs):
    with av.open(str(videos[name])) as container:
        extradata = bytes(container.streams.video[0].codec_context.extradata)
    assert extradata[0] == 1  # avcC
    sps = find_sps(extradata)
    assert sps.max_num_ref_frames == refs
    assert (sps.width, sps.height, sps.chroma_format_idc) == (W, H, 1)
    assert sps.profile_idc == 100 and sps.frame_mbs_only


def test_sps_of_a_444_stream_with_odd_size(tmp_path):
    frames = [f[:50, :90] for f in moving_frames(3)]
    path = encode(tmp_path / "444.mp4", frames, options=x264("bframes=0:ref=3"),
                  pix_fmt="yuv444p")
    info = probe(path)
    with av.open(str(path)) as container:
        sps = find_sps(bytes(container.streams.video[0].codec_context.extradata))
    assert (sps.profile_idc, sps.chroma_format_idc, sps.max_num_ref_frames) == (244, 3, 3)
    assert (sps.width, sps.height) == (90, 50) == (info.width, info.height)


def test_sps_in_band_annexb(tmp_path):
    path = encode(tmp_path / "raw.h264", moving_frames(4), options=x264("bframes=0:ref=2"),
                  fmt="h264")
    with av.open(str(path)) as container:
        packet = next(container.demux(container.streams.video[0]))
        data = bytes(packet)
    assert data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
    assert find_sps(data).max_num_ref_frames == 2
    assert probe(path).info.max_ref_frames == 2


class BitWriter:
    """Builds an RBSP bit by bit, with Exp-Golomb codes, for hand-made SPS units."""

    def __init__(self):
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> BitWriter:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = self.bits + [1] + [0] * (-(len(self.bits) + 1) % 8)  # stop bit, alignment
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def add_emulation_prevention(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def test_sps_hand_built_high_444_with_scaling_lists_vui_and_escapes():
    b = BitWriter().u(8, 244).u(8, 0).u(8, 40).ue(0)
    b.ue(3).u(1, 0).ue(2).ue(2).u(1, 0)  # 4:4:4, no separate planes, 10-bit
    b.u(1, 1)  # seq_scaling_matrix_present_flag: 12 lists for 4:4:4
    for i in range(12):
        if i == 0:  # explicit 4x4 list: 16 deltas
            b.u(1, 1)
            for _ in range(16):
                b.se(1)
        elif i == 2:  # "use default": the first delta makes the next scale 0
            b.u(1, 1).se(-8)
        elif i == 6:  # explicit 8x8 list: 64 deltas
            b.u(1, 1)
            for j in range(64):
                b.se(3 if j % 2 == 0 else -3)
        elif i == 11:  # 8x8 list that ends early: 8 -> 10 -> 0
            b.u(1, 1).se(2).se(-10)
        else:
            b.u(1, 0)
    b.ue(4).ue(1).u(1, 0).se(-3).se(1).ue(2).se(1 << 20).se(-5)  # POC type 1 with a cycle
    b.ue(5).u(1, 0).ue(119).ue(67).u(1, 1).u(1, 1)  # 5 refs, 120x68 macroblocks
    b.u(1, 1).ue(0).ue(0).ue(0).ue(8)  # crop 8 rows (4:4:4 crop unit is 1 px)
    b.u(1, 1)  # VUI
    b.u(1, 1).u(8, 255).u(16, 4).u(16, 3)  # extended SAR
    b.u(1, 0).u(1, 1).u(3, 5).u(1, 0).u(1, 1).u(24, 0x010101).u(1, 0)
    b.u(1, 1).u(32, 1001).u(32, 60000).u(1, 1)  # timing
    b.u(1, 1).ue(1).u(4, 2).u(4, 3)  # NAL HRD with two CPBs
    for _ in range(2):
        b.ue(5000).ue(7000).u(1, 0)
    b.u(20, 0xABCDE).u(1, 0).u(1, 0).u(1, 0)  # lengths, no VCL HRD, low delay, pic struct
    b.u(1, 1).u(1, 1).ue(2).ue(1).ue(16).ue(16).ue(2).ue(5)  # reorder 2, dpb 5
    rbsp = b.rbsp()
    escaped = add_emulation_prevention(rbsp)
    assert len(escaped) > len(rbsp)  # the long zero run really needs escaping
    nal = bytes([0x67]) + escaped
    assert parse_sps(nal) == SpsInfo(profile_idc=244, level_idc=40, chroma_format_idc=3,
                                     max_num_ref_frames=5, width=1920, height=1080,
                                     frame_mbs_only=True, max_num_reorder_frames=2)
    assert find_sps(b"\x00\x00\x00\x01" + nal + b"\x00\x00\x01\x68\xee") == parse_sps(nal)


def test_split_annexb_handles_3_and_4_byte_start_codes():
    data = b"\x00\x00\x00\x01\x67\x01\x02\x00\x00\x01\x68\x03\x00\x00\x00\x01\x65\x80"
    assert split_annexb(data) == [b"\x67\x01\x02", b"\x68\x03", b"\x65\x80"]
    assert split_annexb(b"\x01\x02") == []


def test_remove_emulation_prevention():
    assert remove_emulation_prevention(b"\x00\x00\x03\x01") == b"\x00\x00\x01"
    assert remove_emulation_prevention(b"\x00\x00\x03\x03\x00\x00\x03") == b"\x00\x00\x03\x00\x00"
    assert remove_emulation_prevention(b"\x00\x03\x00") == b"\x00\x03\x00"
    with pytest.raises(ValueError):
        parse_sps(b"\x68\xee")  # a PPS


def write_wav(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path: Path) -> list:
    with VideoSource(path) as source:
        return list(source)


def test_bad_inputs_raise_input_error_naming_the_file(tmp_path, videos):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    half = tmp_path / "half.mp4"
    data = videos["ip"].read_bytes()
    half.write_bytes(data[: len(data) // 2])
    cases = {
        text: "not a readable video",
        half: "not a readable video, or truncated",
        tmp_path / "missing.mp4": "no such file",
        write_wav(tmp_path / "tone.wav"): "no video stream",
        tmp_path: "is a directory",
    }
    for path, words in cases.items():
        with pytest.raises(InputError) as caught:
            decode_all(path)
        message = str(caught.value)
        assert str(path) in message and words in message and "\n" not in message
        with pytest.raises(InputError):
            probe(path)


def test_truncated_stream_fails_mid_decode_after_yielding_frames(tmp_path):
    # moov first (faststart), so the file opens and decoding hits the missing data.
    path = encode(tmp_path / "fast.mp4", moving_frames(30), options=x264("bframes=0:ref=1"),
                  container_options={"movflags": "+faststart"})
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    got = []
    with VideoSource(cut) as source:
        with pytest.raises(InputError, match="truncated or corrupt") as caught:
            for frame in source:
                got.append(frame)
    assert 0 < len(got) < 30 and str(cut) in str(caught.value)
    assert [f.index for f in got] == list(range(len(got)))


def test_stream_cut_at_a_packet_boundary_is_truncated_too(tmp_path):
    """Cut right after a whole packet, FFmpeg meets the end of the file and stops with no error;
    the mp4's media data box still claims the lost bytes."""
    path = encode(tmp_path / "fast.mp4", moving_frames(30), options=x264("bframes=0:ref=1"),
                  container_options={"movflags": "+faststart"})
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    end_of_tenth = packets[9].pos + packets[9].size
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[:end_of_tenth])
    got = []
    with VideoSource(cut) as source:
        with pytest.raises(InputError, match="truncated or corrupt") as caught:
            for frame in source:
                got.append(frame)
    assert len(got) == 10 and "after 10 of 30 frames" in str(caught.value) and "'mdat'" in str(caught.value)
    assert len(list(VideoSource(path))) == 30  # the whole file: no error


def test_mpeg4_part2_vectors_and_checks(tmp_path):
    ip = encode(tmp_path / "m4.mp4", moving_frames(6), codec="mpeg4", options={"bf": "0"})
    assert check_motion_vectors_exact(ip).max_ref_frames == 1
    frames = decode_all(ip)
    for f in frames[1:]:
        assert (~f.intra).mean() > 0.9 and (f.mv[0][~f.intra] == -2.0).all()
    with_b = encode(tmp_path / "m4b.mp4", moving_frames(6), codec="mpeg4", options={"bf": "2"})
    with pytest.raises(AmbiguousMotionError, match="B-frames"):
        check_motion_vectors_exact(with_b)


def test_transcode_b_frames_to_ip_only_with_fixed_keyframes(tmp_path, videos):
    calls = []
    out = tmp_path / "out" / "ip.mp4"
    stats = transcode(videos["bframes"], out, keyint=5, on_frame=lambda i, n: calls.append((i, n)))
    assert (stats.frames, stats.width, stats.height, stats.padded) == (14, W, H, (0, 0))
    assert calls == [(i, 14) for i in range(14)]
    info = check_motion_vectors_exact(out)
    assert info.ip_only
    with VideoSource(out) as source:
        frames = list(source)
        assert source.fps == 25.0
    assert [f.index for f in frames if f.is_keyframe] == [0, 5, 10]
    assert "".join(f.pict_type for f in frames) == "IPPPPIPPPPIPPP"
    assert not list(tmp_path.glob("out/.*"))  # no partial file left behind


def test_transcode_pads_odd_sizes_and_keeps_the_frame_rate(tmp_path):
    frames = [f[:25, :33] for f in moving_frames(6)]
    src = encode(tmp_path / "odd.mkv", frames, codec="ffv1", pix_fmt="yuv444p", fps=30)
    stats = transcode(src, tmp_path / "even.mp4", keyint=3, max_frames=4)
    assert (stats.width, stats.height, stats.padded, stats.frames) == (34, 26, (1, 1), 4)
    assert stats.fps == 30.0 and stats.source_codec == "ffv1"
    with pytest.raises(AmbiguousMotionError, match="codec ffv1 exports no motion vectors"):
        check_motion_vectors_exact(src)
    decoded = read_frames(tmp_path / "even.mp4")
    assert len(decoded) == 4 and decoded[0].shape == (26, 34, 3)
    error = np.abs(decoded[1][:25, :33].astype(int) - frames[1]).mean()
    assert error < 12  # lossy, but the same picture at the same coordinates


def test_transcode_rejects_bad_requests(tmp_path, videos):
    with pytest.raises(InputError, match="no such file"):
        transcode(tmp_path / "missing.mp4", tmp_path / "out.mp4")
    with pytest.raises(VsegError, match="overwrite the input"):
        transcode(videos["ip"], videos["ip"])
    with pytest.raises(VsegError, match="must end in"):
        transcode(videos["ip"], tmp_path / "out.txt")
    assert not (tmp_path / "out.mp4").exists()
