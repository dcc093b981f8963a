"""MVWarp: the vseg::mv_warp custom op against the reference, its gradient, its two ONNX flavours
in onnxruntime, exact integer shifts, and warping a real x264 stream with its own vectors."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from vseg.data.encode import H264Writer
from vseg.ops.mv_warp import mv_warp, mv_warp_forward
from vseg.ops.mv_warp_onnx import (
    ONNX_TRANSLATIONS,
    TORCH_OP,
    register_ort_op,
    translation_table,
)
from vseg.ops.reference import mv_warp_reference
from vseg.runtime.arseg_motion import decode_with_motion

MODES = list(itertools.product(("nearest", "bilinear"), ("zeros", "border")))


def random_case(seed: int = 0, n: int = 2, c: int = 5, feat_hw=(7, 11), mv_hw=(9, 13), spread: float = 20.0):
    """feat [n, c, *feat_hw] and a quarter-pixel mv [n, 2, *mv_hw] (many exact half-pixel taps)."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, c, *feat_hw, generator=g)
    mv = torch.round(torch.randn(n, 2, *mv_hw, generator=g) * spread) / 4
    return feat, mv


@pytest.mark.parametrize("mode,padding", MODES)
@pytest.mark.parametrize("feat_hw,mv_hw,block", [((7, 11), (9, 13), 4), ((6, 10), (12, 20), 4),
                                                 ((16, 12), (8, 6), 2), ((5, 5), (5, 5), 1)])
def test_op_matches_reference_bit_for_bit(mode, padding, feat_hw, mv_hw, block):
    feat, mv = random_case(feat_hw=feat_hw, mv_hw=mv_hw)
    expected = mv_warp_reference(feat, mv, mode=mode, padding=padding, block=block)
    assert torch.equal(mv_warp(feat, mv, mode=mode, padding=padding, block=block), expected)
    assert torch.equal(mv_warp_forward(feat, mv, mode=mode, padding=padding, block=block), expected)


def test_half_precision_features_keep_their_dtype():
    feat, mv = random_case()
    out = mv_warp(feat.half(), mv)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, mv_warp_reference(feat.half(), mv), atol=0, rtol=0)


@pytest.mark.parametrize("mode,padding", MODES)
def test_gradient_is_the_reference_gradient(mode, padding):
    feat, mv = random_case(seed=1)
    grad_out = torch.randn(feat.shape, generator=torch.Generator().manual_seed(2))
    ours = feat.clone().requires_grad_(True)
    (mv_warp(ours, mv, mode=mode, padding=padding) * grad_out).sum().backward()
    ref = feat.clone().requires_grad_(True)
    (mv_warp_reference(ref, mv, mode=mode, padding=padding) * grad_out).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad, atol=1e-5, rtol=1e-5)


def test_integer_shift_moves_the_map_exactly():
    # feature 6 x 10 of a 48 x 80 frame (stride 8): 16 px right and 8 px up = 2 and -1 feature pixels
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(1, 4, 6, 10, generator=g)
    mv = torch.zeros(1, 2, 12, 20)
    mv[:, 0], mv[:, 1] = 16.0, -8.0
    shifted = torch.zeros_like(feat)
    shifted[:, :, 1:, :-2] = feat[:, :, :-1, 2:]  # warped(y, x) = feat(y - 1, x + 2)
    bordered = feat[:, :, (torch.arange(6) - 1).clamp(0, 5)][:, :, :, (torch.arange(10) + 2).clamp(0, 9)]
    for mode in ("nearest", "bilinear"):
        assert torch.equal(mv_warp(feat, mv, mode=mode, padding="zeros"), shifted)
        assert torch.equal(mv_warp(feat, mv, mode=mode, padding="border"), bordered)


