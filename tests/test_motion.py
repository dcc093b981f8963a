"""Motion vectors: rasterisation, accumulation back to the keyframe, warping.

The acceptance test encodes a synthetic scene (textured squares moving at known constant
velocities over a static textured background) with libx264, decodes the vectors with
:class:`VideoSource` and checks the accumulated field against the true displacement.
"""

from __future__ import annotations

import numpy as np
import pytest

from vseg.data.encode import H264Writer
from vseg.data.motion import MotionAccumulator, grid_shape, rasterize_motion_vectors, warp_by_motion
from vseg.data.video import DecodedFrame, VideoSource

WIDTH, HEIGHT, FRAMES, SIDE = 256, 192, 20, 56
# (top-left corner at frame 0, velocity in px/frame): integer and non-integer motions.
SQUARES = [((16.0, 16.0), (3.0, 0.0)),
           ((WIDTH - 16.0 - SIDE, 96.0), (-2.0, 1.0)),
           ((16.0, 124.0), (1.5, -1.0))]
MARGIN = 10  # px kept clear of a square's edges, where codec blocks mix two motions

MV_DTYPE = np.dtype([("source", "i4"), ("w", "u1"), ("h", "u1"), ("src_x", "i2"),
                     ("src_y", "i2"), ("dst_x", "i2"), ("dst_y", "i2"), ("flags", "u8"),
                     ("motion_x", "i4"), ("motion_y", "i4"), ("motion_scale", "u2")],
                    align=True)


def smooth_texture(seed: int):
    """A band-limited RGB texture f(x, y) -> [..., 3] in 0..255 (sum of plane waves).

    Smooth (wavelengths 10-32 px) so that sub-pixel shifts render faithfully and survive
    4:2:0 compression, with several directions so motion is not ambiguous along an edge.
    The colour is a fixed tint of one luminance pattern: chroma detail would be lost to
    the subsampling.
    """
    rng = np.random.default_rng(seed)
    freq = 2 * np.pi / rng.uniform(10, 32, 8)
    angle = rng.uniform(0, np.pi, 8)
    phase = rng.uniform(0, 2 * np.pi, 8)
    tint = rng.uniform(0.6, 1.0, 3)

    def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        luma = np.zeros(x.shape)
        for f, a, ph in zip(freq, angle, phase):
            luma += np.sin(f * (np.cos(a) * x + np.sin(a) * y) + ph)
        return np.clip(128 + luma[..., None] * 40 * tint, 0, 255)

    return texture


def square_origin(index: int, k: int) -> tuple[float, float]:
    (x0, y0), (vx, vy) = SQUARES[index]
    return x0 + vx * k, y0 + vy * k


