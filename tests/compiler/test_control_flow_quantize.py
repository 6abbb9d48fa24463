"""Quantizing inside If branches (compiler/quantize/subgraphs.py) and 1-D convolutions as 2-D ones (rules/conv.py).

The model is VAD-like, as silero VAD is built: an If on the sample-rate input whose two branches hold their own
1-D conv front end and LSTM, with the LSTM state carried from one call to the next.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

import quantgraph
from quantgraph.compiler.quantize.stats import CalibrationStats

H = 16
CHUNK = 128


def _vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def _vad_model():
    rng = np.random.default_rng(7)

    def branch(tag, k1, s1):
        def t(name):
            return f"{name}_{tag}"
        inits = {t("w1"): rng.standard_normal((8, 1, k1)) / np.sqrt(k1), t("b1"): rng.standard_normal(8) * 0.1,
                 t("w2"): rng.standard_normal((H, 8, 3)) / np.sqrt(24), t("W"): rng.standard_normal((1, 4 * H, H)) / 4,
                 t("R"): rng.standard_normal((1, 4 * H, H)) / 4, t("B"): rng.standard_normal((1, 8 * H)) * 0.1,
                 t("wo"): rng.standard_normal((H, 1)) / 4}
        nodes = [h.make_node("Conv", ["audio", t("w1"), t("b1")], [t("c1")], kernel_shape=[k1], strides=[s1],
                             pads=[k1 // 2, k1 // 2]),
                 h.make_node("Relu", [t("c1")], [t("r1")]),
                 h.make_node("Conv", [t("r1"), t("w2")], [t("c2")], kernel_shape=[3], strides=[2], pads=[1, 1]),
                 h.make_node("Relu", [t("c2")], [t("r2")]),
                 h.make_node("Transpose", [t("r2")], [t("seq")], perm=[2, 0, 1]),
                 h.make_node("Gather", ["state", "i0"], [t("h0")], axis=0),
                 h.make_node("Gather", ["state", "i1"], [t("c0")], axis=0),
                 h.make_node("LSTM", [t("seq"), t("W"), t("R"), t("B"), "", t("h0"), t("c0")],
                             [t("Y"), t("Yh"), t("Yc")], hidden_size=H),
                 h.make_node("Concat", [t("Yh"), t("Yc")], [t("state_out")], axis=0),
                 h.make_node("Reshape", [t("Yh"), "flat"], [t("hv")]),
                 h.make_node("MatMul", [t("hv"), t("wo")], [t("logit")]),
                 h.make_node("Sigmoid", [t("logit")], [t("prob")])]
        return h.make_graph(nodes, tag, [], [_vi(t("prob"), TP.FLOAT, [1, 1]),
                                             _vi(t("state_out"), TP.FLOAT, [2, 1, H])],
                            initializer=[nh.from_array(v.astype(np.float32), k) for k, v in inits.items()])

    nodes = [h.make_node("Unsqueeze", ["x", "ax1"], ["audio"]),
             h.make_node("Equal", ["sr", "sr16k"], ["is16k"]),
             h.make_node("If", ["is16k"], ["prob", "state_n"], then_branch=branch("b16k", 9, 4),
                         else_branch=branch("b8k", 5, 2))]
    inits = {"ax1": np.array([1], np.int64), "sr16k": np.array(16000, np.int64), "i0": np.array([0], np.int64),
             "i1": np.array([1], np.int64), "flat": np.array([1, H], np.int64)}
    g = h.make_graph(nodes, "vad", [_vi("x", TP.FLOAT, [1, CHUNK]), _vi("state", TP.FLOAT, [2, 1, H]),
                                    _vi("sr", TP.INT64, [])],
                     [_vi("prob", TP.FLOAT, [1, 1]), _vi("state_n", TP.FLOAT, [2, 1, H])],
                     initializer=[nh.from_array(v, k) for k, v in inits.items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _audio(seed, chunks):
    rng = np.random.default_rng(seed)
    t = np.arange(CHUNK * chunks) / 16000
    voiced = np.sin(2 * np.pi * 5 * t) > 0  # bursts of tone in noise, as speech is to a VAD
    sig = 0.5 * np.sin(2 * np.pi * 440 * t) * voiced + 0.05 * rng.standard_normal(t.size)
    return sig.astype(np.float32).reshape(chunks, 1, CHUNK)


def _stream(run, chunks, sr):
    """Probabilities and states over a stream, the state of each call fed to the next."""
    state = np.zeros((2, 1, H), np.float32)
    out = []
    for x in chunks:
        p, state = run({"x": x, "state": state, "sr": np.array(sr, np.int64)})
        out += [np.ravel(p), np.ravel(state)]
    return np.concatenate(out)


def _sqnr(ref, got):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))


def _calibration(fp32, rates=(16000, 8000)):
    batches = []
    for sr in rates:
        state = np.zeros((2, 1, H), np.float32)
        for x in _audio(sr, 6):
            feeds = {"x": x, "state": state, "sr": np.array(sr, np.int64)}
            batches.append(feeds)
            _, state = fp32(feeds)
    return batches


@pytest.fixture(scope="module")
def vad():
    model = _vad_model()
    fp32 = quantgraph.compile(model)
    int8 = quantgraph.compile(model, quantize="int8", calibration=_calibration(fp32))
    return model, fp32, int8


def _ort(model):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)


@pytest.mark.parametrize("sr", [16000, 8000])
def test_vad_like_model_fp32_matches_onnxruntime_and_int8_keeps_30_db_inside_branches(vad, sr) -> None:
    model, fp32, int8 = vad
    test = _audio(1, 10)
    ours = _stream(fp32, test, sr)
    np.testing.assert_allclose(ours, _stream(_ort(model), test, sr), rtol=1e-4, atol=1e-5)
    assert _sqnr(ours, _stream(int8, test, sr)) >= 30


def test_each_branch_is_planned_and_compiled_int8(vad) -> None:
    _, fp32, int8 = vad
    plans = int8.quantization.subgraphs
    assert sorted(plans) == ["If_2.else_branch", "If_2.then_branch"]
    for plan in plans.values():  # both 1-D convs of each branch int8, their Relus fused into them
        assert plan.counts()["int8"].get("Conv") == 2
    assert int8.quantization.counts()["int8"]["Conv"] == 4  # the branches' counts are the model's
    assert "If_2.then_branch: " in int8.quantization.summary()
    (node,) = [ln for ln in int8.lowered if ln.node.op == "If"]
    for attr, compiled in node.packed.items():
        ops = compiled.graph.op_counts()
        assert ops.get("QConv") == 2 and "Conv" not in ops, (attr, ops)
    (fnode,) = [ln for ln in fp32.lowered if ln.node.op == "If"]
    assert "QConv" not in fnode.packed["then_branch"].graph.op_counts()


def test_quantized_branches_export_to_onnxruntime_and_save(vad, tmp_path) -> None:
    import onnx

    _, _, int8 = vad
    path = tmp_path / "vad_int8.onnx"
    int8.export_onnx(path)
    exported = onnx.load(path)
    (if_node,) = [n for n in exported.graph.node if n.op_type == "If"]
    branch_ops = {n.op_type for a in if_node.attribute for n in a.g.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= branch_ops
    test = _audio(2, 6)
    for sr in (16000, 8000):
        ours = _stream(int8, test, sr)
        assert _sqnr(ours, _stream(_ort(exported), test, sr)) >= 35
    int8.save(tmp_path / "vad.qg")
    loaded = quantgraph.load(tmp_path / "vad.qg")
    np.testing.assert_array_equal(_stream(loaded, test, 8000), _stream(int8, test, 8000))


def test_a_branch_no_calibration_batch_took_stays_fp32(vad, caplog) -> None:
    model, fp32, _ = vad
    with caplog.at_level(logging.WARNING, logger="quantgraph.compiler.quantize.subgraphs"):
        int8 = quantgraph.compile(model, quantize="int8", calibration=_calibration(fp32, rates=(16000,)))
    assert "no calibration batch took else_branch of If 'If_2'" in caplog.text
    assert list(int8.quantization.subgraphs) == ["If_2.then_branch"]
    (node,) = [ln for ln in int8.lowered if ln.node.op == "If"]
    assert "QConv" not in node.packed["else_branch"].graph.op_counts()
    test = _audio(3, 4)
    np.testing.assert_allclose(_stream(int8, test, 8000), _stream(fp32, test, 8000), rtol=1e-5, atol=1e-6)


def test_calibration_stats_leave_branches_fp32(vad) -> None:
    model, fp32, _ = vad
    stats = quantgraph.calibrate(model, _calibration(fp32), progress=False)
    assert isinstance(stats, CalibrationStats)
    int8 = quantgraph.compile(model, quantize="int8", calibration=stats)
    assert int8.quantization.subgraphs == {}


def test_exclude_reaches_nodes_inside_branches(vad) -> None:
    model, fp32, _ = vad
    int8 = quantgraph.compile(model, quantize="int8", calibration=_calibration(fp32), exclude=["Conv"])
    for plan in int8.quantization.subgraphs.values():
        assert "Conv" not in plan.counts()["int8"]


# -- 1-D convolutions -----------------------------------------------------------------------------------------
def _conv1d_model(group=1, dilation=1, auto_pad=None):
    rng = np.random.default_rng(group * 10 + dilation)
    c = 8
    attrs = dict(kernel_shape=[3], dilations=[dilation], group=group)
    attrs.update(auto_pad=auto_pad) if auto_pad else attrs.update(pads=[dilation, dilation])
    inits = {"w1": rng.standard_normal((c, c // group, 3)), "b1": rng.standard_normal(c) * 0.1,
             "w2": rng.standard_normal((4, c, 1)), "scale": rng.uniform(0.5, 2, c), "bias": rng.standard_normal(c),
             "mean": rng.standard_normal(c) * 0.1, "var": rng.uniform(0.5, 2, c)}
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], **attrs),
             h.make_node("BatchNormalization", ["c1", "scale", "bias", "mean", "var"], ["bn"]),
             h.make_node("LeakyRelu", ["bn"], ["r1"], alpha=0.1),
             h.make_node("Conv", ["r1", "w2"], ["y"], strides=[2])]
    g = h.make_graph(nodes, "c1d", [_vi("x", TP.FLOAT, ["N", c, 20])], [_vi("y", TP.FLOAT, None)],
                     initializer=[nh.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("group,dilation,auto_pad", [(1, 1, None), (2, 2, None), (8, 1, "SAME_UPPER")])
def test_1d_convolutions_run_the_2d_kernels_and_match_onnxruntime(group, dilation, auto_pad) -> None:
    model = _conv1d_model(group, dilation, auto_pad)
    x = np.random.default_rng(0).standard_normal((2, 8, 20)).astype(np.float32)
    want = _ort(model)({"x": x})[0]
    for level in (2, 3):
        compiled = quantgraph.compile(model, opt_level=level)
        np.testing.assert_allclose(compiled(x)[0], want, rtol=1e-4, atol=1e-4)
        ops = compiled.graph.op_counts()
        ops.pop("Transpose", None)  # O3: NHWC around the chain
        # one Unsqueeze in front of the chain and one Squeeze after it: the inner pair cancelled
        assert ops == {"FusedConv": 2, "Unsqueeze": 1, "Squeeze": 1}, ops
    int8 = quantgraph.compile(model, quantize="int8", calibration=[x])
    assert int8.quantization.counts()["int8"].get("Conv") == 2
    assert _sqnr(want, int8(x)[0]) >= 25


# -- Loop and Scan bodies -------------------------------------------------------------------------------------
def _scan_cell_model(k=24, hidden=16):
    """h_t = tanh(x_t @ W + h_{t-1} @ R + b) as a Scan body reading W, R, b from the outer graph."""
    rng = np.random.default_rng(8)
    body = h.make_graph([h.make_node("MatMul", ["xt", "W"], ["xw"]), h.make_node("MatMul", ["h", "R"], ["hr"]),
                         h.make_node("Add", ["xw", "hr"], ["s"]), h.make_node("Add", ["s", "b"], ["sb"]),
                         h.make_node("Tanh", ["sb"], ["h2"]), h.make_node("Identity", ["h2"], ["y"])],
                        "cell", [_vi("h", TP.FLOAT, [2, hidden]), _vi("xt", TP.FLOAT, [2, k])],
                        [_vi("h2", TP.FLOAT, [2, hidden]), _vi("y", TP.FLOAT, [2, hidden])])
    inits = {"W": rng.standard_normal((k, hidden)) / np.sqrt(k), "R": rng.standard_normal((hidden, hidden)) / 8,
             "b": rng.standard_normal(hidden) * 0.1}
    g = h.make_graph([h.make_node("Scan", ["h0", "x"], ["hT", "ys"], body=body, num_scan_inputs=1)], "m",
                     [_vi("h0", TP.FLOAT, [2, hidden]), _vi("x", TP.FLOAT, [10, 2, k])],
                     [_vi("hT", TP.FLOAT, [2, hidden]), _vi("ys", TP.FLOAT, [10, 2, hidden])],
                     initializer=[nh.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_scan_body_is_quantized_on_the_values_of_every_step() -> None:
    model = _scan_cell_model()
    rng = np.random.default_rng(9)

    def batch():
        return {"h0": np.zeros((2, 16), np.float32), "x": rng.standard_normal((10, 2, 24)).astype(np.float32)}
    int8 = quantgraph.compile(model, quantize="int8", calibration=[batch() for _ in range(4)])
    (key,) = int8.quantization.subgraphs
    assert key == "Scan_0.body" and int8.quantization.counts()["int8"].get("MatMul") == 2
    (node,) = [ln for ln in int8.lowered if ln.node.op == "Scan"]
    assert node.kernel.name == "compiled_subgraphs" and "QMatMul" in node.packed["body"].graph.op_counts()
    feeds = batch()
    want = _ort(model)(feeds)
    for got, w in zip(int8(feeds), want):
        assert _sqnr(w, got) >= 30
