"""Requantization rounding: the kernels give ONNX's integers where multiplying by float32(1 / scale) would not.

ONNX ``QLinearMatMul``/``QLinearConv`` (onnx.reference) requantize with one multiplier ``a_scale * b_scale /
y_scale`` formed in float32 and applied to the exact int32 sum in float64, the zero point added before rounding
half to even; ``QuantizeLinear`` divides float32 by the scale. Rounding ``float32(acc) * float32(a_s * b_s)`` and
then multiplying by ``float32(1 / y_scale)`` (the epilogue's old arithmetic) rounds twice, and about two outputs in
a million land on the other side of a .5 boundary. These tests find such inputs by search (seeded), check that the
old arithmetic really differs there, and that every kernel rung gives ONNX's result.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from quantgraph.kernels import Epilogue, gemm_u8s8s32, pack_weights
from quantgraph.kernels.eltwise_int8 import add_requant, dequantize_linear, quantize_linear

f32, f64 = np.float32, np.float64


def _old_requant(acc: np.ndarray, acc_scale: np.float32, y_scale: np.float32, zp: int) -> np.ndarray:
    y = acc.astype(f32) * acc_scale
    return np.clip(np.rint(y * f32(1.0 / float(y_scale))) + f32(zp), 0, 255)


def _onnx_requant(acc: np.ndarray, mult: np.float32, zp: int) -> np.ndarray:
    return np.clip(np.rint(acc.astype(f64) * f64(mult) + f64(zp)), 0, 255)


Scales = tuple[np.float32, np.float32, np.float32]


def _disagreeing_sums(seed: int = 0, sets: int = 3) -> list[tuple[Scales, np.ndarray]]:
    """Scale triples, each with the int32 sums in [0, 32512] where the old arithmetic and ONNX's requantize
    differently (a few in a million: the search over scales is seeded)."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(5000):
        a_s, b_s, y_s = f32(rng.uniform(0.01, 0.05)), f32(rng.uniform(0.001, 0.01)), f32(rng.uniform(0.05, 0.5))
        mult = f32(f32(a_s * b_s) / y_s)
        acc = np.arange(0, min(32512, int(200 / mult)), dtype=np.int64)
        bad = acc[_old_requant(acc, f32(a_s * b_s), y_s, 7) != _onnx_requant(acc, mult, 7)]
        if bad.size:
            found.append(((a_s, b_s, y_s), bad))
            if len(found) == sets:
                return found
    raise AssertionError("no disagreeing sums found")  # pragma: no cover - the search is seeded