def render_scene(k: int) -> np.ndarray:
    """Frame k of the scene: uint8 [HEIGHT, WIDTH, 3]."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    image = smooth_texture(0)(xs, ys)
    for i in range(len(SQUARES)):
        x0, y0 = square_origin(i, k)
        inside = (xs >= x0) & (xs < x0 + SIDE) & (ys >= y0) & (ys < y0 + SIDE)
        image[inside] = smooth_texture(i + 1)(xs - x0, ys - y0)[inside]
    return np.round(image).astype(np.uint8)


def interior_cells(index: int, k: int, block: int = 4) -> np.ndarray:
    """[Hb, Wb] bool: cells lying wholly inside square ``index`` at frame k, MARGIN px in."""
    x0, y0 = square_origin(index, k)
    rows, cols = np.mgrid[0:HEIGHT // block, 0:WIDTH // block] * block
    return ((cols >= x0 + MARGIN) & (cols + block <= x0 + SIDE - MARGIN)
            & (rows >= y0 + MARGIN) & (rows + block <= y0 + SIDE - MARGIN))


@pytest.fixture(scope="module")
def decoded_scene(tmp_path_factory) -> list[tuple[DecodedFrame, np.ndarray, np.ndarray]]:
    """(frame, acc, unreliable) for every frame of the encoded scene (one GOP)."""
    path = tmp_path_factory.mktemp("scene") / "squares.mp4"
    with H264Writer(path, WIDTH, HEIGHT, keyint=24) as writer:
        for k in range(FRAMES):
            writer.write(render_scene(k))
    accumulator = MotionAccumulator(HEIGHT, WIDTH)
    out = []
    with VideoSource(path) as source:
        for frame in source:
            acc, unreliable = accumulator.push(frame)
            out.append((frame, acc, unreliable))
    return out


def test_scene_decodes_as_one_gop(decoded_scene):
    types = "".join(frame.pict_type for frame, _, _ in decoded_scene)
    assert types == "I" + "P" * (FRAMES - 1)
    assert [f.index for f, _, _ in decoded_scene] == list(range(FRAMES))


def test_frame_vectors_point_back_to_the_previous_frame(decoded_scene):
    # Content at p in frame k was at p - v in frame k-1, so mv = -v.
    frame = decoded_scene[1][0]
    for i, (_, (vx, vy)) in enumerate(SQUARES):
        cells = interior_cells(i, 1)
        close = (np.abs(frame.mv[0] + vx) <= 0.25) & (np.abs(frame.mv[1] + vy) <= 0.25)
        assert (close & ~frame.intra)[cells].mean() >= 0.9, f"square {i}"


def test_accumulated_field_equals_minus_k_times_velocity(decoded_scene):
    """THE ACCEPTANCE TEST: acc_k = -k v inside every square, at every frame k."""
    _, acc0, unreliable0 = decoded_scene[0]
    assert not acc0.any() and not unreliable0.any()
    for k in range(1, FRAMES):
        _, acc, unreliable = decoded_scene[k]
        for i, (_, (vx, vy)) in enumerate(SQUARES):
            cells = interior_cells(i, k)
            assert cells.sum() >= 36
            error = np.hypot(acc[0] + k * vx, acc[1] + k * vy)
            good = (error <= 1.0) & ~unreliable
            assert good[cells].mean() >= 0.9, (
                f"frame {k}, square {i}: {good[cells].mean():.2f} of cells within 1 px")


def test_static_background_accumulates_nothing(decoded_scene):
    k = FRAMES - 1
    _, acc, _ = decoded_scene[k]
    background = np.ones(grid_shape(HEIGHT, WIDTH), bool)
    for i in range(len(SQUARES)):  # everywhere any square passed, with a margin
        for j in range(FRAMES):
            x0, y0 = square_origin(i, j)
            background[max(int(y0 // 4) - 3, 0):int((y0 + SIDE) // 4) + 4,
                       max(int(x0 // 4) - 3, 0):int((x0 + SIDE) // 4) + 4] = False
    assert background.sum() > 200
    assert (np.abs(acc[:, background]).max(axis=0) <= 0.5).mean() >= 0.95


def test_warping_keyframe_by_accumulated_field_rebuilds_frame_k(decoded_scene):
    keyframe = decoded_scene[0][0].rgb.astype(np.int16)
    for k in (5, 12, FRAMES - 1):
        frame, acc, _ = decoded_scene[k]
        warped = warp_by_motion(keyframe, acc)
        for i in range(len(SQUARES)):
            pixels = np.kron(interior_cells(i, k), np.ones((4, 4), bool))
            target = frame.rgb.astype(np.int16)[pixels]
            warped_error = np.abs(warped[pixels] - target).mean()
            unwarped_error = np.abs(keyframe[pixels] - target).mean()
            assert warped_error < 8, f"frame {k}, square {i}: {warped_error:.1f}"
            assert warped_error < unwarped_error / 3


def make_vectors(rows: list[tuple]) -> np.ndarray:
    """Structured AVMotionVector array from (source, w, h, dst_x, dst_y, mx, my, scale)."""
    out = np.zeros(len(rows), MV_DTYPE)
    for i, (source, w, h, dst_x, dst_y, mx, my, scale) in enumerate(rows):
        out[i] = (source, w, h, dst_x + mx // scale, dst_y + my // scale, dst_x, dst_y, 0,
                  mx, my, scale)
    return out


def test_rasterize_hand_built_blocks():
    # 32x24 frame -> 8x6 cells. A 16x16 block centred (8, 8), an 8x8 block centred (20, 4),
    # a future-reference vector (ignored) and nothing else: the rest is intra.
    vectors = make_vectors([
        (-1, 16, 16, 8, 8, -12, 2, 4),    # (-3, 0.5) over cells rows 0-3, cols 0-3
        (-1, 8, 8, 20, 4, 6, -8, 4),      # (1.5, -2) over cells rows 0-1, cols 4-5
        (1, 8, 8, 28, 20, 40, 40, 4),     # forward vector: not used
    ])
    mv, intra = rasterize_motion_vectors(vectors, 24, 32)
    assert mv.shape == (2, 6, 8) and mv.dtype == np.float32
    expected_intra = np.ones((6, 8), bool)
    expected_intra[0:4, 0:4] = False
    expected_intra[0:2, 4:6] = False
    np.testing.assert_array_equal(intra, expected_intra)
    np.testing.assert_array_equal(mv[:, 0:4, 0:4], np.array([-3.0, 0.5])[:, None, None]
                                  * np.ones((2, 4, 4)))
    np.testing.assert_array_equal(mv[:, 0:2, 4:6], np.array([1.5, -2.0])[:, None, None]
                                  * np.ones((2, 2, 2)))
    assert not mv[:, expected_intra].any()


def test_rasterize_clips_blocks_at_the_frame_edge_and_handles_empty_input():
    # A 30x18 frame: the last macroblock column (x 16..31) sticks out past x = 29.
    vectors = make_vectors([(-1, 16, 16, 24, 8, 4, 0, 4), (-1, 16, 16, 24, 24, 0, 8, 2)])
    mv, intra = rasterize_motion_vectors(vectors, 18, 30)
    assert mv.shape == (2, 5, 8)
    assert not intra[:, 4:].any() and intra[:, :4].all()
    assert (mv[0, :4, 4:] == 1.0).all() and (mv[1, 4, 4:] == 4.0).all()
    mv, intra = rasterize_motion_vectors(None, 18, 30)
    assert intra.all() and not mv.any()
    mv, intra = rasterize_motion_vectors(np.zeros(0, MV_DTYPE), 18, 30, block=8)
    assert mv.shape == (2, 3, 4) and intra.all()


@pytest.mark.parametrize("grid", [4, 2, 1])
def test_accumulator_composes_two_motions(grid):
    # 16x32 frame, 4x8 cells. Frame 1: the right half moved left by 4 px (mv +4, content
    # came from 4 px to the right); frame 2: everything moved left by 4 px.
    height, width = 16, 32
    mv1 = np.zeros((2, 4, 8), np.float32)
    mv1[0, :, 4:] = 4.0
    mv2 = np.full((2, 4, 8), 0.0, np.float32)
    mv2[0] = 4.0
    no_intra = np.zeros((4, 8), bool)
    acc = MotionAccumulator(height, width, grid=grid)
    acc.update(mv1, no_intra)
    field, unreliable = acc.update(mv2, no_intra)
    # acc_2(p) = 4 + acc_1(p + 4): column 3 reads column 4 (moved), 7 reads past the edge.
    expected = np.array([4, 4, 4, 8, 8, 8, 8, 8], np.float32)
    np.testing.assert_allclose(field[0], np.broadcast_to(expected, (4, 8)))
    assert not field[1].any()
    # Column 7's content came from beyond the right edge; column 6's from column 7 of
    # frame 1, whose content was beyond the edge in frame 0.
    assert unreliable[:, 6:].all() and not unreliable[:, :6].any()


def test_accumulator_sums_uniform_subpixel_motion_and_resets():
    acc = MotionAccumulator(24, 24)
    step = np.stack([np.full((6, 6), 1.5, np.float32), np.full((6, 6), -0.5, np.float32)])
    for _ in range(3):
        field, unreliable = acc.update(step, np.zeros((6, 6), bool))
    np.testing.assert_allclose(field[0], 4.5)
    np.testing.assert_allclose(field[1], -1.5)
    # Reading 1.5 px right and 0.5 px up leaves the frame only along the right edge.
    assert unreliable[:, 5].all() and not unreliable[:, :5].any()
    acc.reset()
    assert not acc.acc.any() and not acc.unreliable.any()


def test_intra_blocks_are_unreliable_and_the_flag_travels():
    acc = MotionAccumulator(16, 16, grid=4)
    zero = np.zeros((2, 4, 4), np.float32)
    intra = np.zeros((4, 4), bool)
    intra[1, 1] = True
    mv = zero.copy()
    mv[:, 1, 1] = 7.0  # whatever an intra cell carries is ignored
    field, unreliable = acc.update(mv, intra)
    assert not field.any()
    assert unreliable[1, 1] and unreliable.sum() == 1
    # Next frame, cell (1, 2) reads 4 px to its left: the intra cell.
    shift = zero.copy()
    shift[0, 1, 2] = -4.0
    field, unreliable = acc.update(shift, np.zeros((4, 4), bool))
    assert unreliable[1, 2] and unreliable[1, 1] and unreliable.sum() == 2
    assert field[0, 1, 2] == -4.0


def test_push_resets_on_keyframes():
    acc = MotionAccumulator(8, 8)
    ones = np.ones((2, 2, 2), np.float32)
    none = np.zeros((2, 2), bool)
    rgb = np.zeros((8, 8, 3), np.uint8)
    acc.push(DecodedFrame(0, rgb, "I", True, np.zeros_like(ones), ~none))
    acc.push(DecodedFrame(1, rgb, "P", False, ones * 0.5, none))
    field, _ = acc.push(DecodedFrame(2, rgb, "P", False, ones * 0.5, none))
    np.testing.assert_allclose(field, 1.0)
    field, unreliable = acc.push(DecodedFrame(3, rgb, "I", True, np.zeros_like(ones), ~none))
    assert not field.any() and not unreliable.any()
    with pytest.raises(ValueError):
        acc.push(DecodedFrame(4, rgb, "P", False))


def test_warp_by_motion_hand_worked():
    image = np.arange(6 * 8, dtype=np.int32).reshape(6, 8, 1)
    acc = np.zeros((2, 3, 4), np.float32)
    acc[0] = 1.0          # every pixel reads one to the right...
    acc[1, 0, 0] = 2.0    # ...and the top-left cell also two down
    out = warp_by_motion(image, acc, block=2)
    assert out.shape == image.shape
    assert out[0, 0, 0] == image[2, 1, 0] and out[1, 1, 0] == image[3, 2, 0]
    assert out[4, 3, 0] == image[4, 4, 0]
    assert (out[:, 7, 0] == image[:, 7, 0]).all()  # clamped at the right edge
    acc[0] = -0.5  # halves round up: -0.5 reads the pixel itself
    assert (warp_by_motion(image, acc, block=2)[2:, :, 0] == image[2:, :, 0]).all()
