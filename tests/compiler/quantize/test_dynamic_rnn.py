"""compile(quantize="int8") turns LSTM/GRU with constant weights into QLSTM/QGRU (dynamic int8), checked against
onnxruntime; exclude= / precision= keep them fp32, and nodes the int8 op cannot express stay fp32 with a reason."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantgraph
from quantgraph.compiler.quantize.dynamic_rnn import DECISION

pytestmark = pytest.mark.rungs
SEQ, BATCH, INP, HID = 10, 2, 8, 16


def rnn_model(op: str, lens: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = 4 if op == "LSTM" else 3
    inits = [numpy_helper.from_array((rng.standard_normal((1, g * HID, INP)) * 0.4).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((1, g * HID, HID)) * 0.4).astype(np.float32), "R"),
             numpy_helper.from_array((rng.standard_normal((1, 2 * g * HID)) * 0.4).astype(np.float32), "B")]
    ins = ["X", "W", "R", "B"]
    if lens:
        inits.append(numpy_helper.from_array(np.array([SEQ, 4], np.int32), "lens"))
        ins.append("lens")
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, ins, outs, name="rnn", hidden_size=HID)
    graph = helper.make_graph(
        [node], "rnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, (SEQ, BATCH, INP))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (SEQ, 1, BATCH, HID))]
        + [helper.make_tensor_value_info(t, TensorProto.FLOAT, (1, BATCH, HID)) for t in outs[1:]], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model, rng.standard_normal((SEQ, BATCH, INP)).astype(np.float32)


def ort_run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})


def kernels(cm) -> list[str]:
    return [k for p in cm.plans.values() for k in p.kernels]


def sqnr_db(test: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((test - ref.astype(np.float64)) ** 2).sum()))


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_compile_rnn_fp32_and_int8_match_onnxruntime(op: str) -> None:
    model, x = rnn_model(op)
    want = ort_run(model, x)
    cm = quantgraph.compile(model)
    for got, ref in zip(cm(x), want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert kernels(cm) == ["lstm_gru_f32"]
    q = quantgraph.compile(model, quantize="int8", calibration=[x])
    d = q.quantization.decisions["rnn"]
    assert (d.precision, d.reason) == ("int8", DECISION)
    for got, ref in zip(q(x), want):
        assert sqnr_db(got, ref) > 30
    assert kernels(q) == ["qlstm_qgru_u8s8"]


@pytest.mark.parametrize("how", ["exclude", "precision"])
def test_exclude_and_precision_keep_rnn_fp32(how: str) -> None:
    model, x = rnn_model("LSTM")
    kw = {"exclude": ["rnn"]} if how == "exclude" else {"precision": {"rnn": "fp32"}}
    q = quantgraph.compile(model, quantize="int8", calibration=[x], **kw)
    assert q.quantization.decisions["rnn"].precision == "fp32"
    np.testing.assert_allclose(q(x)[0], ort_run(model, x)[0], rtol=1e-5, atol=1e-5)
    assert kernels(q) == ["lstm_gru_f32"]


def test_rnn_with_sequence_lens_stays_fp32_with_reason() -> None:
    model, x = rnn_model("GRU", lens=True)
    q = quantgraph.compile(model, quantize="int8", calibration=[x])
    d = q.quantization.decisions["rnn"]
    assert d.precision == "fp32" and "sequence_lens" in d.reason
    np.testing.assert_allclose(q(x)[0], ort_run(model, x)[0], rtol=1e-5, atol=1e-5)


def test_int8_rnn_exports_to_onnx_with_int8_weights(tmp_path) -> None:
    import onnx

    model, x = rnn_model("GRU")
    q = quantgraph.compile(model, quantize="int8", calibration=[x])
    path = tmp_path / "gru_int8.onnx"
    q.export_onnx(path)
    exported = onnx.load(str(path))
    assert [n.op_type for n in exported.graph.node].count("GRU") == 1
    assert any(i.data_type == onnx.TensorProto.INT8 for i in exported.graph.initializer)
    # the exported graph runs the int8-rounded weights in float: within the activation quantization of ours
    assert sqnr_db(q(x)[0], ort_run(exported, x)[0]) > 30
