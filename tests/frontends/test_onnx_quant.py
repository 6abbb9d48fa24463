"""Quantization op import: old opsets and options the ONNX conformance cases leave out.

The oracle is onnx's ReferenceEvaluator (exact integer arithmetic), everywhere. onnxruntime is compared as well
where its result is exact: QuantizeLinear/DequantizeLinear on every host, but the integer products
(QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger) only on hosts with VNNI (avx512vnni or avxvnni). Without
VNNI its u8 x s8 kernels multiply with `vpmaddubsw`, which saturates the sum of two products to int16, and it is
off by up to 82 levels on these cases (seen on AMD Zen 3), while quantgraph stays equal to the reference.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import quantgraph
from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.frontends.onnx.dtypes import onnx_dtype
from quantgraph.frontends.onnx.importer import import_onnx
from quantgraph.kernels import target

RNG = np.random.default_rng(0)


def _model(op: str, opset: int, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray | None],
           order: list[str], **attrs: Any) -> onnx.ModelProto:
    """One node reading graph inputs ``feeds`` and initializers ``inits`` in ``order`` (None = omitted)."""
    node = helper.make_node(op, [k if (k in feeds or inits.get(k) is not None) else "" for k in order], ["y"],
                            **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, onnx_dtype(str(v.dtype)), v.shape) for k, v in feeds.items()],
        [], [numpy_helper.from_array(v, k) for k, v in inits.items() if v is not None])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    # onnxruntime wants a typed graph output: take y's type from onnx's own shape inference
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    model.graph.output.extend([vi for vi in inferred if vi.name == "y"])
    return model


#: ops whose onnxruntime kernels multiply u8 x s8 with saturating `vpmaddubsw` on hosts without VNNI
_INTEGER_PRODUCTS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}
ORT_PRODUCTS_EXACT = target.has("avx512vnni") or target.has("avxvnni")


def _ort_is_exact(model: onnx.ModelProto) -> bool:
    return ORT_PRODUCTS_EXACT or not any(n.op_type in _INTEGER_PRODUCTS for n in model.graph.node)


def _same(got: np.ndarray, want: np.ndarray, oracle: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, f"{oracle}: {want.dtype}{want.shape}"
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=oracle)
    else:
        np.testing.assert_array_equal(got, want, err_msg=oracle)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], ort_supports: bool = True,
           reference_supports: bool = True) -> np.ndarray:
    """quantgraph equals onnx's ReferenceEvaluator and, where it supports the case and is exact, onnxruntime."""
    got = quantgraph.compile(model, opt_level=0)(*feeds.values())[0]
    if reference_supports:
        _same(got, ReferenceEvaluator(model).run(None, feeds)[0], "onnx ReferenceEvaluator")
    if ort_supports and _ort_is_exact(model):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        _same(got, sess.run(None, feeds)[0], "onnxruntime")
    return got


def _floats(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 4).astype(np.float32)


@pytest.mark.parametrize("opset", [10, 13, 19])
def test_quantize_per_tensor_old_opsets(opset: int) -> None:
    x = np.concatenate([_floats(20), np.array([0.5, 1.5, 2.5, -0.5, -2.5, 1000, -1000], np.float32)])
    for zp in (np.array(3, np.uint8), np.array(-4, np.int8), None):
        _check(_model("QuantizeLinear", opset, {"x": x}, {"s": np.array(0.5, np.float32), "zp": zp},
                      ["x", "s", "zp"]), {"x": x})


@pytest.mark.parametrize("op", ["QuantizeLinear", "DequantizeLinear"])
def test_per_axis_opset13(op: str) -> None:
    x = _floats(2, 3, 4) if op == "QuantizeLinear" else RNG.integers(-128, 127, (2, 3, 4)).astype(np.int8)
    scale = np.array([0.1, 0.5, 2.0], np.float32)
    zp = np.array([1, -2, 3], np.int8)
    # the reference evaluator has DequantizeLinear from opset 19 on; its float result is exact on onnxruntime
    _check(_model(op, 13, {"x": x}, {"s": scale, "zp": zp}, ["x", "s", "zp"], axis=-2), {"x": x},
           reference_supports=op != "DequantizeLinear")


