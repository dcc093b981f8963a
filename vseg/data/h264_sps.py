"""Just enough of an H.264 sequence parameter set (SPS) parser to tell how many reference
frames and how much reordering a stream may use.

Motion vectors can only be composed frame to frame when every P-frame predicts from the
frame just before it; ``max_num_ref_frames`` in the SPS is the encoder's promise of how many
frames a picture may predict from, and the VUI's ``max_num_reorder_frames`` says whether
frames are decoded out of display order (B-frames). The SPS is found either in an mp4's
``avcC`` box (the stream's extradata) or in-band as an Annex-B NAL unit (type 7).

References: ITU-T H.264 sections 7.3.2.1.1 (SPS syntax), 7.3.2.1.1.1 (scaling lists),
E.1.1 (VUI) and E.1.2 (HRD), and ISO/IEC 14496-15 (``avcC`` layout).
"""

from __future__ import annotations

from dataclasses import dataclass

NAL_TYPE_SPS = 7

# Profiles whose SPS carries chroma format, bit depths and scaling matrices (7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


@dataclass(frozen=True)
class SpsInfo:
    """The fields of one SPS that vseg uses. Sizes are in pixels after the SPS cropping."""

    profile_idc: int
    level_idc: int
    chroma_format_idc: int
    max_num_ref_frames: int
    width: int
    height: int
    frame_mbs_only: bool
    max_num_reorder_frames: int | None  # None when the VUI does not say


