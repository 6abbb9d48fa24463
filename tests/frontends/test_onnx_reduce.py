"""ONNX Reduce* converters at the attribute-axes opsets (and the input form), vs onnx's ReferenceEvaluator."""
from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import quantgraph
from quantgraph.frontends.onnx import import_onnx
from quantgraph.frontends.onnx.converters.reduce import AXES_INPUT_SINCE
from tests.frontends.test_onnx_misc import make_model

OPS = sorted(AXES_INPUT_SINCE)
X = np.random.default_rng(0).uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)


def _check(model, x: np.ndarray = X) -> np.ndarray:  # type: ignore[no-untyped-def]
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = quantgraph.compile(model, opt_level=0)(x)[0]
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    return got


@pytest.mark.parametrize("op_type", OPS)
@pytest.mark.parametrize("opset, attrs", [
    (11, {"axes": [1], "keepdims": 0}),
    (12, {"axes": [0, -1]}),
    (7, {}),                                   # omitted axes: reduce everything
])
def test_axes_attribute_versions(op_type: str, opset: int, attrs: dict) -> None:
    _check(make_model(op_type, opset, {"x": X}, **attrs))


@pytest.mark.parametrize("op_type", OPS)
def test_last_attribute_version_before_input(op_type: str) -> None:
    opset = AXES_INPUT_SINCE[op_type] - 1
    got = _check(make_model(op_type, opset, {"x": X}, axes=[2], keepdims=1))
    assert got.shape == (2, 3, 1)


@pytest.mark.parametrize("op_type", OPS)
def test_axes_input_version(op_type: str) -> None:
    model = make_model(op_type, AXES_INPUT_SINCE[op_type], {"x": X}, inits={"a": np.array([0, 2], np.int64)},
                       keepdims=0)
    assert import_onnx(model).tensors["y0"].shape == (3,)
    _check(model)


def test_reduce_sum_13_noop_with_empty_axes() -> None:
    model = make_model("ReduceSum", 13, {"x": X}, inits={"a": np.array([], np.int64)}, noop_with_empty_axes=1)
    np.testing.assert_array_equal(_check(model), X)


def test_old_reduce_converter_makes_axes_a_constant_input() -> None:
    g = import_onnx(make_model("ReduceMean", 11, {"x": X}, axes=[-1]))
    (node,) = g.topo()
    assert node.op == "ReduceMean" and g.tensors[node.inputs[1]].const.tolist() == [-1]
    assert node.attrs == {"keepdims": 1, "noop_with_empty_axes": 0}
