"""onnxruntime's quantized contrib ops (domain com.microsoft) import as QDQ and match onnxruntime.

Every op is built as a one-node model, run in onnxruntime, and in quantgraph on the reference interpreter
(opt_level 0) and on the compiled int8 path (the default opt level). Integer outputs may differ by one quantization
level: onnxruntime requantizes elementwise ops, pooling and concat through its own float order (lookup tables,
MLAS loops), the QDQ graph through ONNX's. Float outputs are allclose. onnxruntime's u8 x s8 products are exact
only with VNNI (without it `vpmaddubsw` saturates pairs of products to int16), so the matmul cases are compared only
on such hosts. The end-to-end cases quantize small float models with onnxruntime's own quantize_static (QOperator)
and quantize_dynamic.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantgraph
from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.dtypes import onnx_dtype
from quantgraph.kernels import target

ort = pytest.importorskip("onnxruntime")

MS = "com.microsoft"
ORT_PRODUCTS_EXACT = target.has("avx512vnni") or target.has("avxvnni")
NO_VNNI = "onnxruntime's u8 x s8 products saturate to int16 without VNNI (vpmaddubsw); no exact oracle on this host"
RNG = np.random.default_rng(13)


def _model(nodes: Sequence[onnx.NodeProto], feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray],
           outputs: dict[str, int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "g",
        [helper.make_tensor_value_info(k, onnx_dtype(str(v.dtype)), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(k, t, None) for k, t in outputs.items()],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model


def _node(op: str, inputs: Sequence[str], outputs: Sequence[str] = ("y",), **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), domain=MS, name=f"{op.lower()}_0", **attrs)


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _close(got: np.ndarray, want: np.ndarray, what: str, levels: int = 1, rtol: float = 1e-5,
           atol: float = 1e-5) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {got.dtype}{got.shape}, " \
                                                                f"want {want.dtype}{want.shape}"
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * max(1.0, float(np.abs(want).max())),
                                   err_msg=what)
    else:
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        assert diff.max() <= levels, f"{what}: {int((diff > levels).sum())} values off by up to {diff.max()} levels"


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], int8: str | None = None, levels: int = 1,
           **tol: float) -> list[np.ndarray]:
    """quantgraph's interpreter and compiled int8 path against onnxruntime; returns onnxruntime's outputs.

    ``int8``: the int8 op the compiled graph must run (the QDQ form was realized, not left in float)."""
    want = _ort(model, feeds)
    for opt in (0, None):
        compiled = quantgraph.compile(model) if opt is None else quantgraph.compile(model, opt_level=opt)
        if opt is None and int8:
            ops = [ln.node.op for ln in compiled.lowered]
            assert int8 in ops, f"compiled graph runs {ops}; expected {int8}"
        got = compiled(*feeds.values())
        for i, (gv, wv) in enumerate(zip(got, want)):
            _close(np.asarray(gv), wv, f"output {i} at opt_level {opt or 'default'}", levels, **tol)
    return want


def _q(dtype: str, *shape: int) -> np.ndarray:
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return RNG.integers(lo, hi, shape).astype(dtype)


def _zp(dtype: str, value: int) -> np.ndarray:
    return np.array(value if dtype == "uint8" else value - 128, dtype)


def _scale(v: float) -> np.ndarray:
    return np.array(v, np.float32)


def _elem(dtype: str) -> int:
    return TensorProto.UINT8 if dtype == "uint8" else TensorProto.INT8


# -- elementwise --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("broadcast", [False, True])
def test_qlinear_binary(op: str, dtype: str, broadcast: bool) -> None:
    a, b = _q(dtype, 2, 3, 4, 5), (_q(dtype, 4, 5) if broadcast else _q(dtype, 2, 3, 4, 5))
    inits = {"as": _scale(0.031), "az": _zp(dtype, 121), "bs": _scale(0.047), "bz": _zp(dtype, 140),
             "cs": _scale(0.09 if op == "QLinearAdd" else 0.6), "cz": _zp(dtype, 128)}
    model = _model([_node(op, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"])], {"a": a, "b": b}, inits,
                   {"y": _elem(dtype)})
    # the int8 add takes equal shapes; a broadcasting add, and Mul, stay float between their DQ and Q
    _check(model, {"a": a, "b": b}, int8="QAdd" if op == "QLinearAdd" and not broadcast else None)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_qlinear_add_without_output_zero_point(dtype: str) -> None:
    # NOTE: onnxruntime's type inference refuses omitted A/B zero points; the trailing C_zero_point may be left out
    a, b = _q(dtype, 3, 8), _q(dtype, 3, 8)
    inits = {"as": _scale(0.02), "az": _zp(dtype, 100), "bs": _scale(0.03), "bz": _zp(dtype, 150), "cs": _scale(0.05)}
    model = _model([_node("QLinearAdd", ["a", "as", "az", "b", "bs", "bz", "cs"])], {"a": a, "b": b}, inits,
                   {"y": _elem(dtype)})
    _check(model, {"a": a, "b": b}, int8="QAdd")


@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.13})])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_qlinear_activation(op: str, attrs: dict, dtype: str) -> None:
    x = np.arange(256).astype(np.int64)
    x = (x if dtype == "uint8" else x - 128).astype(dtype).reshape(2, 8, 16)  # every input value
    inits = {"xs": _scale(0.05), "xz": _zp(dtype, 130), "ys": _scale(1 / 255 if op == "QLinearSigmoid" else 0.04),
             "yz": _zp(dtype, 0 if op == "QLinearSigmoid" else 100)}
    model = _model([_node(op, ["x", "xs", "xz", "ys", "yz"], **attrs)], {"x": x}, inits, {"y": _elem(dtype)})
    _check(model, {"x": x})


def test_omitted_output_zero_point_keeps_int8() -> None:
    # no onnxruntime oracle: it infers uint8 here, and its lookup-table activations abort without zero points
    x = _q("int8", 4, 16)
    model = _model([_node("QLinearLeakyRelu", ["x", "xs", "xz", "ys"])], {"x": x},
                   {"xs": _scale(0.05), "xz": np.array(3, np.int8), "ys": _scale(0.04)}, {"y": TensorProto.INT8})
    y = np.asarray(quantgraph.compile(model, opt_level=0)(x)[0])
    f = (x.astype(np.float32) - 3) * np.float32(0.05)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, np.clip(np.rint(np.where(f < 0, f * np.float32(0.01), f) / np.float32(0.04)),
                                             -128, 127).astype(np.int8))


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_qlinear_concat(dtype: str) -> None:
    a, b, c = _q(dtype, 2, 3, 4), _q(dtype, 2, 5, 4), _q(dtype, 2, 1, 4)
    inits = {"ys": _scale(0.05), "yz": _zp(dtype, 128), "as": _scale(0.05), "az": _zp(dtype, 128),  # a: a copy
             "bs": _scale(0.031), "bz": _zp(dtype, 110), "cs": _scale(0.12), "cz": _zp(dtype, 140)}
    node = _node("QLinearConcat", ["ys", "yz", "a", "as", "az", "b", "bs", "bz", "c", "cs", "cz"], axis=1)
    _check(_model([node], {"a": a, "b": b, "c": c}, inits, {"y": _elem(dtype)}), {"a": a, "b": b, "c": c},
           int8="QConcat")


# -- pooling ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 0},
    {"kernel_shape": [2, 3], "pads": [0, 1, 1, 0], "count_include_pad": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"},
], ids=["pads", "include_pad", "ceil", "same_upper"])
def test_qlinear_average_pool(dtype: str, channels_last: int, attrs: dict) -> None:
    x = _q(dtype, 2, 7, 9, 3) if channels_last else _q(dtype, 2, 3, 7, 9)
    inits = {"xs": _scale(0.05), "xz": _zp(dtype, 120), "ys": _scale(0.03), "yz": _zp(dtype, 131)}
    node = _node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], channels_last=channels_last, **attrs)
    _check(_model([node], {"x": x}, inits, {"y": _elem(dtype)}), {"x": x}, int8="QAveragePool")


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("rank", [3, 4])
def test_qlinear_global_average_pool(dtype: str, channels_last: int, rank: int) -> None:
    x = _q(dtype, 2, 6, 5, 8) if channels_last else _q(dtype, 2, 8, 6, 5)
    x = x.reshape(2, 30, 8) if rank == 3 and channels_last else x.reshape(2, 8, 30) if rank == 3 else x
    inits = {"xs": _scale(0.05), "xz": _zp(dtype, 120), "ys": _scale(0.011), "yz": _zp(dtype, 126)}
    node = _node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], channels_last=channels_last)
    want = _check(_model([node], {"x": x}, inits, {"y": _elem(dtype)}), {"x": x}, int8="QAveragePool")[0]
    assert want.shape == ((2,) + (1,) * (rank - 2) + (8,) if channels_last else (2, 8) + (1,) * (rank - 2))


# -- matmuls ------------------------------------------------------------------------------------------------------
def _needs_vnni() -> None:
    if not ORT_PRODUCTS_EXACT:
        pytest.skip(NO_VNNI)


@pytest.mark.parametrize("case", ["u8s8_q", "u8u8_float", "s8s8_transA_alpha", "u8s8_perchannel_transB",
                                  "u8s8_noC_float"])
def test_qgemm(case: str) -> None:
    _needs_vnni()
    at = "int8" if case.startswith("s8") else "uint8"
    bt = "uint8" if case.startswith("u8u8") else "int8"
    trans_a, trans_b = int("transA" in case), int("transB" in case)
    alpha = 0.5 if "alpha" in case else 1.0
    M, K, N = 5, 37, 11
    a = _q(at, K, M) if trans_a else _q(at, M, K)
    b = _q(bt, N, K) if trans_b else _q(bt, K, N)
    per_ch = "perchannel" in case
    inits = {"as": _scale(0.02), "az": _zp(at, 119), "b": b,
             "bs": (RNG.uniform(0.002, 0.01, N).astype(np.float32) if per_ch else _scale(0.006)),
             "bz": (np.zeros(N, bt) if per_ch else _zp(bt, 128 if bt == "int8" else 131)),
             "c": RNG.integers(-3000, 3000, N).astype(np.int32)}
    ins = ["a", "as", "az", "b", "bs", "bz", "" if "noC" in case else "c"]
    outputs = {"y": TensorProto.FLOAT}
    if not case.endswith("float"):
        inits.update(ys=_scale(0.35), yz=_zp(at, 125))
        ins += ["ys", "yz"]
        outputs = {"y": _elem(at)}
    node = _node("QGemm", ins, alpha=alpha, transA=trans_a, transB=trans_b)
    _check(_model([node], {"a": a}, inits, outputs), {"a": a}, int8="QMatMul")


@pytest.mark.parametrize("case", ["u8s8_bias", "u8u8_zp", "u8s8_percolumn", "batched", "runtime_scale"])
def test_matmul_integer_to_float(case: str) -> None:
    """Constant B and scales import as QDQ (one float-output QMatMul); a run-time scale as MatMulInteger + Cast +
    Mul."""
    _needs_vnni()
    bt = "uint8" if "u8u8" in case else "int8"
    a = _q("uint8", 2, 3, 6, 20) if case == "batched" else _q("uint8", 6, 20)
    n = 9
    inits: dict[str, np.ndarray] = {"b": _q(bt, 20, n), "as": _scale(0.013), "az": _zp("uint8", 117)}
    inits["bs"] = RNG.uniform(0.002, 0.01, n).astype(np.float32) if "percolumn" in case else _scale(0.004)
    inits["bz"] = _zp(bt, 133) if bt == "uint8" else np.zeros(n if "percolumn" in case else (), np.int8)
    inits["bias"] = RNG.standard_normal(n).astype(np.float32)
    ins = ["a", "b", "as", "bs", "az", "bz", "bias" if "bias" in case or case in ("batched", "runtime_scale") else ""]
    feeds = {"a": a}
    if case == "runtime_scale":
        feeds["as"] = inits.pop("as")
    node = _node("MatMulIntegerToFloat", ins)
    _check(_model([node], feeds, inits, {"y": TensorProto.FLOAT}), feeds, int8="QMatMul")


@pytest.mark.parametrize("case", ["s8_bias", "u8_zp", "no_zp", "batched"])
def test_dynamic_quantize_matmul(case: str) -> None:
    _needs_vnni()
    bt = "uint8" if case == "u8_zp" else "int8"
    a = (RNG.standard_normal((2, 5, 24)) if case == "batched" else RNG.standard_normal((7, 24)) * 3 + 1)
    a = a.astype(np.float32)
    inits: dict[str, np.ndarray] = {"b": _q(bt, 24, 10), "bs": _scale(0.01)}
    ins = ["a", "b", "bs"]
    if case != "no_zp":
        inits["bz"] = _zp(bt, 125)
        ins.append("bz")
    if case in ("s8_bias", "batched"):
        inits["bias"] = RNG.standard_normal(10).astype(np.float32)
        ins += [""] * (4 - len(ins)) + ["bias"]
    node = _node("DynamicQuantizeMatMul", ins)
    _check(_model([node], {"a": a}, inits, {"y": TensorProto.FLOAT}), {"a": a}, int8="QMatMul")


# -- LSTM ---------------------------------------------------------------------------------------------------------
def _lstm_model(direction: str, per_channel: bool, wt: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    D = 2 if direction == "bidirectional" else 1
    T, B, I, H = 6, 3, 10, 8
    x = RNG.standard_normal((T, B, I)).astype(np.float32)
    shape = (D, 4 * H) if per_channel else (D,)
    inits = {"W": _q(wt, D, I, 4 * H), "R": _q(wt, D, H, 4 * H),
             "B": (RNG.standard_normal((D, 8 * H)) * 0.1).astype(np.float32),
             "h0": (RNG.standard_normal((D, B, H)) * 0.5).astype(np.float32),
             "c0": (RNG.standard_normal((D, B, H)) * 0.5).astype(np.float32),
             "ws": RNG.uniform(0.002, 0.004, shape).astype(np.float32),
             "wz": np.full(shape, 128 if wt == "uint8" else 0, wt),
             "rs": RNG.uniform(0.002, 0.004, shape).astype(np.float32),
             "rz": np.full(shape, 128 if wt == "uint8" else 0, wt)}
    feeds = {"x": x}
    if direction == "bidirectional":  # ragged batch: steps past a sequence's length give zeros
        feeds["lens"] = np.array([6, 4, 5], np.int32)
    node = _node("DynamicQuantizeLSTM", ["x", "W", "R", "B", "lens" if "lens" in feeds else "", "h0", "c0", "", "ws",
                                         "wz", "rs", "rz"], ["y", "y_h", "y_c"], hidden_size=H, direction=direction)
    return _model([node], feeds, inits, {k: TensorProto.FLOAT for k in ("y", "y_h", "y_c")}), feeds


@pytest.mark.parametrize("direction,per_channel,wt", [("forward", False, "int8"), ("bidirectional", True, "int8"),
                                                      ("reverse", False, "uint8")])
def test_dynamic_quantize_lstm(direction: str, per_channel: bool, wt: str) -> None:
    _needs_vnni()
    model, feeds = _lstm_model(direction, per_channel, wt)
    # onnxruntime quantizes X and every hidden state to uint8 on the fly; quantgraph runs the dequantized weights in
    # float, so they differ by that activation quantization noise (outputs are in (-1, 1)).
    _check(model, feeds, rtol=0, atol=3e-2)


# -- attention ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", ["none", "causal", "lengths", "raw"])
def test_qattention(mask: str) -> None:
    _needs_vnni()
    B, S, E, heads = 2, 5, 16, 2
    x = _q("uint8", B, S, E)
    inits = {"w": _q("int8", E, 3 * E), "bias": (RNG.standard_normal(3 * E) * 0.1).astype(np.float32),
             "xs": _scale(0.01), "ws": _scale(0.01), "xz": _zp("uint8", 128), "wz": np.array(0, np.int8)}
    feeds = {"x": x}
    if mask == "lengths":
        feeds["mask"] = np.array([3, 5], np.int32)
    elif mask == "raw":
        feeds["mask"] = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 0]], np.int32)
    node = _node("QAttention", ["x", "w", "bias", "xs", "ws", "mask" if "mask" in feeds else "", "xz", "wz"],
                 num_heads=heads, unidirectional=int(mask == "causal"))
    _check(_model([node], feeds, inits, {"y": TensorProto.FLOAT}), feeds, int8="QMatMul", rtol=1e-4, atol=1e-4)


# -- errors -------------------------------------------------------------------------------------------------------
def test_errors_name_node_and_op() -> None:
    x = _q("uint8", 1, 2, 4, 4)
    node = _node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], channels_last=2, kernel_shape=[2, 2])
    model = _model([node], {"x": x}, {"xs": _scale(0.1), "xz": _zp("uint8", 0), "ys": _scale(0.1),
                                      "yz": _zp("uint8", 0)}, {"y": TensorProto.UINT8})
    with pytest.raises(UnsupportedOpError, match=r"qlinearaveragepool_0.*QLinearAveragePool.*channels_last is 2"):
        quantgraph.compile(model, opt_level=0)
    a = _q("uint8", 3, 4)
    node = _node("QGemm", ["a", "as", "az", "b", "bs", "bz", "", "ys"])
    model = _model([node], {"a": a}, {"as": _scale(0.1), "az": _zp("uint8", 0), "b": _q("int8", 4, 2),
                                      "bs": _scale(0.1), "bz": np.array(0, np.int8), "ys": _scale(0.1)},
                   {"y": TensorProto.FLOAT})
    with pytest.raises(UnsupportedOpError, match=r"qgemm_0.*QGemm.*only one of y_scale and y_zero_point"):
        quantgraph.compile(model, opt_level=0)
    node = _node("QLinearConcat", ["ys", "yz", "a", "as"], axis=0)
    model = _model([node], {"a": a}, {"ys": _scale(0.1), "yz": _zp("uint8", 0), "as": _scale(0.1)},
                   {"y": TensorProto.UINT8})
    with pytest.raises(UnsupportedOpError, match=r"qlinearconcat_0.*QLinearConcat.*has 2 inputs.*triplets"):
        quantgraph.compile(model, opt_level=0)
    x = _q("uint8", 2, 4, 8)
    node = _node("QAttention", ["x", "w", "bias", "xs", "ws", "", "", "", "past"], num_heads=2)
    model = _model([node], {"x": x, "past": np.zeros((2, 2, 2, 0, 4), np.float32)},
                   {"w": _q("int8", 8, 24), "bias": np.zeros(24, np.float32), "xs": _scale(0.1), "ws": _scale(0.1)},
                   {"y": TensorProto.FLOAT})
    with pytest.raises(UnsupportedOpError, match=r"qattention_0.*QAttention.*past state input is not supported"):
        quantgraph.compile(model, opt_level=0)


# -- end to end: models quantized by onnxruntime's own tool ----------------------------------------------------------
class _Reader:
    def __init__(self, name: str, batches: list[np.ndarray]):
        self._it = iter([{name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _float_cnn() -> onnx.ModelProto:
    """Conv+Relu, Conv, residual Add, Mul, Sigmoid, LeakyRelu, AveragePool, Concat, GlobalAveragePool, Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s1"]),
        helper.make_node("Sigmoid", ["s1"], ["g1"]),
        helper.make_node("Mul", ["s1", "g1"], ["m1"]),
        helper.make_node("LeakyRelu", ["m1"], ["l1"], alpha=0.1),
        helper.make_node("AveragePool", ["l1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w3", "b3"], ["c3"]),
        helper.make_node("Concat", ["p1", "c3"], ["k1"], axis=1),
        helper.make_node("GlobalAveragePool", ["k1"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = [_init("w1", 8, 3, 3, 3), _init("b1", 8, scale=0.1), _init("w2", 8, 8, 3, 3, scale=0.15),
             _init("b2", 8, scale=0.1), _init("w3", 4, 8, 1, 1), _init("b3", 4, scale=0.1), _init("wf", 10, 12),
             _init("bf", 10, scale=0.1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("activations", ["QUInt8", "QInt8"])
def test_quantize_static_qoperator_cnn(tmp_path: Any, activations: str) -> None:
    _needs_vnni()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    src, dst = tmp_path / "cnn.onnx", tmp_path / "cnn.int8.onnx"
    onnx.save(_float_cnn(), src)
    batches = [RNG.standard_normal((1, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    quantize_static(str(src), str(dst), _Reader("x", batches), quant_format=QuantFormat.QOperator,
                    activation_type=getattr(QuantType, activations), weight_type=QuantType.QInt8, per_channel=True)
    model = onnx.load(dst)
    assert {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
            "QLinearConcat", "QLinearGlobalAveragePool", "QGemm"} <= _ops(model), _ops(model)
    x = batches[0]
    want = _ort(model, {"x": x})[0]
    y_scale = float(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "y_scale")))
    for opt in (0, None):
        compiled = quantgraph.compile(model) if opt is None else quantgraph.compile(model, opt_level=opt)
        got = np.asarray(compiled(x)[0])
        # one-level flips inside the network move the logits by a few of their own levels at most
        assert np.abs(got - want).max() <= 3 * y_scale + 1e-6, (opt, np.abs(got - want).max() / y_scale)
    # the QDQ graph the contrib ops became exports as standard ONNX that onnxruntime runs with the same result
    compiled.export_onnx(tmp_path / "cnn.qdq.onnx")
    exported = onnx.load(tmp_path / "cnn.qdq.onnx")
    assert not {n.domain for n in exported.graph.node} - {"", "ai.onnx"}
    np.testing.assert_allclose(_ort(exported, {"x": x})[0], want, rtol=0, atol=3 * y_scale + 1e-6)


def _float_lstm_mlp() -> onnx.ModelProto:
    T, B, I, H = 7, 2, 12, 16
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "B"], ["ys", "", ""], hidden_size=H),
        helper.make_node("Squeeze", ["ys", "ax"], ["sq"]),
        helper.make_node("MatMul", ["sq", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["y"]),
    ]
    inits = [_init("W", 1, 4 * H, I), _init("R", 1, 4 * H, H), _init("B", 1, 8 * H, scale=0.1),
             numpy_helper.from_array(np.array([1], np.int64), "ax"), _init("w1", H, 24), _init("b1", 24, scale=0.1),
             _init("w2", 24, 5)]
    graph = helper.make_graph(nodes, "lstm_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, I])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, B, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_quantize_dynamic_lstm_mlp(tmp_path: Any) -> None:
    _needs_vnni()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src, dst = tmp_path / "lstm.onnx", tmp_path / "lstm.int8.onnx"
    onnx.save(_float_lstm_mlp(), src)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    model = onnx.load(dst)
    assert "DynamicQuantizeLSTM" in _ops(model), _ops(model)
    x = RNG.standard_normal((7, 2, 12)).astype(np.float32)
    want = _ort(model, {"x": x})[0]
    for opt in (0, None):
        compiled = quantgraph.compile(model) if opt is None else quantgraph.compile(model, opt_level=opt)
        got = np.asarray(compiled(x)[0])
        # onnxruntime's LSTM also quantizes X and h per step; its noise, not an import error, bounds the difference
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < 0.03, (opt, err)
