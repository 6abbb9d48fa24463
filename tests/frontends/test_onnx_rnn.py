"""RNN / GRU / LSTM import: options the ONNX conformance cases leave out, compared with onnxruntime."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import quantgraph
from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.importer import import_onnx

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
SEQ, BATCH, FEAT, HID = 5, 3, 4, 6


def _model(op: str, opset: int, num_dir: int, optional: dict[str, np.ndarray], n_out: int = 2,
           **attrs: Any) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node model: X is a graph input, W/R and the given optional inputs are initializers."""
    rng = np.random.default_rng(0)
    g = GATES[op] * HID
    inits = {"W": rng.standard_normal((num_dir, g, FEAT)).astype(np.float32) * 0.5,
             "R": rng.standard_normal((num_dir, g, HID)).astype(np.float32) * 0.5, **optional}
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][:6 + 2 * (op == "LSTM")]
    inputs = [k if k in inits or k == "X" else "" for k in order]
    while inputs[-1] == "":
        inputs.pop()
    outs = ["Y", "Y_h", "Y_c"][:n_out]
    node = helper.make_node(op, inputs, outs, hidden_size=HID, **attrs)
    x_shape = [BATCH, SEQ, FEAT] if attrs.get("layout") else [SEQ, BATCH, FEAT]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    x = rng.standard_normal(x_shape).astype(np.float32)
    return model, {"X": x}


def _compare_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = quantgraph.compile(model, opt_level=0)(*feeds.values())
    assert len(got) == len(want)
    for g_, w in zip(got, want):
        assert g_.dtype == w.dtype and g_.shape == w.shape
        np.testing.assert_allclose(g_, w, rtol=1e-4, atol=1e-5)


def _extras(op: str, num_dir: int, with_lens: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    g = GATES[op] * HID
    out = {"B": rng.standard_normal((num_dir, 2 * g)).astype(np.float32) * 0.3,
           "initial_h": rng.standard_normal((num_dir, BATCH, HID)).astype(np.float32)}
    if with_lens:
        out["sequence_lens"] = np.array([5, 2, 3], np.int32)
    if op == "LSTM":
        out["initial_c"] = rng.standard_normal((num_dir, BATCH, HID)).astype(np.float32)
        out["P"] = rng.standard_normal((num_dir, 3 * HID)).astype(np.float32) * 0.3
    return out


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sequence_lens_initial_states_match_onnxruntime(op: str, direction: str) -> None:
    nd = 2 if direction == "bidirectional" else 1
    model, feeds = _model(op, 22, nd, _extras(op, nd), n_out=3 if op == "LSTM" else 2, direction=direction)
    _compare_ort(model, feeds)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_opset7_converter_matches_onnxruntime(op: str) -> None:
    model, feeds = _model(op, 7, 2, _extras(op, 2, with_lens=False), direction="bidirectional")
    _compare_ort(model, feeds)


def test_gru_linear_before_reset_matches_onnxruntime() -> None:
    model, feeds = _model("GRU", 14, 1, _extras("GRU", 1), linear_before_reset=1)
    _compare_ort(model, feeds)


def test_lstm_clip_and_input_forget_match_onnxruntime() -> None:
    model, feeds = _model("LSTM", 14, 1, _extras("LSTM", 1), n_out=3, clip=0.4, input_forget=1)
    _compare_ort(model, feeds)


@pytest.mark.parametrize("op, acts, alpha, beta", [
    ("RNN", ["Relu"], None, None),
    ("RNN", ["LeakyRelu"], [0.3], None),
    ("RNN", ["ThresholdedRelu"], [0.2], None),
    ("RNN", ["ScaledTanh"], [1.5], [0.7]),
    ("RNN", ["Affine"], [0.5], [0.1]),
    ("RNN", ["Elu"], [0.8], None),
    ("RNN", ["Softsign"], None, None),
    ("RNN", ["Softplus"], None, None),
    ("GRU", ["HardSigmoid", "Softsign"], [0.3], [0.4]),
    ("LSTM", ["HardSigmoid", "LeakyRelu", "Tanh"], [0.3, 0.2], [0.45]),
])
def test_activation_parameters_match_onnxruntime(op: str, acts: list[str], alpha: list[float] | None,
                                                 beta: list[float] | None) -> None:
    attrs: dict[str, Any] = {"activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    model, feeds = _model(op, 14, 1, _extras(op, 1), **attrs)
    _compare_ort(model, feeds)


def test_layout_1_is_batch_major_transpose_of_layout_0() -> None:
    # onnxruntime does not implement layout=1, so compare with the same model in layout 0
    extras = _extras("LSTM", 2, with_lens=False)
    m0, f0 = _model("LSTM", 22, 2, extras, n_out=3, direction="bidirectional")
    batch_major = {k: (v.transpose(1, 0, 2) if k.startswith("initial") else v) for k, v in extras.items()}
    m1, _ = _model("LSTM", 22, 2, batch_major, n_out=3, direction="bidirectional", layout=1)
    y0, h0, c0 = quantgraph.compile(m0, opt_level=0)(f0["X"])
    y1, h1, c1 = quantgraph.compile(m1, opt_level=0)(f0["X"].transpose(1, 0, 2))
    np.testing.assert_allclose(y1, y0.transpose(2, 0, 1, 3), rtol=1e-6)
    np.testing.assert_allclose(h1, h0.transpose(1, 0, 2), rtol=1e-6)
    np.testing.assert_allclose(c1, c0.transpose(1, 0, 2), rtol=1e-6)


def test_unsupported_activation_fails_at_import() -> None:
    model, _ = _model("RNN", 14, 1, {}, activations=["Gelu"])
    with pytest.raises(UnsupportedOpError, match="activation 'Gelu' is not supported"):
        import_onnx(model)


def test_only_y_h_requested() -> None:
    model, feeds = _model("GRU", 22, 1, {}, n_out=2)
    model.graph.node[0].output[0] = ""
    del model.graph.output[0]
    _compare_ort(model, feeds)