def _qlinear_matmul_model(n: int) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    ins = [vi("a", TensorProto.UINT8, None), vi("as", TensorProto.FLOAT, []), vi("az", TensorProto.UINT8, []),
           vi("b", TensorProto.INT8, [2, n]), vi("bs", TensorProto.FLOAT, []), vi("bz", TensorProto.INT8, []),
           vi("ys", TensorProto.FLOAT, []), vi("yz", TensorProto.UINT8, [])]
    node = helper.make_node("QLinearMatMul", [i.name for i in ins], ["y"])
    graph = helper.make_graph([node], "qmm", ins, [vi("y", TensorProto.UINT8, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_old_arithmetic_differs_from_onnx_on_the_constructed_sums() -> None:
    for (a_s, b_s, y_s), sums in _disagreeing_sums():
        mult = f32(f32(a_s * b_s) / y_s)
        assert np.all(_old_requant(sums, f32(a_s * b_s), y_s, 7) != _onnx_requant(sums, mult, 7))
        # each disagreement is one level, at a float64 value within float32 rounding of a .5 boundary
        t = sums * f64(mult) + 7
        assert np.all(np.abs(np.abs(t - np.floor(t)) - 0.5) < 1e-3)


def test_gemm_requantization_equals_onnx_qlinearmatmul(isa: str) -> None:
    n = 37  # N off the 32-column panel: full tiles and the tail tile both see the sums
    for (a_s, b_s, y_s), sums in _disagreeing_sums():
        # K = 2, B's columns (127, 1): row r of A = (s // 127, s % 127) makes the int32 sum exactly s
        rows = np.resize(sums, 15)  # 15 rows: 8-row, 4-row, 2-row and 1-row tiles
        a = np.stack([rows // 127, rows % 127], axis=1).astype(np.uint8)
        b = np.tile(np.array([[127], [1]], np.int8), (1, n))
        feeds = {"a": a, "as": np.array(a_s), "az": np.array(0, np.uint8), "b": b, "bs": np.array(b_s),
                 "bz": np.array(0, np.int8), "ys": np.array(y_s), "yz": np.array(7, np.uint8)}
        want = ReferenceEvaluator(_qlinear_matmul_model(n)).run(None, feeds)[0]
        mult = np.array(a_s * b_s / y_s, np.float32)
        ep = Epilogue(out_dtype="uint8", scale=f32(a_s * b_s), multiplier=mult, out_scale=float(y_s),
                      out_zero_point=7)
        got = gemm_u8s8s32(a, pack_weights(b, a_dtype="uint8"), ep)
        np.testing.assert_array_equal(got, want)
        old = _old_requant(np.repeat(rows[:, None], n, axis=1), f32(a_s * b_s), y_s, 7)
        assert np.count_nonzero(old != want) == want.size  # every element is a case where the old rounding was off


def test_default_multiplier_is_the_float32_quotient() -> None:
    ep = Epilogue(out_dtype="int8", scale=np.array([0.3, 0.7], np.float32), out_scale=0.11)
    factor, _ = ep._channel_vectors(2)
    np.testing.assert_array_equal(factor, np.array([0.3, 0.7], np.float32) / f32(0.11))


def _inverse_differs(seed: int = 1, want: int = 8) -> tuple[np.float32, np.ndarray]:
    """A scale and float32 inputs where ``rint(x / s) != rint(x * float32(1 / s))``: x is picked at and next to
    (k + 0.5) * s, where the two roundings can fall on either side of the tie."""
    rng = np.random.default_rng(seed)
    k = np.arange(0, 100) + 0.5  # positive and small: no saturation hides the difference
    for _ in range(2000):
        s = f32(rng.uniform(0.001, 0.1))
        v = (k * float(s)).astype(f32)
        x = np.concatenate([v, np.nextafter(v, f32(np.inf)), np.nextafter(v, f32(-np.inf))])
        bad = x[np.rint(x / s) != np.rint(x * f32(1.0 / float(s)))]
        if bad.size >= want:
            return s, bad[:want]
    raise AssertionError("no differing inputs found")  # pragma: no cover


def _run_onnx(op: str, feeds: dict, out_type: int | str, **attrs) -> np.ndarray:
    out_type = helper.np_dtype_to_tensor_dtype(np.dtype(out_type)) if isinstance(out_type, str) else out_type
    vi = helper.make_tensor_value_info
    ins = [vi(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
    node = helper.make_node(op, list(feeds), ["y"], **attrs)
    model = helper.make_model(helper.make_graph([node], op, ins, [vi("y", out_type, None)]),
                              opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, feeds)[0]


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantize_kernel_divides_like_onnx(isa: str, dtype: str) -> None:
    s, x = _inverse_differs()
    zp = np.array(3 if dtype == "uint8" else -2, dtype)
    x = np.concatenate([x, np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], f32)])
    got = quantize_linear(x, s, zp, out_dtype=dtype)
    want = _run_onnx("QuantizeLinear", {"x": x[:-5], "s": np.array(s), "z": zp}, dtype)
    np.testing.assert_array_equal(got[:-5], want)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    inverse = np.clip(np.rint(x[:-5] * f32(1.0 / float(s))) + zp, lo, hi)
    assert np.count_nonzero(inverse != want) == want.size  # the inputs are where multiplying would be off
    np.testing.assert_array_equal(got[-5:], [lo, hi, lo, hi, lo])  # NaN saturates low, as ONNX's int cast does


def test_quantize_and_dequantize_per_axis(isa: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 4)).astype(f32)
    s = np.array([0.01, 0.02, 0.05], f32)
    zp = np.array([0, 10, 250], np.uint8)
    q = quantize_linear(x, s, zp, out_dtype="uint8", axis=1)
    np.testing.assert_array_equal(q, _run_onnx("QuantizeLinear", {"x": x, "s": s, "z": zp}, TensorProto.UINT8,
                                               axis=1))
    d = dequantize_linear(q, s, zp, axis=1)
    np.testing.assert_array_equal(d, _run_onnx("DequantizeLinear", {"x": q, "s": s, "z": zp}, TensorProto.FLOAT,
                                               axis=1))


def _add_cases(want: int = 3) -> list[tuple[np.float32, np.float32]]:
    """(a_scale, y_scale) pairs where a = 192 (zero point 128) dequantizes to a v with ``rint(v / y_scale) !=
    rint(v * float32(1 / y_scale))``: v is picked next to (k + 0.5) * y_scale, and a_scale = v / 64 (exact)."""
    rng = np.random.default_rng(5)
    cases = []
    while len(cases) < want:
        y_s = f32(rng.uniform(0.01, 0.1))
        v0 = f32((rng.integers(0, 100) + 0.5) * float(y_s))
        for v in (v0, np.nextafter(v0, f32(np.inf)), np.nextafter(v0, f32(-np.inf))):
            if np.rint(v / y_s) != np.rint(v * f32(1.0 / float(y_s))):
                cases.append((f32(v / f32(64)), y_s))
                break
    return cases


def test_add_requant_equals_onnx_qdq_add(isa: str) -> None:
    rng = np.random.default_rng(4)
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("DequantizeLinear", ["a", "as", "az"], ["da"]),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["db"]),
             helper.make_node("Add", ["da", "db"], ["sum"]), helper.make_node("Relu", ["sum"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"])]
    for a_s, y_s in _add_cases():
        a = np.concatenate([[192], rng.integers(0, 256, 999)]).astype(np.uint8)
        b = np.concatenate([[120], rng.integers(0, 256, 999)]).astype(np.uint8)  # b[0] = zp: DQ(b[0]) = 0
        b_s = f32(0.0291)
        got = add_requant(a, b, a_scale=a_s, a_zero_point=128, b_scale=b_s, b_zero_point=120, out_scale=y_s,
                          out_zero_point=100, out_dtype="uint8", relu=True)
        feeds = {"a": a, "as": np.array(a_s), "az": np.array(128, np.uint8), "b": b, "bs": np.array(b_s),
                 "bz": np.array(120, np.uint8), "ys": np.array(y_s), "yz": np.array(100, np.uint8)}
        ins = [vi(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
        model = helper.make_model(helper.make_graph(nodes, "qdq_add", ins, [vi("y", TensorProto.UINT8, None)]),
                                  opset_imports=[helper.make_opsetid("", 21)])
        want = ReferenceEvaluator(model).run(None, feeds)[0]
        np.testing.assert_array_equal(got, want)
        v = f32(64) * a_s
        assert np.rint(v * f32(1.0 / float(y_s))) + 100 != want[0]  # where multiplying by the inverse is off
