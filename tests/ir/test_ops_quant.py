"""Quantization ops: inference (symbolic / unknown dims), error messages and reference numerics."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.interpreter import run
from quantgraph.ir.ops.registry import ref


def _scalar(gb: GraphBuilder, value: float | int, dtype: str) -> str:
    return gb.const(np.array(value, dtype))


def test_quantize_infer_keeps_symbolic_dims_and_takes_zero_point_type() -> None:
    gb = GraphBuilder()
    x = gb.input("x", ("N", None, 4), "float32")
    y = gb.op("QuantizeLinear", x, _scalar(gb, 0.1, "float32"), _scalar(gb, 0, "int8"), name="q")
    assert gb.graph.info(y).shape == ("N", None, 4) and gb.graph.info(y).dtype == "int8"
    y2 = gb.op("QuantizeLinear", x, _scalar(gb, 0.1, "float32"))
    assert gb.graph.info(y2).dtype == "uint8"
    y3 = gb.op("QuantizeLinear", gb.input("u", None, "float32"), _scalar(gb, 0.1, "float32"), output_dtype="int16")
    assert gb.graph.info(y3).shape is None and gb.graph.info(y3).dtype == "int16"


def test_quantize_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0], np.float32)
    got = ref("QuantizeLinear", x, np.array(1.0, np.float32), np.array(10, np.uint8))
    np.testing.assert_array_equal(got, np.array([10, 12, 12, 10, 8, 255, 0], np.uint8))
    got = ref("QuantizeLinear", x, np.array(1.0, np.float32), np.array(0, np.int8))
    np.testing.assert_array_equal(got, np.array([0, 2, 2, 0, -2, 127, -128], np.int8))


def test_quantize_output_dtype_must_agree_with_zero_point() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2,), "float32")
    with pytest.raises(ShapeError, match=r"node 'q' \(QuantizeLinear\): output_dtype is int16 but Y_zero_point is"):
        gb.op("QuantizeLinear", x, _scalar(gb, 0.1, "float32"), _scalar(gb, 0, "int8"), name="q",
              output_dtype="int16")


def test_quantize_unsupported_output_type() -> None:
    gb = GraphBuilder()
    with pytest.raises(UnsupportedOpError, match="quantized type int32 is not supported"):
        gb.op("QuantizeLinear", gb.input("x", (2,), "float32"), _scalar(gb, 0.1, "float32"), output_dtype="int32")


def test_per_axis_scale_length_checked_against_axis() -> None:
    gb = GraphBuilder()
    x = gb.input("x", ("N", 3, 4), "float32")
    s = gb.const(np.ones(4, np.float32))
    with pytest.raises(ShapeError, match=r"\(QuantizeLinear\): Y_scale has 4 elements but X has 3 along axis 1"):
        gb.op("QuantizeLinear", x, s)
    assert gb.graph.info(gb.op("QuantizeLinear", x, s, axis=-1)).shape == ("N", 3, 4)


def test_per_axis_scale_must_be_1d() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 3), "float32")
    with pytest.raises(ShapeError, match="without block_size expects a scalar or a 1-D tensor"):
        gb.op("DequantizeLinear", gb.input("q", (2, 3), "uint8"), gb.const(np.ones((2, 3), np.float32)))
    with pytest.raises(ShapeError, match="axis 2 is out of range for X of rank 2"):
        gb.op("QuantizeLinear", x, gb.const(np.ones(3, np.float32)), axis=2)


def test_blocked_quantize_matches_elementwise_scales() -> None:
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    scale = np.array([[1.0, 2.0], [0.5, 4.0]], np.float32)  # blocks of 3 along axis 1: [0:3], [3:5]
    got = ref("QuantizeLinear", x, scale, None, axis=1, block_size=3)
    full = np.array([[1, 1, 1, 2, 2], [0.5, 0.5, 0.5, 4, 4]], np.float32)
    np.testing.assert_array_equal(got, np.clip(np.rint(x / full), 0, 255).astype(np.uint8))


def test_dequantize_int32_and_output_dtype() -> None:
    got = ref("DequantizeLinear", np.array([-4, 0, 6], np.int32), np.array(0.5, np.float32), None)
    np.testing.assert_array_equal(got, np.array([-2.0, 0.0, 3.0], np.float32))
    got = ref("DequantizeLinear", np.array([3, 5], np.uint8), np.array(0.5, np.float32), np.array(1, np.uint8),
              output_dtype="float16")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.array([1.0, 2.0], np.float16))


def test_dequantize_zero_point_type_must_match() -> None:
    gb = GraphBuilder()
    with pytest.raises(ShapeError, match=r"\(DequantizeLinear\): X_zero_point is int8 but X is uint8"):
        gb.op("DequantizeLinear", gb.input("x", (2,), "uint8"), _scalar(gb, 0.1, "float32"), _scalar(gb, 0, "int8"))


def test_dynamic_quantize_covers_zero_and_returns_scalars() -> None:
    gb = GraphBuilder()
    y, s, z = gb.op("DynamicQuantizeLinear", gb.input("x", ("N", 3), "float32"))
    assert (gb.graph.info(y).shape, gb.graph.info(s).shape, gb.graph.info(z).dtype) == (("N", 3), (), "uint8")
    y, s, z = ref("DynamicQuantizeLinear", np.array([1.0, 3.0, 4.0], np.float32))
    # the range is [0, 4]: zero point 0, scale 4/255
    assert z == 0 and s == np.float32(4.0) / np.float32(255)
    np.testing.assert_array_equal(y, np.array([64, 191, 255], np.uint8))  # 63.75, 191.25, 255


def test_matmul_integer_infer_and_dtype_errors() -> None:
    gb = GraphBuilder()
    a = gb.input("a", ("B", "M", 8), "uint8")
    b = gb.input("b", (8, 5), "int8")
    y = gb.op("MatMulInteger", a, b)
    assert gb.graph.info(y).shape == ("B", "M", 5) and gb.graph.info(y).dtype == "int32"
    with pytest.raises(ShapeError, match=r"node 'mm' \(MatMulInteger\): A is float32"):
        gb.op("MatMulInteger", gb.input("f", (2, 8), "float32"), b, name="mm")


def test_matmul_integer_inner_dim_mismatch_names_node() -> None:
    gb = GraphBuilder()
    with pytest.raises(ShapeError, match=r"node 'mm' \(MatMulInteger\)"):
        gb.op("MatMulInteger", gb.input("a", (2, 8), "uint8"), gb.input("b", (7, 5), "uint8"), name="mm")


def test_qlinear_matmul_requantizes_exactly() -> None:
    a = np.array([[130, 120]], np.uint8)
    b = np.array([[2], [3]], np.uint8)
    # (a - 128) @ b = [[2*2 + (-8)*3]] = [[-20]]; * (0.5 * 1 / 2) = -5; + 10 = 5
    got = ref("QLinearMatMul", a, np.float32(0.5), np.uint8(128), b, np.float32(1), np.uint8(0), np.float32(2),
              np.uint8(10))
    np.testing.assert_array_equal(got, np.array([[5]], np.uint8))


def test_conv_integer_infer_symbolic_batch_and_errors() -> None:
    gb = GraphBuilder()
    x = gb.input("x", ("N", 3, 8, None), "uint8")
    w = gb.const(np.ones((4, 3, 3, 3), np.uint8))
    y = gb.op("ConvInteger", x, w, pads=(1, 1, 1, 1))
    assert gb.graph.info(y).shape == ("N", 4, 8, None) and gb.graph.info(y).dtype == "int32"
    with pytest.raises(ShapeError, match=r"node 'ci' \(ConvInteger\): W has shape \(4, 3\)"):
        gb.op("ConvInteger", x, gb.const(np.ones((4, 3), np.uint8)), name="ci")


def test_qlinear_conv_per_channel_params_checked() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 2, 5, 5), "uint8")
    w = gb.const(np.ones((3, 2, 3, 3), np.int8))
    f, u8, i8 = (lambda v: _scalar(gb, v, "float32")), (lambda v: _scalar(gb, v, "uint8")), (
        lambda v: _scalar(gb, v, "int8"))
    with pytest.raises(ShapeError, match=r"\(QLinearConv\): w_scale has shape \(2,\); expected a scalar or 3"):
        gb.op("QLinearConv", x, f(0.1), u8(0), w, gb.const(np.ones(2, np.float32)), i8(0), f(1.0), u8(0))
    y = gb.op("QLinearConv", x, f(0.1), u8(0), w, gb.const(np.ones(3, np.float32)), gb.const(np.zeros(3, np.int8)),
              f(1.0), u8(0), gb.const(np.zeros(3, np.int32)))
    assert gb.graph.info(y).shape == (1, 3, 3, 3) and gb.graph.info(y).dtype == "uint8"


def test_qlinear_conv_reference_agrees_with_float_conv() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (1, 2, 6, 6)).astype(np.uint8)
    w = rng.integers(-128, 127, (3, 2, 3, 3)).astype(np.int8)
    ws = np.array([0.01, 0.02, 0.03], np.float32)
    bias = np.array([100, -50, 0], np.int32)
    got = ref("QLinearConv", x, np.float32(0.1), np.uint8(128), w, ws, np.zeros(3, np.int8), np.float32(0.5),
              np.uint8(128), bias, pads=(1, 1, 1, 1))
    # dequantize, float conv, requantize: the same numbers through the registry's float Conv
    xf = (x.astype(np.float64) - 128) * 0.1
    wf = w.astype(np.float64) * ws.astype(np.float64)[:, None, None, None]
    yf = ref("Conv", xf, wf, bias * 0.1 * ws.astype(np.float64), pads=(1, 1, 1, 1))
    want = np.clip(np.rint(yf / 0.5 + 128), 0, 255)
    assert np.max(np.abs(got.astype(np.int64) - want)) <= 1  # float64 vs float32 multiplier: at most 1 step


def test_graph_interpreter_runs_quantize_dequantize_roundtrip() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (4,), "float32")
    s, z = _scalar(gb, 0.25, "float32"), _scalar(gb, 8, "uint8")
    graph = gb.output(gb.op("DequantizeLinear", gb.op("QuantizeLinear", x, s, z), s, z)).build()
    xs = np.array([-1.0, 0.3, 1.1, 100.0], np.float32)
    out = run(graph, {"x": xs}, check_types=True)[graph.outputs[0]]
    np.testing.assert_array_equal(out, np.array([-1.0, 0.25, 1.0, (255 - 8) * 0.25], np.float32))
