"""QConv / QMatMul / QAdd: references against the ONNX reference evaluator, the epilogue formulas, inference checks."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir import GraphBuilder
from quantgraph.ir.ops.registry import ref
from tests.compiler.qcases import CONV_CASES, MATMUL_CASES, onnx_reference

rng = np.random.default_rng(0)


def _values(case) -> list:
    return [v for _, v in case.inputs]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_qconv_reference_equals_onnx(case, layout: str) -> None:
    want = onnx_reference(case.model(const=False), case.feeds(const=False))[0]
    v = _values(case)
    if case.op == "ConvInteger":
        x, w, xz, wz = v
        ins, out = [x, None, xz, w, None, wz], "int32"
    else:
        ins, out = v, str(v[7].dtype)
    if layout == "NHWC":
        ins = [np.ascontiguousarray(ins[0].transpose(0, 2, 3, 1))] + ins[1:]
    got = ref("QConv", *ins, out_dtype=out, layout=layout, **case.attrs)
    if layout == "NHWC":
        got = got.transpose(0, 3, 1, 2)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", MATMUL_CASES, ids=lambda c: c.name)
def test_qmatmul_reference_equals_onnx(case) -> None:
    want = onnx_reference(case.model(const=False), case.feeds(const=False))[0]
    v = _values(case)
    if case.op == "MatMulInteger":
        a, b, az, bz = v
        got = ref("QMatMul", a, None, az, b, None, bz, out_dtype="int32")
    else:
        got = ref("QMatMul", *v, out_dtype=str(v[7].dtype))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _conv_inputs(out: str = "uint8"):
    x = rng.integers(0, 256, (1, 3, 5, 5)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    xs, xz = np.array(0.02, np.float32), np.array(7, np.uint8)
    ws, wz = rng.uniform(0.005, 0.02, 4).astype(np.float32), np.zeros(4, np.int8)
    b = rng.integers(-500, 500, 4).astype(np.int32)
    return x, xs, xz, w, ws, wz, b


def _acc(x, xz, w, b) -> np.ndarray:
    return ref("ConvInteger", x, w, xz, None, pads=(1, 1, 1, 1)).astype(np.int64) + b.reshape(-1, 1, 1)


def test_qconv_epilogue_formulas() -> None:
    """relu / clip / integer residual / float output, written out independently of the op's code."""
    x, xs, xz, w, ws, wz, b = _conv_inputs()
    acc = _acc(x, xz, w, b).astype(np.float64)
    ys, yz = np.array(0.1, np.float32), np.array(9, np.uint8)
    z = rng.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)
    zs, zz = np.array(0.07, np.float32), np.array(30, np.uint8)
    mult = (xs * ws / ys).astype(np.float64).reshape(-1, 1, 1)
    t = acc * mult + (z.astype(np.float64) - 30) * np.float64(np.float32(zs) / np.float32(ys))
    want = np.clip(np.rint(np.maximum(t, 0) + 9), 0, 255)
    got = ref("QConv", x, xs, xz, w, ws, wz, ys, yz, b, z, zs, zz, out_dtype="uint8", activation="relu",
              pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(got, want)
    lo, hi = np.float64(np.float32(-0.5 / np.float64(ys))), np.float64(np.float32(2.0 / np.float64(ys)))
    want = np.clip(np.rint(np.clip(acc * mult, lo, hi) + 9), 0, 255)
    got = ref("QConv", x, xs, xz, w, ws, wz, ys, yz, b, out_dtype="uint8", activation="clip", alpha=-0.5, beta=2.0,
              pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(got, want)
    want = acc.astype(np.int32).astype(np.float32) * (xs * ws).astype(np.float32).reshape(-1, 1, 1)
    got = ref("QConv", x, xs, xz, w, ws, wz, None, None, b, out_dtype="float32", pads=(1, 1, 1, 1))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_qadd_reference_is_the_qdq_graph() -> None:
    a = rng.integers(0, 256, (2, 3, 4)).astype(np.uint8)
    b = rng.integers(-128, 128, (2, 3, 4)).astype(np.int8)
    s = [np.array(v, np.float32) for v in (0.05, 0.03, 0.04)]
    az, bz, yz = np.array(128, np.uint8), np.array(-3, np.int8), np.array(0, np.uint8)
    y = ref("Relu", ref("DequantizeLinear", a, s[0], az) + ref("DequantizeLinear", b, s[1], bz))
    want = ref("QuantizeLinear", y, s[2], yz)
    np.testing.assert_array_equal(ref("QAdd", a, s[0], az, b, s[1], bz, s[2], yz, activation="relu"), want)


def _build(op: str, *inputs, **attrs):
    gb = GraphBuilder("t")
    names = []
    for i, v in enumerate(inputs):
        if v is None:
            names.append(None)
        elif isinstance(v, tuple):
            names.append(gb.input(f"in{i}", v[0], v[1]))
        else:
            names.append(gb.const(v))
    return gb.op(op, *names, **attrs)


def test_qconv_inference_errors() -> None:
    x, xs, xz, w, ws, wz, b = _conv_inputs()
    ys, yz = np.array(0.1, np.float32), np.array(9, np.uint8)
    xin = ((1, 3, 5, 5), "uint8")
    with pytest.raises(ShapeError, match="out_dtype int32 .* takes no y_scale"):
        _build("QConv", xin, xs, xz, w, ws, wz, ys, yz, out_dtype="int32")
    with pytest.raises(ShapeError, match="out_dtype uint8 needs y_scale"):
        _build("QConv", xin, xs, xz, w, ws, wz, out_dtype="uint8")
    with pytest.raises(ShapeError, match="Y_zero_point is uint8 but out_dtype is int8"):
        _build("QConv", xin, xs, xz, w, ws, wz, ys, yz, out_dtype="int8")
    with pytest.raises(ShapeError, match="integer residual Z needs Z_scale"):
        _build("QConv", xin, xs, xz, w, ws, wz, ys, yz, b, ((1, 4, 3, 3), "uint8"), out_dtype="uint8")
    with pytest.raises(ShapeError, match="residual Z has shape"):
        _build("QConv", xin, xs, xz, w, ws, wz, ys, yz, b, ((1, 4, 5, 5), "float32"), out_dtype="uint8")
    with pytest.raises(ShapeError, match="w_scale has shape"):
        _build("QConv", xin, xs, xz, w, np.ones(3, np.float32), wz, ys, yz, out_dtype="uint8")
    out = _build("QConv", ((1, 5, 5, 3), "uint8"), xs, xz, w, ws, wz, ys, yz, b, out_dtype="uint8", layout="NHWC",
                 pads=(1, 1, 1, 1))
    assert out  # NHWC infers (N, H, W, M)


def test_qmatmul_and_qadd_inference_errors() -> None:
    a = ((4, 8), "uint8")
    b = rng.integers(-128, 128, (8, 6)).astype(np.int8)
    s = np.array(0.1, np.float32)
    with pytest.raises(ShapeError, match="B_scale has shape"):
        _build("QMatMul", a, s, None, b, np.ones(5, np.float32), None, s, None, out_dtype="uint8")
    with pytest.raises(ShapeError, match="bias has shape"):
        _build("QMatMul", a, s, None, b, s, None, s, None, np.zeros(4, np.int32), out_dtype="uint8")
    z8 = np.array(0, np.uint8)
    with pytest.raises(ShapeError, match="QAdd adds tensors of the same shape"):
        _build("QAdd", ((2, 3), "uint8"), s, z8, ((3, 2), "uint8"), s, z8, s, z8)
    with pytest.raises(ShapeError, match="per-tensor parameters"):
        _build("QAdd", ((2, 3), "uint8"), np.ones(3, np.float32), z8, ((2, 3), "uint8"), s, z8, s, z8)


def test_qaverage_pool_and_qconcat_inference_errors() -> None:
    s, z8, zi8 = np.array(0.1, np.float32), np.array(3, np.uint8), np.array(3, np.int8)
    x = ((1, 2, 6, 6), "uint8")
    with pytest.raises(ShapeError, match="X_zero_point is int8 but X is uint8"):
        _build("QAveragePool", x, s, zi8, s, z8, kernel_shape=(2, 2))
    with pytest.raises(ShapeError, match="kind 'MaxPool' is unknown"):
        _build("QAveragePool", x, s, z8, s, z8, kind="MaxPool", kernel_shape=(2, 2))
    with pytest.raises(ShapeError, match="Y_scale has shape"):
        _build("QAveragePool", x, s, z8, np.ones(2, np.float32), z8, kind="GlobalAveragePool")
    out = _build("QAveragePool", ((1, 6, 6, 2), "uint8"), s, z8, s, zi8, kind="GlobalAveragePool", layout="NHWC")
    assert out
    params = dict(axis=1, y_scale=0.1, y_zero_point=0, out_dtype="uint8")
    with pytest.raises(ShapeError, match="2 inputs but 1 scales"):
        _build("QConcat", x, x, scales=(0.1,), zero_points=(0,), **params)
    with pytest.raises(ShapeError, match="zero point 300 of input 1 is outside the uint8 range"):
        _build("QConcat", x, x, scales=(0.1, 0.2), zero_points=(0, 300), **params)
    with pytest.raises(ShapeError, match="input 1 is float32"):
        _build("QConcat", x, ((1, 2, 6, 6), "float32"), scales=(0.1, 0.2), zero_points=(0, 0), **params)


def test_qconcat_and_qaverage_pool_references() -> None:
    a = rng.integers(0, 256, (2, 3, 4, 5)).astype(np.uint8)
    b = rng.integers(-128, 128, (2, 2, 4, 5)).astype(np.int8)
    f32 = np.float32
    got = ref("QConcat", a, b, axis=1, scales=(0.05, 0.02), zero_points=(128, -3), y_scale=0.04, y_zero_point=10,
              out_dtype="uint8")
    want = np.concatenate([np.clip(np.rint((a.astype(np.int32) - 128).astype(f32) * f32(0.05) / f32(0.04)) + 10,
                                   0, 255),
                           np.clip(np.rint((b.astype(np.int32) + 3).astype(f32) * f32(0.02) / f32(0.04)) + 10,
                                   0, 255)], axis=1).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    y = ref("QAveragePool", a, f32(0.05), np.uint8(128), f32(0.03), np.uint8(100), kind="GlobalAveragePool")
    total = (a.astype(np.int64) - 128).sum(axis=(2, 3), keepdims=True).astype(np.int32)
    want = np.clip(np.rint(total.astype(f32) / f32(20) * f32(0.05) / f32(0.03)) + 100, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(y, want)
