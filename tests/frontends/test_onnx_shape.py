"""ONNX shape-family converters at the old opsets the conformance data does not cover (attributes that later became
inputs, Upsample, Resize-10, Scatter), vs onnx's ReferenceEvaluator or onnxruntime; plus import-time errors."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import quantgraph
from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx import import_onnx
from tests.frontends.test_onnx_misc import check, make_model

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)


def check_ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Import + run with quantgraph and compare with onnxruntime (for ops the reference evaluator lacks)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = 7  # onnxruntime accepts old opsets with an IR version of their time
    for o in model.graph.output:  # onnxruntime needs typed outputs; every model here outputs float32
        o.type.tensor_type.elem_type = TensorProto.FLOAT
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, inputs)
    got = quantgraph.compile(model, opt_level=0)(*inputs.values())
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    return got


def test_resnet_style_reshape_keeps_symbolic_batch() -> None:
    # ResNet-50 (opset 9): Flatten-like Reshape of the pooled (N, 512, 1, 1) features with a constant (0, -1).
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 512, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(np.array([0, -1], np.int64), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    assert import_onnx(model).tensors["y"].shape == ("N", 512)
    check(model, {"x": RNG.standard_normal((3, 512, 1, 1)).astype(np.float32)})


def test_reshape_1_shape_attribute() -> None:
    model = make_model("Reshape", 1, {"x": X}, shape=[4, -1])
    got = quantgraph.compile(model, opt_level=0)(X)[0]
    np.testing.assert_array_equal(got, X.reshape(4, 6))


@pytest.mark.parametrize("op_type, opset, attrs", [
    ("Squeeze", 11, {"axes": [-2]}),
    ("Unsqueeze", 11, {"axes": [0, 4]}),
    ("Slice", 9, {"starts": [1, -1], "ends": [100, 0], "axes": [1, 2]}),
    ("Transpose", 7, {"perm": [2, 0, 1]}),
    ("Flatten", 9, {"axis": 0}),
    ("Pad", 10, {"pads": [0, 1, 2, 0, 1, 0], "mode": "reflect"}),
    ("Pad", 2, {"pads": [1, 0, 0, 0, 0, 1], "value": 3.5}),
    ("DepthToSpace", 10, {"blocksize": 2}),
])
def test_attribute_versions_match_reference(op_type: str, opset: int, attrs: dict[str, Any]) -> None:
    x = RNG.standard_normal((2, 1, 4) if op_type == "Squeeze" else (2, 3, 4) if op_type != "DepthToSpace"
                            else (1, 8, 2, 3)).astype(np.float32)
    check(make_model(op_type, opset, {"x": x}, **attrs), {"x": x})


@pytest.mark.parametrize("opset, attrs, n_out", [(11, {"axis": 2, "split": [1, 3]}, 2), (7, {"axis": 1}, 3)])
def test_split_attribute_versions(opset: int, attrs: dict[str, Any], n_out: int) -> None:
    check(make_model("Split", opset, {"x": X}, n_out=n_out, **attrs), {"x": X})


def test_split_18_num_outputs_uneven() -> None:
    x = RNG.standard_normal((7, 2)).astype(np.float32)
    got = check(make_model("Split", 18, {"x": x}, n_out=3, num_outputs=3), {"x": x})
    assert [g.shape[0] for g in got] == [3, 3, 1]


def test_concat_variadic_and_gather_old_opset() -> None:
    node = helper.make_node("Concat", ["a", "b", "c"], ["y"], axis=-1)
    ins = {k: RNG.standard_normal((2, i + 1)).astype(np.float32) for i, k in enumerate("abc")}
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
                                            for k, v in ins.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)]), ins)
    check(make_model("Gather", 7, {"x": X}, inits={"i": np.array([[1, 0]], np.int64)}, axis=1), {"x": X})


@pytest.mark.parametrize("mode, scales", [("nearest", [1.0, 1.0, 2.0, 3.0]), ("linear", [1.0, 1.0, 2.0, 2.5])])
def test_upsample_7_and_9_and_resize_10(mode: str, scales: list[float]) -> None:
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    check_ort(make_model("Upsample", 7, {"x": x}, mode=mode, scales=scales), {"x": x})
    sc = {"s": np.array(scales, np.float32)}
    check_ort(make_model("Upsample", 9, {"x": x}, inits=sc, mode=mode), {"x": x})
    check_ort(make_model("Resize", 10, {"x": x}, inits=sc, mode=mode), {"x": x})


def test_resize_11_sizes_with_empty_roi_and_scales() -> None:
    x = RNG.standard_normal((1, 1, 4, 6)).astype(np.float32)
    inits = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
             "sizes": np.array([1, 1, 3, 8], np.int64)}
    model = make_model("Resize", 11, {"x": x}, inits=inits, mode="cubic", coordinate_transformation_mode="asymmetric")
    assert import_onnx(model).tensors["y0"].shape == (1, 1, 3, 8)
    check_ort(model, {"x": x})


def test_scatter_9_is_scatter_elements() -> None:
    data = np.zeros((3, 3), np.float32)
    inits = {"i": np.array([[1, 0, 2]], np.int64), "u": np.array([[1.0, 2.0, 3.0]], np.float32)}
    check_ort(make_model("Scatter", 9, {"x": data}, inits=inits, axis=0), {"x": data})


@pytest.mark.parametrize("op_type, opset, inputs, inits, attrs, msg", [
    ("Pad", 11, {"x": X}, {"p": np.zeros(6, np.int64)}, {"mode": "symmetric"}, "mode 'symmetric' is not supported"),
    ("Resize", 13, {"x": X}, {"r": np.zeros(0, np.float32), "s": np.ones(3, np.float32)},
     {"coordinate_transformation_mode": "tf_half_pixel_for_nn"}, "coordinate_transformation_mode 'tf_half_pixel"),
    ("ScatterND", 18, {"x": X}, {"i": np.zeros((1, 1), np.int64), "u": np.zeros((1, 3, 4), np.float32)},
     {"reduction": "avg"}, "reduction 'avg' is not supported"),
])
def test_unsupported_attribute_values_fail_at_import(op_type: str, opset: int, inputs: dict, inits: dict,
                                                     attrs: dict, msg: str) -> None:
    with pytest.raises(UnsupportedOpError, match=msg):
        import_onnx(make_model(op_type, opset, inputs, inits=inits, **attrs))
