"""ONNX import of Conv, ConvTranspose, Gemm, MatMul at old opsets the conformance data does not cover, compared
with onnxruntime (opset >= 7) or onnx's ReferenceEvaluator (older); plus auto_pad resolution at import."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import quantgraph
from quantgraph.frontends.onnx.importer import import_onnx

RNG = np.random.default_rng(4)


def one_node_model(op: str, opset: int, x_shape: Any, inits: dict[str, np.ndarray], inputs: list[str],
                   n_out: int = 1, outputs: list[str] | None = None, out_types: dict[str, int] | None = None,
                   **attrs: Any) -> onnx.ModelProto:
    """A model with one ``op`` node: "X" is a float graph input of ``x_shape``, ``inits`` are initializers;
    outputs are float unless ``out_types`` says otherwise."""
    outs = outputs or [f"Y{i}" for i in range(n_out)]
    types = out_types or {}
    node = helper.make_node(op, inputs, outs, **attrs)
    out_infos = [helper.make_tensor_value_info(o, types.get(o, TensorProto.FLOAT), None) for o in outs if o]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)], out_infos,
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def compare(model: onnx.ModelProto, x: np.ndarray, rtol: float = 1e-5, atol: float = 1e-5,
            reference: bool = False) -> list[np.ndarray]:
    """Run the model with quantgraph and with onnxruntime (or the ONNX reference below opset 7 or when ``reference``,
    for cases onnxruntime rejects); return ours."""
    opset = model.opset_import[0].version
    if opset >= 7 and not reference:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, {"X": x})
    else:
        want = ReferenceEvaluator(model).run(None, {"X": x})
    got = quantgraph.compile(model, opt_level=0)(x)
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_conv_opset7_same_upper_resolved_at_import() -> None:
    w, b = _rand(4, 3, 3, 3), _rand(4)
    model = one_node_model("Conv", 7, [1, 3, 9, 8], {"W": w, "B": b}, ["X", "W", "B"], auto_pad="SAME_UPPER",
                           strides=[2, 2])
    (conv,) = import_onnx(model).nodes
    assert conv.attrs["auto_pad"] == "NOTSET" and conv.attrs["pads"] == (1, 0, 1, 1)  # totals 2 (H) and 1 (W)
    compare(model, _rand(1, 3, 9, 8))


def test_conv_symbolic_spatial_keeps_auto_pad_until_run() -> None:
    w = _rand(2, 1, 2, 3)
    model = one_node_model("Conv", 11, ["N", 1, "H", "W"], {"W": w}, ["X", "W"], auto_pad="SAME_LOWER",
                           dilations=[2, 1])
    (conv,) = import_onnx(model).nodes
    assert conv.attrs["auto_pad"] == "SAME_LOWER"
    compare(model, _rand(2, 1, 7, 6), reference=True)  # onnxruntime rejects dilations with SAME_*


def test_conv1d_grouped_opset7() -> None:
    model = one_node_model("Conv", 7, [2, 4, 10], {"W": _rand(6, 2, 3)}, ["X", "W"], group=2, pads=[2, 1],
                           strides=[3], kernel_shape=[3])
    compare(model, _rand(2, 4, 10))


def test_conv_transpose_opset7_output_shape() -> None:
    model = one_node_model("ConvTranspose", 7, [1, 2, 3, 4], {"W": _rand(2, 3, 3, 3), "B": _rand(3)},
                           ["X", "W", "B"], strides=[2, 2], output_shape=[8, 9])
    assert compare(model, _rand(1, 2, 3, 4))[0].shape == (1, 3, 8, 9)


def test_gemm_opset6_broadcast_attr() -> None:
    model = one_node_model("Gemm", 6, [3, 5], {"B": _rand(4, 5), "C": _rand(4)}, ["X", "B", "C"], broadcast=1,
                           transB=1, alpha=0.5, beta=2.0)
    compare(model, _rand(3, 5))


def test_gemm_opset9_trans_a_scalar_c() -> None:
    model = one_node_model("Gemm", 9, [5, 3], {"B": _rand(5, 4), "C": np.array(1.5, np.float32)}, ["X", "B", "C"],
                           transA=1)
    compare(model, _rand(5, 3))


def test_matmul_opset7_batched_broadcast() -> None:
    model = one_node_model("MatMul", 7, [2, 1, 3, 4], {"B": _rand(5, 4, 6)}, ["X", "B"])
    assert compare(model, _rand(2, 1, 3, 4))[0].shape == (2, 5, 3, 6)
