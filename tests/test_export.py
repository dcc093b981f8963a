"""ONNX export of the VOS models: wrappers, custom-op translations, onnxruntime kernels, parity, manifest.

Small model configs at 64x96 keep every export to a few seconds, and the file exports only
what differs: flavours differ only where a graph holds a vseg op (spvos's encode_key), so spvos
is exported whole in the custom flavour plus its encode_key in the portable one; lite whole
(through the CLI); stm's encode_value and decode are the very modules spvos exports (spvos is
an STM) and its key encoder is checked through the wrappers.
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from vseg.errors import InputError, VsegError
from vseg.export import export_vos, ort_custom_ops
from vseg.export.export_vos import export_engines, export_graph
from vseg.export.graphs import (
    DECISION,
    STATE_IN,
    STATE_OUT,
    engine_graphs,
    example_inputs,
)
from vseg.export.manifest import (
    check_model_matches,
    file_sha256,
    read_manifest,
    state_sha256,
)
from vseg.export.onnx_ops import (
    check_torch_op_signature,
    parser_attributes,
    translation_table,
)
from vseg.export.ort_custom_ops import create_session, make_session
from vseg.export.parity import (
    check_parity,
    first_frame_masks,
    record_vos_cases,
    synthetic_clip,
)
from vseg.models.registry import build_model, save_model
from vseg.ops import attribute_defaults
from vseg.ops.gated_sparse_conv import gated_sparse_conv2d
from vseg.ops.reference import gated_sparse_conv2d_reference

H, W, K, T = 64, 96, 2, 4
SMALL = {"key_widths": (16, 16, 32), "key_blocks": (1, 1, 1), "value_widths": (16, 16, 32), "decoder_widths": (32, 16, 16),
         "key_dim": 16, "value_dim": 32}
LITE_SMALL = {"width": 0.35, "value_width": 0.35, "decoder_widths": (16, 16, 16), "key_dim": 16, "value_dim": 16}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(name, **(LITE_SMALL if name == "lite" else SMALL)).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding them is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    return model


def vseg_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == "vseg"]


# -- the wrappers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stm", "lite"])
def test_wrappers_reproduce_the_stage_methods(name):
    model = small_model(name)
    graphs, inputs = engine_graphs(model), example_inputs(model, H, W, K, T)
    for engine, graph in graphs.items():
        assert tuple(inputs[engine]) == graph.input_names
    with torch.inference_mode():
        key = graphs["encode_key"](*inputs["encode_key"].values())
        ref = model.encode_key(*inputs["encode_key"].values())
        assert len(key) == len(graphs["encode_key"].output_names)
        for got, want in zip(key, ref):
            assert torch.equal(got, want)
        d = inputs["decode"]
        (logits,) = graphs["decode"](*d.values())
        assert logits.shape == (1, K + 1, H, W)
        assert torch.equal(logits, model.segment(*d.values()))
        e = inputs["encode_value"]
        assert torch.equal(graphs["encode_value"](*e.values())[0], model.encode_value(*e.values()))
        # an invalid object gets no probability
        d["object_valid"][0, 1] = False
        (logits,) = graphs["decode"](*d.values())
        assert torch.softmax(logits, 1)[0, 2].max() < 1e-6
    if name == "lite":
        assert graphs["encode_key"].output_names[-1] == "next_feat16"
        assert {"prev_feat16", "prev_fg"} <= set(graphs["encode_key"].input_names)


def test_spvos_wrapper_reproduces_encode_key_on_dense_and_sparse_frames():
    model = small_model("spvos")
    graph = engine_graphs(model)["encode_key"]
    inputs = example_inputs(model, H, W, K, T)["encode_key"]
    states = [n for n in graph.input_names if n.startswith(STATE_IN)]
    assert [n[len(STATE_IN):] for n in states] == model.gate_state_names()
    assert [n for n in graph.output_names if n.startswith(DECISION)] == [DECISION + n for n in model.gated_conv_names()]
    gen = torch.Generator().manual_seed(1)
    frame0 = torch.rand(1, 3, H, W, generator=gen)
    frame1 = (frame0 + 0.5 * torch.rand(1, 3, H, W, generator=gen) * (torch.rand(1, 1, H, W, generator=gen) > 0.6)).clamp(0, 1)
    n = len(states)
    with torch.inference_mode():
        ref0 = model.encode_key(frame0, None, dense=True)
        out0 = graph(frame0, torch.tensor([True]), torch.tensor([0.5]), *[inputs[s] for s in states])
        # keyframe: BatchNorm folded into the convs, so equal up to float rounding
        for got, want in zip(out0[:4] + out0[4:4 + n], tuple(ref0.features[:4]) + ref0.state):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(out0[4 + n:], ref0.decisions))
        # sparse frame from the model's own state: bit-exact, with the gates' own decisions
        ref1 = model.encode_key(frame1, ref0.state, 0.5, dense=False)
        out1 = graph(frame1, torch.tensor([False]), torch.tensor([0.5]), *ref0.state)
    for got, want in zip(out1, tuple(ref1.features[:4]) + ref1.state + ref1.decisions):
        assert torch.equal(got, want)
    kinds = torch.cat([d.flatten() for d in ref1.decisions]).unique().tolist()
    assert len(kinds) >= 2, kinds  # a mix of choices, not one everywhere
    assert graph.output_names[4:4 + n] == tuple(STATE_OUT + s for s in model.gate_state_names())


# -- GatedSparseConv2d: translations and onnxruntime kernel ---------------------------------------


class ManyGatedConvs(torch.nn.Module):
    """Gated convs over a spread of attributes (partial tiles included), one graph."""

    CASES = ({"tile": 4, "stride": 2, "coarse_mode": "bilinear", "activation": "relu"},
             {"tile": 8, "coarse_mode": "nearest", "dilation": 2, "padding": 2},
             {"tile": 16, "coarse_mode": "bilinear", "groups": 2})

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(8, 4 // c.get("groups", 1), 3, 3, generator=gen)) for c in self.CASES])
        self.biases = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(8, generator=gen)) for _ in self.CASES])

    def forward(self, x, d0, d1, d2, y0, y1, y2):
        return tuple(gated_sparse_conv2d(x, d, y, w, b, **c)
                     for c, d, y, w, b in zip(self.CASES, (d0, d1, d2), (y0, y1, y2), self.weights, self.biases))

    input_names = ("x", "d0", "d1", "d2", "y0", "y1", "y2")
    output_names = ("out0", "out1", "out2")


@pytest.fixture(scope="module")
def gated_convs(tmp_path_factory):
    module = ManyGatedConvs().eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 20, 36, generator=gen)  # 20 x 36 cuts tiles of 8 and 16
    out_sizes = ((10, 18), (20, 36), (20, 36))
    tiles = [c["tile"] for c in module.CASES]
    decisions = [torch.randint(0, 3, (1, 1, -(-h // t), -(-w // t)), generator=gen, dtype=torch.int32)
                 for (h, w), t in zip(out_sizes, tiles)]
    prevs = [torch.randn(1, 8, h, w, generator=gen) for h, w in out_sizes]
    inputs = dict(zip(module.input_names, (x, *decisions, *prevs)))
    folder = tmp_path_factory.mktemp("gated")
    models = {f: export_graph(module, inputs, folder / f"{f}.onnx", flavor=f) for f in ("custom", "portable")}
    return module, inputs, folder, models


def test_gated_conv_flavours_match_the_reference_in_onnxruntime(gated_convs):
    module, inputs, folder, models = gated_convs
    nodes = vseg_nodes(models["custom"])
    assert [n.op_type for n in nodes] == ["GatedSparseConv2d"] * 3 and not vseg_nodes(models["portable"])
    for node, case in zip(nodes, module.CASES):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        expected = {**attribute_defaults("GatedSparseConv2d"), **case, **parser_attributes()}
        assert attrs == {k: v.encode() if isinstance(v, str) else v for k, v in expected.items()}
    with torch.inference_mode():
        want = [gated_sparse_conv2d_reference(inputs["x"], d, y, w, b, **c).numpy() for c, d, y, w, b in zip(
            module.CASES, (inputs["d0"], inputs["d1"], inputs["d2"]), (inputs["y0"], inputs["y1"], inputs["y2"]),
            module.weights, module.biases)]
    feed = {k: v.numpy() for k, v in inputs.items()}
    for flavor in ("custom", "portable"):
        session = make_session(folder / f"{flavor}.onnx", ["CPUExecutionProvider"])
        for got, ref in zip(session.run(None, feed), want):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_custom_graph_without_the_extensions_is_one_clear_error(gated_convs, monkeypatch):
    _, _, folder, _ = gated_convs
    with pytest.raises(VsegError) as e:
        create_session(folder / "custom.onnx", ort.SessionOptions(), ["CPUExecutionProvider"])
    assert "vseg::GatedSparseConv2d" in str(e.value) and "\n" not in str(e.value)

    def no_extensions():
        raise VsegError("onnxruntime-extensions is not installed")

    monkeypatch.setattr(ort_custom_ops, "_extensions", no_extensions)
    monkeypatch.setattr(ort_custom_ops, "register_ort_ops", lambda: ("GatedSparseConv2d",))
    with pytest.raises(VsegError, match="onnxruntime-extensions"):
        make_session(folder / "custom.onnx")
    make_session(folder / "portable.onnx", ["CPUExecutionProvider"])  # needs no extension
    with pytest.raises(InputError, match="no such ONNX file"):
        make_session(folder / "missing.onnx")


def test_translation_table_follows_the_schema():
    op = torch.ops.vseg.gated_sparse_conv2d.default
    check_torch_op_signature(op, "GatedSparseConv2d")
    for flavor in ("custom", "portable"):
        assert op in translation_table(flavor)
    with pytest.raises(ValueError):
        translation_table("fast")


def test_mv_warp_exports_through_the_same_table_when_present(tmp_path):
    """AR-Seg's op plugs in by its module alone: same translation table, same make_session."""
    pytest.importorskip("vseg.ops.mv_warp_onnx")
    from vseg.ops.mv_warp import mv_warp
    from vseg.ops.reference import mv_warp_reference

    class Warp(torch.nn.Module):
        input_names, output_names = ("feat", "mv"), ("warped",)

        def forward(self, feat, mv):
            return (mv_warp(feat, mv, mode="bilinear", padding="border"),)

    gen = torch.Generator().manual_seed(3)
    inputs = {"feat": torch.randn(1, 4, 6, 8, generator=gen), "mv": 6 * torch.randn(1, 2, 6, 8, generator=gen)}
    want = mv_warp_reference(*inputs.values(), mode="bilinear", padding="border").numpy()
    for flavor in ("custom", "portable"):
        model = export_graph(Warp(), inputs, tmp_path / f"{flavor}.onnx", flavor=flavor)
        assert [n.op_type for n in vseg_nodes(model)] == (["MVWarp"] if flavor == "custom" else [])
        (got,) = make_session(tmp_path / f"{flavor}.onnx", ["CPUExecutionProvider"]).run(
            None, {k: v.numpy() for k, v in inputs.items()})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.onnx"):
        make_session(tmp_path / "junk.onnx")


