"""ONNX converters of converters/misc.py at opsets the conformance data does not cover, vs onnx's ReferenceEvaluator."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import quantgraph
from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.frontends.onnx import import_onnx

F = TensorProto.FLOAT


def make_model(op_type: str, opset: int, inputs: dict[str, np.ndarray], n_out: int = 1,
               inits: dict[str, np.ndarray] | None = None, **attrs: Any) -> onnx.ModelProto:
    """A one-node model; ``inputs`` are graph inputs (fed), ``inits`` initializers, in that input order."""
    inits = inits or {}
    names = list(inputs) + list(inits)
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "t",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check(model: onnx.ModelProto, inputs: dict[str, np.ndarray], rtol: float = 1e-6) -> list[np.ndarray]:
    """Import + run with quantgraph and compare every output with the ONNX reference evaluator."""
    want = ReferenceEvaluator(model).run(None, inputs)
    got = quantgraph.compile(model, opt_level=0)(*inputs.values())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol)
    return got


X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)


@pytest.mark.parametrize("attr, value", [
    ("value_float", 2.5), ("value_floats", [1.0, 2.0]), ("value_int", 7), ("value_ints", [3, -1]),
    ("value", numpy_helper.from_array(np.arange(4, dtype=np.int32).reshape(2, 2), "c")),
])
def test_constant_forms(attr: str, value: Any) -> None:
    node = helper.make_node("Constant", [], ["y0"], **{attr: value})
    graph = helper.make_graph([node], "t", [], [helper.make_tensor_value_info("y0", TensorProto.UNDEFINED, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = import_onnx(model)
    assert len(g) == 0  # a constant, not a node
    want = ReferenceEvaluator(model).run(None, {})[0]
    got = g.tensors["y0"].const
    assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def test_constant_strings_and_tensor_at_opset_9() -> None:
    node = helper.make_node("Constant", [], ["y0"], value_strings=["a", "bc"])
    graph = helper.make_graph([node], "t", [], [helper.make_tensor_value_info("y0", TensorProto.STRING, None)])
    g = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert g.tensors["y0"].dtype == "string" and list(g.tensors["y0"].const) == ["a", "bc"]
    node9 = helper.make_node("Constant", [], ["y0"], value=numpy_helper.from_array(X, "v"))
    graph9 = helper.make_graph([node9], "t", [], [helper.make_tensor_value_info("y0", F, None)])
    g9 = import_onnx(helper.make_model(graph9, opset_imports=[helper.make_opsetid("", 9)]))
    assert g9.tensors["y0"].dtype == "float32" and np.array_equal(g9.tensors["y0"].const, X)


@pytest.mark.parametrize("opset, attrs", [(7, {"ratio": 0.3}), (10, {}), (11, {"ratio": 0.2})])
def test_dropout_old_attr_versions_with_mask(opset: int, attrs: dict) -> None:
    check(make_model("Dropout", opset, {"x": X}, n_out=2, **attrs), {"x": X})


def test_dropout_constant_training_mode_is_refused() -> None:
    model = make_model("Dropout", 13, {"x": X}, n_out=1,
                       inits={"r": np.array(0.5, np.float32), "t": np.array(True)})
    with pytest.raises(UnsupportedOpError, match=r"\(Dropout\): training_mode is true"):
        import_onnx(model)


@pytest.mark.parametrize("opset, to", [(7, TensorProto.INT32), (9, TensorProto.FLOAT16), (13, TensorProto.BOOL)])
def test_cast_old_versions(opset: int, to: int) -> None:
    check(make_model("Cast", opset, {"x": X * 3}, to=to), {"x": X * 3})


def test_cast_to_float8_is_unsupported_naming_node() -> None:
    with pytest.raises(UnsupportedOpError, match=r"'c8' \(Cast\): .*float8e4m3fn"):
        import_onnx(make_model("Cast", 19, {"x": X}, to=TensorProto.FLOAT8E4M3FN, name="c8"))


@pytest.mark.parametrize("opset, attrs", [(7, {"axis": 1}), (11, {"axis": -1, "keepdims": 0})])
def test_argmax_argmin_before_select_last_index(opset: int, attrs: dict) -> None:
    x = np.array([[1, 4, 4, 0], [2, 2, 1, 9], [5, 5, 5, 5]], np.float32)
    for op_type in ("ArgMax", "ArgMin"):
        check(make_model(op_type, opset, {"x": x}, **attrs), {"x": x})


def test_topk_k_attribute_opset_9() -> None:
    got = check(make_model("TopK", 9, {"x": X}, n_out=2, k=2, axis=0), {"x": X})
    assert got[0].shape == (2, 4)


def test_topk_opset_10_input_k() -> None:
    check(make_model("TopK", 10, {"x": X}, n_out=2, inits={"k": np.array([3], np.int64)}), {"x": X})


def test_topk_opset_11_smallest() -> None:
    check(make_model("TopK", 11, {"x": X}, n_out=2, inits={"k": np.array([2], np.int64)}, largest=0, axis=0),
          {"x": X})


def test_range_opset_11_float16() -> None:
    inits = {"s": np.array(0, np.float16), "l": np.array(5, np.float16), "d": np.array(0.3, np.float16)}
    model = make_model("Range", 11, {}, inits=inits)
    want = ReferenceEvaluator(model).run(None, {})[0]
    got = quantgraph.compile(model, opt_level=0)()[0]
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_eyelike_onehot_cumsum_einsum_det_first_versions() -> None:
    sq = np.random.default_rng(1).standard_normal((2, 3, 3)).astype(np.float32)
    check(make_model("EyeLike", 9, {"x": X}, dtype=TensorProto.INT32, k=1), {"x": X})
    idx = np.array([[0, 2], [1, 5]], np.int64)
    inits = {"d": np.array(4, np.int64), "v": np.array([1, 3], np.float32)}
    check(make_model("OneHot", 9, {"i": idx}, inits=inits, axis=1), {"i": idx})
    check(make_model("CumSum", 11, {"x": X}, inits={"a": np.array(1, np.int32)}, exclusive=1), {"x": X})
    check(make_model("Einsum", 12, {"a": X, "b": X.T.copy()}, equation="ij,jk->ik"), {"a": X, "b": X.T.copy()},
          rtol=1e-5)
    check(make_model("Det", 11, {"x": sq}), {"x": sq}, rtol=1e-5)


def test_constant_of_shape_opset_9_default_value() -> None:
    model = make_model("ConstantOfShape", 9, {}, inits={"s": np.array([2, 3], np.int64)})
    g = import_onnx(model)
    assert g.tensors["y0"].shape == (2, 3) and g.tensors["y0"].dtype == "float32"
    want = ReferenceEvaluator(model).run(None, {})[0]
    np.testing.assert_array_equal(quantgraph.compile(model, opt_level=0)()[0], want)


def test_einsum_bad_equation_names_node() -> None:
    with pytest.raises(ShapeError, match=r"'e' \(Einsum\): label 'j'"):
        import_onnx(make_model("Einsum", 12, {"a": X, "b": X}, equation="ij,jk->ik", name="e"))