def test_dequantize_int32_without_zero_point_opset10() -> None:
    x = RNG.integers(-100000, 100000, (5, 4)).astype(np.int32)
    _check(_model("DequantizeLinear", 10, {"x": x}, {"s": np.array(0.25, np.float32)}, ["x", "s"]), {"x": x},
           reference_supports=False)  # the reference evaluator has DequantizeLinear from opset 19 on


def test_quantize_output_dtype_without_zero_point_opset21() -> None:
    x = _floats(3, 5) * 100
    got = _check(_model("QuantizeLinear", 21, {"x": x}, {"s": np.array(0.5, np.float32)}, ["x", "s"],
                        output_dtype=onnx.TensorProto.INT16), {"x": x})
    assert got.dtype == np.int16


def test_dequantize_output_dtype_opset23() -> None:
    x = RNG.integers(0, 255, (3, 5)).astype(np.uint8)
    model = _model("DequantizeLinear", 23, {"x": x}, {"s": np.array(0.5, np.float32), "zp": np.array(7, np.uint8)},
                   ["x", "s", "zp"], output_dtype=onnx.TensorProto.FLOAT16)
    got = _check(model, {"x": x}, ort_supports=False)
    assert got.dtype == np.float16


@pytest.mark.parametrize("op", ["QuantizeLinear", "DequantizeLinear"])
def test_blocked_with_partial_last_block_opset21(op: str) -> None:
    x = _floats(3, 7) if op == "QuantizeLinear" else RNG.integers(0, 255, (3, 7)).astype(np.uint8)
    scale = RNG.uniform(0.1, 2, (3, 3)).astype(np.float32)  # ceil(7 / 3) blocks along axis 1
    zp = RNG.integers(0, 20, (3, 3)).astype(np.uint8)
    _check(_model(op, 21, {"x": x}, {"s": scale, "zp": zp}, ["x", "s", "zp"], axis=1, block_size=3), {"x": x},
           ort_supports=False)


def test_quantize_unsupported_output_dtype_fails_at_import() -> None:
    x = _floats(4)
    model = _model("QuantizeLinear", 21, {"x": x}, {"s": np.array(0.5, np.float32)}, ["x", "s"],
                   output_dtype=onnx.TensorProto.INT4)
    with pytest.raises(UnsupportedOpError, match="int4"):
        import_onnx(model)


def test_blocked_scale_with_wrong_shape_names_node() -> None:
    x = _floats(3, 7)
    model = _model("QuantizeLinear", 21, {"x": x}, {"s": np.ones((3, 2), np.float32)}, ["x", "s"], block_size=3)
    with pytest.raises(ShapeError, match=r"QuantizeLinear.*block_size 3 on axis 1 expected dim 1 to be 3"):
        import_onnx(model)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_matmul_integer_per_row_and_per_column_zero_points(dtype: type) -> None:
    info = np.iinfo(dtype)
    a = RNG.integers(info.min, info.max, (4, 6)).astype(dtype)
    b = RNG.integers(info.min, info.max, (6, 5)).astype(dtype)
    a_zp = RNG.integers(0, 9, 4).astype(dtype)
    b_zp = RNG.integers(0, 9, 5).astype(dtype)
    # neither onnxruntime nor onnx's evaluator implements per-row zero points: check against int64 numpy
    model = _model("MatMulInteger", 10, {"a": a}, {"b": b, "azp": a_zp, "bzp": b_zp}, ["a", "b", "azp", "bzp"])
    want = (a.astype(np.int64) - a_zp[:, None]) @ (b.astype(np.int64) - b_zp)
    got = quantgraph.compile(model, opt_level=0)(a)[0]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    _check(_model("MatMulInteger", 10, {"a": a}, {"b": b, "azp": a_zp[:1].reshape(()), "bzp": b_zp},
                  ["a", "b", "azp", "bzp"]), {"a": a})