# -- whole models -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spvos_exports(tmp_path_factory):
    """spvos exported whole in the custom flavour, and the engines whose graphs depend on the
    flavour (encode_key and the gated decoder's decode) in the portable one, checked on the same
    parity cases."""
    model = small_model("spvos")
    root = tmp_path_factory.mktemp("spvos")
    manifest = export_engines(model, root / "custom", flavor="custom", height=H, width=W, objects=K, capacity=T)
    graphs = engine_graphs(model)
    inputs = example_inputs(model, H, W, K, T)
    (root / "portable").mkdir()
    frames, ids = synthetic_clip(H, W, 3)
    cases = record_vos_cases(graphs, model, frames, *first_frame_masks(ids, K), T)
    sessions = {}
    for engine in ("encode_key", "decode"):
        export_graph(graphs[engine], inputs[engine], root / "portable" / f"{engine}.onnx", flavor="portable")
        sessions[engine] = make_session(root / "portable" / f"{engine}.onnx", ["CPUExecutionProvider"])
    portable = check_parity(graphs, sessions, {engine: cases[engine] for engine in sessions}, 1e-3)
    return model, root, manifest, portable


def test_spvos_exports_in_both_flavours_with_parity(spvos_exports):
    model, root, manifest, portable = spvos_exports
    gated = {"encode_key": len(model.gated_conv_names()), "decode": len(model.decoder_conv_names())}
    for flavor in ("custom", "portable"):
        for path in (root / flavor).glob("*.onnx"):
            graph = onnx.load(str(path))
            onnx.checker.check_model(graph, full_check=True)
            count = len(vseg_nodes(graph))
            assert count == (gated.get(path.stem, 0) if flavor == "custom" else 0), (flavor, path)
    assert manifest["custom_ops"] == ["vseg::GatedSparseConv2d"]
    parity = manifest["parity"]
    assert parity["engines"]["encode_key"]["cases"] == 3 and parity["engines"]["decode"]["cases"] == 2
    for key_parity in (parity["engines"]["encode_key"], portable["encode_key"]):
        assert set(key_parity["outputs"]) == set(engine_graphs(model)["encode_key"].output_names)
        for figures in key_parity["outputs"].values():
            assert figures.get("mismatches", 0) == 0 and figures.get("max_abs", 0) < 1e-3
    for engine_parity in (parity["engines"]["decode"], portable["decode"]):  # a dense and a sparse decode
        assert set(engine_parity["outputs"]) == set(engine_graphs(model)["decode"].output_names)
        assert engine_parity["outputs"]["logits"]["prob_max_abs"] < 1e-3
        for name, figures in engine_parity["outputs"].items():
            assert figures.get("mismatches", 0) == 0 and (name == "logits" or figures.get("max_abs", 0) < 1e-3), name
    decode_inputs = [i["name"] for i in manifest["engines"]["decode"]["inputs"]]
    assert decode_inputs[8:] == ["dense", "budget", *(STATE_IN + s for s in model.decoder_state_names())]
    assert set(parity["decision_shares"]) == {"encode_key", "decode"}  # both gated engines ran a sparse case
    for shares in parity["decision_shares"].values():
        assert abs(sum(shares.values()) - 1) < 1e-9, shares
    assert sum(v > 0 for v in parity["decision_shares"]["encode_key"].values()) >= 2
    names = [i["name"] for i in manifest["engines"]["encode_key"]["inputs"]]
    assert names[:3] == ["frame", "dense", "budget"] and names[3:] == [STATE_IN + s for s in model.gate_state_names()]
    dtypes = {i["name"]: i["dtype"] for i in manifest["engines"]["encode_key"]["inputs"]}
    assert dtypes["dense"] == "bool" and dtypes["budget"] == "float32"
    outs = {o["name"]: o for o in manifest["engines"]["encode_key"]["outputs"]}
    assert outs[DECISION + "layer1.0.conv1"]["dtype"] == "int32"


