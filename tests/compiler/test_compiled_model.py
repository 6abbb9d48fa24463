"""CompiledModel: calling conventions, dynamic batch and input validation errors."""
from __future__ import annotations

import numpy as np
import pytest

import quantgraph
from quantgraph.errors import InputError
from quantgraph.ir import GraphBuilder


def two_input_model():
    gb = GraphBuilder("two")
    a = gb.input("a", ("N", 3), "float32")
    b = gb.input("b", ("N", 3), "float32")
    s = gb.op("Add", a, b, name="sum")
    d = gb.op("Sub", a, b, name="diff")
    return quantgraph.compile(gb.output(d, s).build())


def test_positional_dict_and_kwargs_calls_agree() -> None:
    m = two_input_model()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 3), np.float32)
    d, s = m(a, b)
    np.testing.assert_array_equal(d, a - b)
    np.testing.assert_array_equal(s, a + b)
    for other in (m({"b": b, "a": a}), m(a=a, b=b)):
        np.testing.assert_array_equal(other[0], d)
    assert list(m.run({"a": a, "b": b})) == ["diff", "sum"]


def test_dynamic_batch() -> None:
    m = two_input_model()
    for n in (1, 5):
        x = np.full((n, 3), 2, np.float32)
        assert m(x, x)[1].shape == (n, 3)


@pytest.mark.parametrize("call, message", [
    (lambda m, x: m(x), r"model takes 2 input\(s\) \(a, b\); got 1"),
    (lambda m, x: m({"a": x, "c": x}), r"unknown input\(s\) 'c'; the model's inputs are 'a', 'b'"),
    (lambda m, x: m({"a": x}), r"missing input\(s\) 'b'"),
    (lambda m, x: m(x, x.astype(np.float64)), r"input 'b' has dtype float64; expected float32\(N, 3\)"),
    (lambda m, x: m(x, x.reshape(1, 2, 3)), r"input 'b' has shape \(1, 2, 3\) \(rank 3\); expected rank 2"),
    (lambda m, x: m(x, np.zeros((2, 4), np.float32)), r"input 'b' has shape \(2, 4\); dim 1 must be 3"),
    (lambda m, x: m(x, np.zeros((3, 3), np.float32)), r"input 'b' .* dim 0 \('N'\) is 3 but 'N' = 2 from input 'a'"),
])
def test_bad_inputs_raise_value_errors_naming_the_input(call, message) -> None:
    m = two_input_model()
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(InputError, match=message) as e:
        call(m, x)
    assert isinstance(e.value, ValueError)


def test_lists_are_converted_to_the_declared_dtype() -> None:
    m = two_input_model()
    d, _ = m([[1, 2, 3]], [[1, 1, 1]])
    assert d.dtype == np.float32 and d.tolist() == [[0, 1, 2]]


def test_input_shapes_override_and_bad_options() -> None:
    gb = GraphBuilder("fixed")
    x = gb.input("x", (1, 3), "float32")
    g = gb.output(gb.op("Relu", x)).build()
    m = quantgraph.compile(g, input_shapes={"x": ("B", 3)})
    assert m(np.ones((4, 3), np.float32))[0].shape == (4, 3)
    with pytest.raises(InputError, match="input_shapes names 'y'"):
        quantgraph.compile(g, input_shapes={"y": (1,)})
    with pytest.raises(ValueError, match="opt_level must be 0..3"):
        quantgraph.compile(g, opt_level=7)
    with pytest.raises(TypeError, match="unknown option"):
        quantgraph.compile(g, fast=True)