def test_matmul_integer_batched() -> None:
    a = RNG.integers(0, 255, (2, 3, 4, 6)).astype(np.uint8)
    b = RNG.integers(-128, 127, (6, 5)).astype(np.int8)
    with pytest.raises(ShapeError, match="B_zero_point is uint8 but B is int8"):
        import_onnx(_model("MatMulInteger", 10, {"a": a}, {"b": b, "azp": np.array(3, np.uint8),
                                                           "bzp": np.array(3, np.uint8)}, ["a", "b", "azp", "bzp"]))
    b = b.astype(np.uint8)
    _check(_model("MatMulInteger", 10, {"a": a}, {"b": b, "azp": np.array(3, np.uint8)}, ["a", "b", "azp"]),
           {"a": a})


def test_qlinear_matmul_opset10_int8() -> None:
    a = RNG.integers(-128, 127, (3, 8)).astype(np.int8)
    b = RNG.integers(-128, 127, (8, 4)).astype(np.int8)
    inits = {"as": np.array(0.02, np.float32), "azp": np.array(1, np.int8), "b": b, "bs": np.array(0.03, np.float32),
             "bzp": np.array(-2, np.int8), "ys": np.array(0.5, np.float32), "yzp": np.array(-5, np.int8)}
    _check(_model("QLinearMatMul", 10, {"a": a}, inits, ["a", "as", "azp", "b", "bs", "bzp", "ys", "yzp"]),
           {"a": a})


def _qconv_inits(m: int, c: int, k: int, per_channel: bool) -> dict[str, np.ndarray]:
    return {"xs": np.array(0.05, np.float32), "xzp": np.array(120, np.uint8),
            "w": RNG.integers(-128, 127, (m, c, k, k)).astype(np.int8),
            "ws": (RNG.uniform(0.01, 0.1, m) if per_channel else np.array(0.04)).astype(np.float32),
            "wzp": np.zeros(m if per_channel else (), np.int8),
            "ys": np.array(0.7, np.float32), "yzp": np.array(100, np.uint8),
            "B": RNG.integers(-2000, 2000, m).astype(np.int32)}


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
                                   {"group": 2, "dilations": [2, 1], "kernel_shape": [3, 3]}])
def test_qlinear_conv_matches_the_reference(per_channel: bool, attrs: dict[str, Any]) -> None:
    x = RNG.integers(0, 255, (2, 4, 7, 6)).astype(np.uint8)
    c = 4 // attrs.get("group", 1)
    inits = _qconv_inits(6, c, 3, per_channel)
    _check(_model("QLinearConv", 10, {"x": x}, inits, ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "B"],
                  **attrs), {"x": x})


def test_conv_integer_zero_points_and_auto_pad() -> None:
    x = RNG.integers(0, 255, (1, 3, 6, 5)).astype(np.uint8)
    w = RNG.integers(0, 255, (4, 3, 2, 2)).astype(np.uint8)
    inits = {"w": w, "xzp": np.array(128, np.uint8), "wzp": np.array(5, np.uint8)}
    _check(_model("ConvInteger", 10, {"x": x}, inits, ["x", "w", "xzp", "wzp"], auto_pad="SAME_LOWER"), {"x": x})


def test_conv_integer_kernel_shape_mismatch_fails() -> None:
    x = RNG.integers(0, 255, (1, 3, 6, 5)).astype(np.uint8)
    w = RNG.integers(0, 255, (4, 3, 2, 2)).astype(np.uint8)
    with pytest.raises(ShapeError, match=r"ConvInteger.*kernel_shape \(3, 3\) does not match"):
        import_onnx(_model("ConvInteger", 10, {"x": x}, {"w": w}, ["x", "w"], kernel_shape=[3, 3]))