class _BitReader:
    """Big-endian bit reader over an RBSP (emulation-prevention bytes already removed)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0  # in bits

    def bits(self, n: int) -> int:
        if self.pos + n > len(self.data) * 8:
            raise ValueError("SPS ends early")
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def flag(self) -> bool:
        return bool(self.bits(1))

    def ue(self) -> int:
        """Unsigned Exp-Golomb code (9.1)."""
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        """Signed Exp-Golomb code: 1, -1, 2, -2... for code numbers 1, 2, 3, 4..."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def remove_emulation_prevention(nal: bytes) -> bytes:
    """NAL payload -> RBSP: drop each 0x03 that follows two zero bytes (7.4.1)."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0  # the escape byte itself is dropped and resets the zero run
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    # Only the bit cost matters here: deltas are read until a zero "next scale" ends the list.
    last, nxt = 8, 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def _skip_hrd(r: _BitReader) -> None:
    cpb_cnt = r.ue() + 1
    r.bits(4)  # bit_rate_scale
    r.bits(4)  # cpb_size_scale
    for _ in range(cpb_cnt):
        r.ue()  # bit_rate_value_minus1
        r.ue()  # cpb_size_value_minus1
        r.bits(1)  # cbr_flag
    r.bits(20)  # four 5-bit delay/offset lengths


def _read_vui_reorder(r: _BitReader) -> int | None:
    """Walk the VUI (E.1.1) up to ``max_num_reorder_frames``; None when it is absent."""
    if r.flag():  # aspect_ratio_info_present_flag
        if r.bits(8) == 255:  # Extended_SAR
            r.bits(32)
    if r.flag():  # overscan_info_present_flag
        r.bits(1)
    if r.flag():  # video_signal_type_present_flag
        r.bits(4)
        if r.flag():  # colour_description_present_flag
            r.bits(24)
    if r.flag():  # chroma_loc_info_present_flag
        r.ue()
        r.ue()
    if r.flag():  # timing_info_present_flag
        r.bits(32)
        r.bits(32)
        r.bits(1)
    nal_hrd = r.flag()
    if nal_hrd:
        _skip_hrd(r)
    vcl_hrd = r.flag()
    if vcl_hrd:
        _skip_hrd(r)
    if nal_hrd or vcl_hrd:
        r.bits(1)  # low_delay_hrd_flag
    r.bits(1)  # pic_struct_present_flag
    if not r.flag():  # bitstream_restriction_flag
        return None
    r.bits(1)  # motion_vectors_over_pic_boundaries_flag
    for _ in range(4):  # max bytes/bits denominators, log2 max mv lengths
        r.ue()
    return r.ue()


def parse_sps(nal: bytes) -> SpsInfo:
    """Parse one SPS NAL unit (header byte included, emulation prevention still in).

    Raises ValueError when the bytes are not a well-formed SPS.
    """
    if not nal or nal[0] & 0x1F != NAL_TYPE_SPS:
        raise ValueError("not an SPS NAL unit")
    r = _BitReader(remove_emulation_prevention(nal[1:]))
    profile_idc = r.bits(8)
    r.bits(8)  # constraint flags and reserved bits
    level_idc = r.bits(8)
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1  # 4:2:0 is implied for the profiles without the field
    separate_colour_planes = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            separate_colour_planes = r.flag()
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.bits(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            # 4:4:4 adds two more 8x8 lists (Cb and Cr) to the usual six 4x4 and two 8x8.
            for i in range(12 if chroma_format_idc == 3 else 8):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.bits(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue()):
            r.se()  # offset_for_ref_frame[i]
    max_num_ref_frames = r.ue()
    r.bits(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.bits(1)  # mb_adaptive_frame_field_flag
    r.bits(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.flag():  # frame_cropping_flag
        crop = (r.ue(), r.ue(), r.ue(), r.ue())  # left, right, top, bottom
    # Crop units depend on chroma subsampling and on field coding (7.4.2.1.1).
    array_type = 0 if separate_colour_planes else chroma_format_idc
    sub_w = 2 if array_type in (1, 2) else 1
    sub_h = 2 if array_type == 1 else 1
    crop_x = sub_w if array_type else 1
    crop_y = (sub_h if array_type else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = height_map_units * 16 * (2 - frame_mbs_only) - crop_y * (crop[2] + crop[3])
    reorder = None
    if r.flag():  # vui_parameters_present_flag
        try:
            reorder = _read_vui_reorder(r)
        except ValueError:
            reorder = None  # a VUI cut short still leaves the fields we need above
    return SpsInfo(profile_idc, level_idc, chroma_format_idc, max_num_ref_frames,
                   width, height, frame_mbs_only, reorder)


def sps_from_avcc(extradata: bytes) -> list[bytes]:
    """SPS NAL units stored in an ``avcC`` record (ISO/IEC 14496-15 5.3.3.1)."""
    if len(extradata) < 6 or extradata[0] != 1:
        raise ValueError("not an avcC record")
    count = extradata[5] & 0x1F
    pos, found = 6, []
    for _ in range(count):
        if pos + 2 > len(extradata):
            raise ValueError("avcC record ends early")
        size = int.from_bytes(extradata[pos:pos + 2], "big")
        pos += 2
        if pos + size > len(extradata):
            raise ValueError("avcC record ends early")
        found.append(bytes(extradata[pos:pos + size]))
        pos += size
    return found


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (separated by 00 00 01 or 00 00 00 01)."""
    units = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        start = data.find(b"\x00\x00\x01", begin)
        unit = data[begin:] if start < 0 else data[begin:start]
        # A 4-byte start code leaves its leading zero on the previous unit; a NAL unit
        # never ends in a zero byte (its RBSP ends with a stop bit), so strip them all.
        unit = bytes(unit).rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of an mp4 sample: each unit preceded by its big-endian length."""
    units, pos = [], 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            break  # not length-prefixed after all, or a damaged sample
        units.append(bytes(data[pos:pos + size]))
        pos += size
    return units


def find_sps(data: bytes) -> SpsInfo | None:
    """The first parseable SPS in extradata or a packet: avcC, Annex-B or length-prefixed."""
    if not data:
        return None
    # The first bytes tell the layouts apart: avcC starts with version 1, Annex-B with a
    # start code; anything else is an mp4 sample (a length prefix can itself look like a
    # start code, so Annex-B splitting is only tried when the data opens with one).
    if data[0] == 1:
        try:
            candidates = sps_from_avcc(data)
        except ValueError:
            candidates = []
    elif data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        candidates = split_annexb(data)
    else:
        candidates = split_length_prefixed(data)
    for nal in candidates:
        if nal and nal[0] & 0x1F == NAL_TYPE_SPS:
            try:
                return parse_sps(nal)
            except ValueError:
                continue
    return None