def test_nearest_rounds_halves_up_and_vectors_follow_their_block():
    # 1 x 4 feature of a 4 x 16 frame: block = 4 px = one feature pixel; dx = 2 px = half a pixel
    feat = torch.arange(4.0).view(1, 1, 1, 4)
    mv = torch.tensor([[[[2.0, -2.0, 6.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    out = mv_warp(feat, mv, mode="nearest", padding="zeros", block=4)
    # x + dx/4: 0.5 -> 1, 0.5 -> 1, 3.5 -> 4 (outside: 0), 3 -> 3
    assert out.flatten().tolist() == [1.0, 1.0, 0.0, 3.0]


def test_custom_op_survives_torch_export_as_one_node():
    class Warp(torch.nn.Module):
        def forward(self, feat, mv):
            return mv_warp(feat, mv) + 1

    feat, mv = random_case(n=1)
    program = torch.export.export(Warp(), (feat, mv))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert TORCH_OP in targets


def test_bad_operands_and_attributes_are_errors():
    feat, mv = random_case()
    with pytest.raises(ValueError, match="mv"):
        mv_warp(feat, mv[:1])
    with pytest.raises(ValueError, match="mode"):
        mv_warp(feat, mv, mode="cubic")
    with pytest.raises(ValueError, match="unknown attribute"):
        mv_warp(feat, mv, scale=2)


# ------------------------------------------------------------------ ONNX


class _Warp(torch.nn.Module):
    def __init__(self, mode: str, padding: str) -> None:
        super().__init__()
        self.mode, self.padding = mode, padding

    def forward(self, feat: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        return mv_warp(feat, mv, mode=self.mode, padding=self.padding)


def _run_onnx(model_proto: onnx.ModelProto, feeds: dict[str, np.ndarray], custom: bool) -> np.ndarray:
    options = ort.SessionOptions()
    if custom:
        from onnxruntime_extensions import get_library_path

        register_ort_op()
        options.register_custom_ops_library(get_library_path())
    session = ort.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("mode,padding", MODES)
def test_torch_portable_onnx_and_custom_onnx_agree(mode, padding):
    feat, mv = random_case(seed=4, feat_hw=(6, 10), mv_hw=(12, 20))
    expected = mv_warp_reference(feat, mv, mode=mode, padding=padding).numpy()
    feeds = {"feat": feat.numpy(), "mv": mv.numpy()}
    for flavor in ("custom", "portable"):
        with warnings.catch_warnings():  # the exporter's own deprecation notices
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(_Warp(mode, padding).eval(), (feat, mv), input_names=["feat", "mv"],
                                        dynamo=True, custom_translation_table=translation_table(flavor), verbose=False)
        proto = program.model_proto
        onnx.checker.check_model(proto, full_check=True)
        ops = {(n.domain, n.op_type) for n in proto.graph.node}
        if flavor == "custom":
            node = next(n for n in proto.graph.node if n.op_type == "MVWarp")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert node.domain == "vseg" and attrs["mode"] == mode.encode() and attrs["padding"] == padding.encode()
            assert attrs["block"] == 4 and attrs["plugin_namespace"] == b"vseg" and attrs["plugin_version"] == b"1"
            np.testing.assert_array_equal(_run_onnx(proto, feeds, custom=True), expected)
        else:
            assert ("", "GridSample") in ops and not any(domain == "vseg" for domain, _ in ops)
            np.testing.assert_allclose(_run_onnx(proto, feeds, custom=False), expected, atol=1e-5, rtol=0)


def test_translations_are_keyed_by_flavour():
    assert set(ONNX_TRANSLATIONS) == {"custom", "portable"}
    assert translation_table("portable") == {TORCH_OP: ONNX_TRANSLATIONS["portable"]}
    with pytest.raises(ValueError, match="flavour"):
        translation_table("tensorrt")


# ------------------------------------------------------------------ a real x264 stream

HEIGHT, WIDTH, SIDE, MARGIN = 96, 128, 40, 8
VELOCITY = (2, 1)  # px per frame (x, y) of the moving square


def _texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth texture uint8 [*shape, 3]: bicubic upsampling of coarse noise, one luminance pattern
    in a fixed tint (4:2:0 video keeps little chroma detail, and its loss depends on the shift)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, shape[0] // 6 + 2, shape[1] // 6 + 2, generator=g)
    luma = F.interpolate(coarse, size=shape, mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)
    tint = torch.tensor([1.0, 0.85, 0.7])
    return (luma[..., None] * tint * 200 + 25).round().byte().numpy()


def _scene(frames: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Frames of a textured square moving by VELOCITY over a static textured background,
    and the square's top-left corner (x, y) in each."""
    background, square = _texture((HEIGHT, WIDTH), 0), _texture((SIDE, SIDE), 1)
    images, corners = [], []
    for k in range(frames):
        x, y = 20 + VELOCITY[0] * k, 16 + VELOCITY[1] * k
        image = background.copy()
        image[y:y + SIDE, x:x + SIDE] = square
        images.append(image)
        corners.append((x, y))
    return images, corners


def test_accumulated_x264_vectors_warp_frame_0_onto_frame_k(tmp_path):
    images, corners = _scene(12)
    path = tmp_path / "moving.mp4"
    with H264Writer(path, WIDTH, HEIGHT, keyint=12, crf=12) as writer:
        for image in images:
            writer.write(image)
    motion = decode_with_motion(path)
    assert motion.keyframe.tolist() == [True] + [False] * 11
    key = torch.from_numpy(motion.frames[0]).permute(2, 0, 1)[None].float()
    for k in (1, 5, 11):
        mv = torch.from_numpy(motion.acc[k])[None]
        # the frame itself as the feature map: feat size = frame size, so the vectors apply 1:1
        warped = mv_warp(key, mv, mode="bilinear", padding="border")[0].permute(1, 2, 0).numpy()
        target = motion.frames[k].astype(np.float32)
        x, y = corners[k]
        inside = (slice(y + MARGIN, y + SIDE - MARGIN), slice(x + MARGIN, x + SIDE - MARGIN))
        warp_error = np.abs(warped[inside] - target[inside]).mean()
        still_error = np.abs(motion.frames[0][inside].astype(np.float32) - target[inside]).mean()
        assert warp_error < 4.0, (k, warp_error)
        assert warp_error < 0.25 * still_error, (k, warp_error, still_error)
