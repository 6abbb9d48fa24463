"""Graph construction, editing verbs, verify(), printer and the reference interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.errors import GraphError, ShapeError
from quantgraph.ir import Graph, GraphBuilder, format_graph, verify
from quantgraph.ir.interpreter import run
from quantgraph.ir.node import Node
from quantgraph.ir.tensor import TensorInfo


def small_graph() -> Graph:
    gb = GraphBuilder("small")
    x = gb.input("x", ("N", 4), "float32")
    b = gb.const(np.arange(4, dtype=np.float32), "b")
    y = gb.op("Add", x, b, name="add")
    z = gb.op("Relu", y, name="relu")
    w = gb.op("Mul", z, x, name="mul")
    return gb.output(w).build()


def test_add_infers_symbolic_shapes_and_links_producers() -> None:
    g = small_graph()
    assert g.tensors["add"].shape == ("N", 4) and g.tensors["add"].dtype == "float32"
    assert g.producer("relu").op == "Relu"
    assert g.producer("x") is None and g.producer("b") is None
    assert [n.name for n in g.consumers("x")] == ["add", "mul"]
    assert [n.name for n in g.topo()] == ["add", "relu", "mul"]
    verify(g)


def test_broadcast_mismatch_names_node_and_shapes() -> None:
    gb = GraphBuilder()
    a = gb.input("a", (2, 3), "float32")
    b = gb.input("b", (4,), "float32")
    with pytest.raises(ShapeError, match=r"node 'bad' \(Add\): inputs of shapes \(2, 3\) and \(4,\) do not broadcast"):
        gb.op("Add", a, b, name="bad")


def test_undefined_input_unknown_attr_and_arity_are_rejected() -> None:
    g = small_graph()
    with pytest.raises(GraphError, match="input 0 'nope' is not defined"):
        g.add("Relu", ["nope"], name="r")
    with pytest.raises(GraphError, match="unknown attribute.*alpha.*Relu accepts: none"):
        g.add("Relu", ["x"], name="r", alpha=0.1)
    with pytest.raises(GraphError, match="got 1 inputs; Add takes 2"):
        g.add("Add", ["x"], name="a2")


def test_attributes_are_completed_with_defaults_and_frozen() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (3,), "float32")
    y = gb.op("LeakyRelu", x)
    n = gb.graph.producer(y)
    assert n.attrs == {"alpha": 0.01}


def test_replace_uses_and_erase() -> None:
    g = small_graph()
    g.replace_uses("relu", "add")  # bypass the Relu
    assert g.node("mul").inputs == ("add", "x")
    with pytest.raises(GraphError, match="still used"):
        g.erase("add")
    g.erase("relu")
    assert "relu" not in g.tensors and [n.name for n in g.topo()] == ["add", "mul"]
    verify(g)


def test_rename_tensor_updates_readers_and_outputs() -> None:
    g = small_graph()
    g.rename_tensor("mul", "out")
    g.rename_tensor("add", "sum")
    assert g.outputs == ["out"] and g.node("relu").inputs == ("sum",)
    assert g.producer("sum").name == "add"
    verify(g)


def test_copy_is_independent() -> None:
    g = small_graph()
    h = g.copy()
    h.replace_uses("relu", "add")
    h.erase("relu")
    assert "relu" in g and g.node("mul").inputs == ("relu", "x")
    assert g.same_as(small_graph()) and not h.same_as(g)


def test_verify_reports_inference_disagreement() -> None:
    g = small_graph()
    g.set_tensor(g.tensors["relu"].with_(dtype="float64"))
    with pytest.raises(GraphError, match=r"output 'relu' is recorded as float64; inference says float32"):
        verify(g)


def test_verify_reports_use_before_definition_and_cycles() -> None:
    g = small_graph()
    # splice a node that reads a tensor produced later: relu2 reads 'mul' and add reads relu2 -> cycle
    g.insert_node(Node("relu2", "Relu", ("mul",), ("r2",), {}), [TensorInfo("r2", ("N", 4), "float32")])
    g.set_inputs_of(g.node("add"), ["r2", "b"])
    with pytest.raises(GraphError, match="cycle"):
        verify(g)


def test_interpreter_matches_numpy_and_reports_tensors() -> None:
    g = small_graph()
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    seen: dict[str, tuple[int, ...]] = {}
    out = run(g, {"x": x}, on_tensor=lambda t, v: seen.setdefault(t, v.shape), check_types=True)
    np.testing.assert_array_equal(out["mul"], np.maximum(x + np.arange(4, dtype=np.float32), 0) * x)
    assert seen == {"add": (3, 4), "relu": (3, 4), "mul": (3, 4)}


def test_interpreter_missing_feed() -> None:
    with pytest.raises(GraphError, match="graph input 'x' was not fed"):
        run(small_graph(), {})


def test_printer_is_one_line_per_node() -> None:
    text = format_graph(small_graph())
    assert "%add = Add(%x, %b)  # add: float32(N, 4)" in text
    assert text.splitlines()[-1] == "  return %mul"
    assert sum(1 for line in text.splitlines() if " = " in line) == 3
