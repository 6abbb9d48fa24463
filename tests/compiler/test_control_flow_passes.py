"""Passes through subgraphs: an If on a constant condition is inlined; compiled If models save and load."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

import quantgraph
from quantgraph.compiler.passes.fold_constants import fold_constants
from quantgraph.ir.verify import verify


def _vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def _if_on_batch_model():
    """y = If(Shape(x)[0] == 1) { relu(x) + w_then } else { -x }: the condition is static once the batch is."""
    then = h.make_graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("Add", ["r", "w_then"], ["t"])], "then", [],
                        [_vi("t", TP.FLOAT, ["N", 3])],
                        initializer=[nh.from_array(np.array([1, 2, 3], np.float32), "w_then")])
    other = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", TP.FLOAT, ["N", 3])])
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Equal", ["n", "one"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    g = h.make_graph(nodes, "m", [_vi("x", TP.FLOAT, ["N", 3])], [_vi("y", TP.FLOAT, ["N", 3])],
                     initializer=[nh.from_array(np.array(0, np.int64), "zero"),
                                  nh.from_array(np.array(1, np.int64), "one")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_if_on_a_static_condition_inlines_the_taken_branch() -> None:
    model = _if_on_batch_model()
    dynamic = quantgraph.compile(model, opt_level=2)
    assert "If" in dynamic.graph.op_counts()
    fixed = quantgraph.compile(model, opt_level=2, input_shapes={"x": (1, 3)})
    ops = fixed.graph.op_counts()
    assert "If" not in ops and "Shape" not in ops and fixed.graph.outputs == ["y"]
    x = np.array([[-1, 0.5, 2]], np.float32)
    np.testing.assert_allclose(fixed(x)[0], np.maximum(x, 0) + [1, 2, 3])
    np.testing.assert_allclose(dynamic(x)[0], np.maximum(x, 0) + [1, 2, 3])
    x2 = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(dynamic(x2)[0], -x2)


def test_fold_constants_inlines_else_and_passes_outer_values_through() -> None:
    """cond is a constant False and the else branch returns an outer value unchanged: the graph output keeps its
    name through an Identity."""
    then = h.make_graph([h.make_node("Neg", ["x"], ["t"])], "then", [], [_vi("t", TP.FLOAT, [3])])
    other = h.make_graph([], "else", [], [_vi("x", TP.FLOAT, [3])])
    g = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "m",
                     [_vi("x", TP.FLOAT, [3])], [_vi("y", TP.FLOAT, [3])],
                     initializer=[nh.from_array(np.array(False), "c")])
    graph = quantgraph.load_onnx(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    graph = verify(fold_constants(graph))
    assert [n.op for n in graph.topo()] == ["Identity"] and graph.outputs == ["y"]


def test_compiled_if_model_saves_and_loads(tmp_path) -> None:
    model = _if_on_batch_model()
    compiled = quantgraph.compile(model, opt_level=3)
    compiled.save(tmp_path / "if.qg")
    loaded = quantgraph.load(tmp_path / "if.qg")
    assert loaded.graph.same_as(compiled.graph)
    for x in (np.array([[-1, 0.5, 2]], np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)):
        np.testing.assert_array_equal(loaded(x)[0], compiled(x)[0])


def test_inlining_a_branch_keeps_a_nested_if_and_its_outer_reads() -> None:
    """The taken branch holds an If whose branches read a tensor of the top graph: after inlining, that nested If
    reads it from the top graph directly."""
    inner_then = h.make_graph([h.make_node("Mul", ["x", "w"], ["it"])], "inner_then", [], [_vi("it", TP.FLOAT, [3])])
    inner_else = h.make_graph([h.make_node("Neg", ["x"], ["ie"])], "inner_else", [], [_vi("ie", TP.FLOAT, [3])])
    then = h.make_graph([h.make_node("If", ["c2"], ["t"], then_branch=inner_then, else_branch=inner_else)],
                        "then", [], [_vi("t", TP.FLOAT, [3])])
    other = h.make_graph([h.make_node("Relu", ["x"], ["e"])], "else", [], [_vi("e", TP.FLOAT, [3])])
    g = h.make_graph([h.make_node("If", ["c1"], ["y"], then_branch=then, else_branch=other)], "m",
                     [_vi("x", TP.FLOAT, [3]), _vi("c2", TP.BOOL, [])], [_vi("y", TP.FLOAT, [3])],
                     initializer=[nh.from_array(np.array(True), "c1"),
                                  nh.from_array(np.array([1, 2, 3], np.float32), "w")])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    graph = verify(fold_constants(quantgraph.load_onnx(model)))
    (node,) = graph.topo()
    assert node.op == "If" and node.outputs == ("y",) and node.inputs == ("c2", "x", "w", "x")
    x = np.array([-1, 2, -3], np.float32)
    for level in (0, 2):
        compiled = quantgraph.compile(model, opt_level=level)
        np.testing.assert_array_equal(compiled(x, np.array(True))[0], x * [1, 2, 3])
        np.testing.assert_array_equal(compiled(x, np.array(False))[0], -x)
