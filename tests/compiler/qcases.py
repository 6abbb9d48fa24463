"""Quantized test models built with onnx.helper, and the ONNX reference evaluator as their oracle.

Shared by the int8 op, realization and lowering tests. A case is one ONNX node (QLinearConv, QLinearMatMul,
ConvInteger, MatMulInteger) or a small QDQ graph; ``const=True`` stores weights and quantization parameters as
initializers (what real models do: the lowering packs them once), ``const=False`` feeds them as graph inputs (what
the ONNX node tests do: packed per call).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OPSET = 21


@dataclass
class QCase:
    """One quantized node: its op, inputs in ONNX order (None = omitted), which are data, and attributes."""

    name: str
    op: str
    inputs: list[tuple[str, np.ndarray | None]]
    data: tuple[str, ...]                      # inputs that are always graph inputs (activations)
    attrs: dict[str, Any] = field(default_factory=dict)

    def model(self, const: bool = True) -> onnx.ModelProto:
        names = [k if v is not None else "" for k, v in self.inputs]
        feeds = {k: v for k, v in self.inputs if v is not None and (k in self.data or not const)}
        inits = {k: v for k, v in self.inputs if v is not None and k not in feeds}
        node = helper.make_node(self.op, names, ["y"], **self.attrs)
        return single_node_model(node, feeds, inits)

    def feeds(self, const: bool = True) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.inputs if v is not None and (k in self.data or not const)}


def single_node_model(node: onnx.NodeProto, feeds: dict[str, np.ndarray],
                      inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    return graph_model([node], feeds, inits, ["y"])


def graph_model(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray],
                outputs: list[str]) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "q", [vi(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                                           for k, v in feeds.items()],
                              [vi(o, TensorProto.UNDEFINED, None) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    del model.graph.output[:]
    model.graph.output.extend(inferred)
    return model


def onnx_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


def _q(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _f(*values: float) -> np.ndarray:
    return np.array(values[0] if len(values) == 1 else values, np.float32)


def qlinear_conv(name: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], *, x_dtype: str = "uint8",
                 w_dtype: str = "int8", y_dtype: str = "uint8", per_channel: bool = True, bias: bool = True,
                 w_zero: int | None = None, seed: int = 0, **attrs: Any) -> QCase:
    rng = np.random.default_rng(seed)
    m = w_shape[0]
    lo, hi = np.iinfo(x_dtype).min, np.iinfo(x_dtype).max
    w_zp = np.full(m if per_channel else (), 0 if w_zero is None else w_zero, w_dtype)
    w_s = rng.uniform(0.002, 0.02, m).astype(np.float32) if per_channel else _f(0.01)
    ins = [("x", _q(rng, x_shape, x_dtype)), ("x_scale", _f(0.02)),
           ("x_zero_point", np.array(rng.integers(lo, hi), x_dtype)),
           ("w", _q(rng, w_shape, w_dtype)), ("w_scale", w_s), ("w_zero_point", w_zp),
           ("y_scale", _f(rng.uniform(0.05, 0.3))),
           ("y_zero_point", np.array(rng.integers(np.iinfo(y_dtype).min // 2 + 64, 100), y_dtype)),
           ("B", rng.integers(-2000, 2000, m).astype(np.int32) if bias else None)]
    return QCase(name, "QLinearConv", ins, ("x",), attrs)


def conv_integer(name: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], *, seed: int = 0,
                 **attrs: Any) -> QCase:
    rng = np.random.default_rng(seed)
    ins = [("x", _q(rng, x_shape, "uint8")), ("w", _q(rng, w_shape, "int8")),
           ("x_zero_point", np.array(17, np.uint8)), ("w_zero_point", rng.integers(-3, 3, w_shape[0]).astype(np.int8))]
    return QCase(name, "ConvInteger", ins, ("x",), attrs)


def qlinear_matmul(name: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...], *, a_dtype: str = "uint8",
                   b_dtype: str = "int8", y_dtype: str = "uint8", per_column: bool = True, scale_dtype: str = "float32",
                   seed: int = 0) -> QCase:
    rng = np.random.default_rng(seed)
    n = b_shape[-1]
    sd = np.dtype(scale_dtype)
    ins = [("a", _q(rng, a_shape, a_dtype)), ("a_scale", np.array(0.03, sd)),
           ("a_zero_point", np.array(rng.integers(np.iinfo(a_dtype).min, np.iinfo(a_dtype).max), a_dtype)),
           ("b", _q(rng, b_shape, b_dtype)),
           ("b_scale", (rng.uniform(0.002, 0.02, n) if per_column else np.array(0.01)).astype(sd)),
           ("b_zero_point", (rng.integers(-4, 4, n) if per_column else np.array(1)).astype(b_dtype)
            if b_dtype == "int8" else np.array(128, b_dtype)),
           ("y_scale", np.array(rng.uniform(0.1, 0.5), sd)),
           ("y_zero_point", np.array(rng.integers(np.iinfo(y_dtype).min // 2 + 64, 100), y_dtype))]
    return QCase(name, "QLinearMatMul", ins, ("a",))


def matmul_integer(name: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...], *, seed: int = 0) -> QCase:
    rng = np.random.default_rng(seed)
    ins = [("A", _q(rng, a_shape, "int8")), ("B", _q(rng, b_shape, "int8")), ("a_zero_point", np.array(-5, np.int8)),
           ("b_zero_point", rng.integers(-3, 3, b_shape[-1]).astype(np.int8))]
    return QCase(name, "MatMulInteger", ins, ("A",))


CONV_CASES = [
    qlinear_conv("pads_strides", (2, 4, 9, 8), (6, 4, 3, 3), pads=[1, 0, 2, 1], strides=[2, 1]),
    qlinear_conv("grouped_s8", (1, 8, 7, 7), (6, 4, 3, 3), x_dtype="int8", y_dtype="int8", group=2, pads=[1, 1, 1, 1],
                 dilations=[2, 1], seed=1),
    qlinear_conv("depthwise", (2, 8, 8, 8), (8, 1, 3, 3), group=8, pads=[1, 1, 1, 1], strides=[2, 2], seed=2),
    qlinear_conv("pointwise_per_tensor", (1, 40, 5, 5), (33, 40, 1, 1), per_channel=False, bias=False, seed=3),
    qlinear_conv("u8_weights", (1, 3, 6, 6), (5, 3, 3, 3), w_dtype="uint8", w_zero=128, auto_pad="SAME_UPPER",
                 seed=4),
    qlinear_conv("wide_weights", (1, 3, 6, 6), (4, 3, 2, 2), w_dtype="uint8", w_zero=0, seed=5),
    conv_integer("conv_integer", (1, 5, 6, 7), (4, 5, 3, 3), pads=[1, 1, 1, 1]),
]
MATMUL_CASES = [
    qlinear_matmul("2d", (5, 37), (37, 40)),
    qlinear_matmul("batched_a_s8", (2, 3, 9, 16), (16, 33), a_dtype="int8", y_dtype="int8", seed=1),
    qlinear_matmul("batched_b", (2, 4, 8), (2, 8, 5), per_column=False, seed=2),
    qlinear_matmul("float16_scales", (3, 8), (8, 6), scale_dtype="float16", seed=3),
    qlinear_matmul("u8_weights", (4, 10), (10, 7), b_dtype="uint8", per_column=False, seed=4),
    matmul_integer("matmul_integer", (6, 19), (19, 35)),
]