def test_lite_export_through_the_cli_writes_a_complete_manifest(tmp_path):
    from vseg.cli import app

    model = small_model("lite")
    weights = save_model(model, tmp_path / "lite.safetensors")
    out = tmp_path / "engines"
    r = CliRunner().invoke(app, ["export", "--model", "lite", "--weights", str(weights), "--height", str(H),
                                 "--width", str(W), "--objects", str(K), "--capacity", str(T), "--out", str(out),
                                 "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    manifest = read_manifest(out)
    assert manifest == json.loads((tmp_path / "m.json").read_text())
    assert manifest["model"] == "lite" and manifest["flavor"] == "custom" and manifest["opset"] == 18
    assert manifest["config"]["decoder_widths"] == [16, 16, 16] and manifest["config"]["use_stff"] is True
    assert manifest["weights"] == {"source": str(weights), "sha256": file_sha256(weights),
                                   "state_sha256": state_sha256(model)}
    assert (manifest["height"], manifest["width"], manifest["objects"], manifest["capacity"]) == (H, W, K, T)
    assert manifest["custom_ops"] == [] and set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime"}
    graphs = engine_graphs(model)
    for engine, entry in manifest["engines"].items():
        assert [i["name"] for i in entry["inputs"]] == list(graphs[engine].input_names)
        assert [o["name"] for o in entry["outputs"]] == list(graphs[engine].output_names)
        assert entry["sha256"] == file_sha256(out / entry["file"])
        proto = onnx.load(str(out / entry["file"]))
        onnx.checker.check_model(proto, full_check=True)
        assert not vseg_nodes(proto)
        assert {p.key: p.value for p in proto.metadata_props}["vseg.engine"] == engine
    key = manifest["engines"]["encode_key"]
    assert [i["name"] for i in key["inputs"]] == ["frame", "prev_feat16", "prev_fg"]
    assert key["outputs"][-1]["name"] == "next_feat16"
    decode = manifest["engines"]["decode"]
    assert {i["name"]: i["shape"] for i in decode["inputs"]}["mem_values"] == [1, K, 16, T, H // 16, W // 16]
    assert {i["name"]: i["dtype"] for i in decode["inputs"]}["mem_valid"] == "bool"
    assert decode["outputs"] == [{"name": "logits", "shape": [1, K + 1, H, W], "dtype": "float32"}]
    parity = manifest["parity"]
    assert parity["decision_shares"] is None and parity["engines"]["encode_value"]["cases"] == 3
    for engine in parity["engines"].values():
        for figures in engine["outputs"].values():
            assert figures["max_abs"] <= 1e-3 * max(1.0, figures["scale"])
    check_model_matches(manifest, model, out)
    with pytest.raises(InputError, match="other lite weights"):
        check_model_matches(manifest, small_model("lite", seed=1), out)
    with pytest.raises(InputError, match="not 'spvos'"):
        check_model_matches(manifest, small_model("spvos"), out)


def test_export_refuses_a_parity_error_past_the_tolerance(spvos_exports, tmp_path, monkeypatch):
    """Parity past the tolerance: one line naming engine and output, and no manifest. The
    graphs are the spvos fixture's (copied, not re-exported); onnxruntime's logits are skewed."""
    import shutil

    model, root, manifest, _ = spvos_exports

    def reuse_exports(graphs, inputs, out_dir, **options):
        for entry in manifest["engines"].values():
            shutil.copy(root / "custom" / entry["file"], out_dir / entry["file"])
        return manifest["engines"]

    class Skewed:
        """An onnxruntime session whose first object's logits are off by 0.05."""

        def __init__(self, session):
            self.session = session

        def run(self, names, feed):
            outputs = self.session.run(names, feed)
            for name, value in zip(names, outputs):
                if name == "logits":
                    value[:, 1] += 0.05
            return outputs

    real = export_vos.open_sessions
    monkeypatch.setattr(export_vos, "export_graphs", reuse_exports)
    monkeypatch.setattr(export_vos, "open_sessions", lambda *a, **k: {e: Skewed(s) for e, s in real(*a, **k).items()})
    (tmp_path / "manifest.json").write_text("{}")  # a stale manifest must not survive a failed export
    with pytest.raises(VsegError) as e:
        export_engines(model, tmp_path, height=H, width=W, objects=K, capacity=T)
    message = str(e.value)
    assert "\n" not in message and "engine decode, output logits" in message and "tolerance 0.001" in message
    assert not (tmp_path / "manifest.json").exists()


def test_export_option_errors_are_one_line(tmp_path):
    from vseg.cli import app

    r = CliRunner().invoke(app, ["export", "--model", "stm", "--random-init", "--weights", str(tmp_path / "w"),
                                 "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, VsegError) and "--random-init" in str(r.exception)
    r = CliRunner().invoke(app, ["export", "--model", "nope", "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, VsegError) and "stm, lite, spvos" in str(r.exception)
    with pytest.raises(VsegError, match="multiples of 16"):
        export_engines(small_model("stm"), tmp_path / "x", height=60, width=W)
    with pytest.raises(VsegError, match="flavour"):
        export_engines(small_model("stm"), tmp_path / "x", flavor="fast", height=H, width=W)
    with pytest.raises(InputError, match="not an engine folder"):
        read_manifest(tmp_path)
