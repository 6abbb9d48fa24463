"""Passes through subgraphs: an If on a constant condition is inlined; compiled If models save and load."""
from __future__ import annotations

import numpy as np
import pytest
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


def _scan_rnn_model():
    """An RNN cell written as a Scan body (as exporters of hand-written recurrences emit it):
    h_t = tanh(x_t @ W + h_{t-1} @ R + b), every h_t a scan output."""
    rng = np.random.default_rng(4)
    w, r = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((5, 5)).astype(np.float32) * 0.3
    body = h.make_graph([h.make_node("MatMul", ["xt", "W"], ["xw"]), h.make_node("MatMul", ["h", "R"], ["hr"]),
                         h.make_node("Add", ["xw", "hr"], ["s"]), h.make_node("Add", ["s", "b"], ["sb"]),
                         h.make_node("Tanh", ["sb"], ["h2"]), h.make_node("Identity", ["h2"], ["y"])],
                        "cell", [_vi("h", TP.FLOAT, [2, 5]), _vi("xt", TP.FLOAT, [2, 6])],
                        [_vi("h2", TP.FLOAT, [2, 5]), _vi("y", TP.FLOAT, [2, 5])])
    g = h.make_graph([h.make_node("Scan", ["h0", "x"], ["hT", "ys"], body=body, num_scan_inputs=1)], "m",
                     [_vi("h0", TP.FLOAT, [2, 5]), _vi("x", TP.FLOAT, [7, 2, 6])],
                     [_vi("hT", TP.FLOAT, [2, 5]), _vi("ys", TP.FLOAT, [7, 2, 5])],
                     initializer=[nh.from_array(w, "W"), nh.from_array(r, "R"),
                                  nh.from_array(np.linspace(-1, 1, 5).astype(np.float32), "b")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _loop_model():
    """v = relu(v @ W + b) M times (M an input), carried values only."""
    w = np.random.default_rng(5).standard_normal((4, 4)).astype(np.float32) * 0.5
    body = h.make_graph([h.make_node("MatMul", ["v", "W"], ["vw"]), h.make_node("Add", ["vw", "b"], ["vb"]),
                         h.make_node("Relu", ["vb"], ["v2"]), h.make_node("Identity", ["cond"], ["cond2"])],
                        "body", [_vi("i", TP.INT64, []), _vi("cond", TP.BOOL, []), _vi("v", TP.FLOAT, [3, 4])],
                        [_vi("cond2", TP.BOOL, []), _vi("v2", TP.FLOAT, [3, 4])])
    g = h.make_graph([h.make_node("Loop", ["M", "", "v0"], ["vN"], body=body)], "m",
                     [_vi("M", TP.INT64, []), _vi("v0", TP.FLOAT, [3, 4])], [_vi("vN", TP.FLOAT, [3, 4])],
                     initializer=[nh.from_array(w, "W"), nh.from_array(np.float32([0.1, -0.1, 0.2, 0]), "b")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("make", [_scan_rnn_model, _loop_model])
def test_loop_and_scan_bodies_are_compiled_once_with_their_fusions(make) -> None:
    model = make()
    rng = np.random.default_rng(6)
    if make is _scan_rnn_model:
        feeds = {"h0": rng.standard_normal((2, 5)).astype(np.float32),
                 "x": rng.standard_normal((7, 2, 6)).astype(np.float32)}
    else:
        feeds = {"M": np.array(5, np.int64), "v0": rng.standard_normal((3, 4)).astype(np.float32)}
    want = _ort(model, feeds)
    for level in (2, 3):
        compiled = quantgraph.compile(model, opt_level=level)
        for got, w in zip(compiled(feeds), want):
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)
        (node,) = [ln for ln in compiled.lowered if ln.node.op in ("Loop", "Scan")]
        assert node.kernel.name == "compiled_subgraphs"
        body = node.packed["body"]
        assert "FusedMatMul" in body.graph.op_counts() and "Relu" not in body.graph.op_counts()
        plan = compiled.plan_for(feeds)
        assert plan.kernels == ["compiled_subgraphs"]  # static shapes: the plan runs the compiled body


def test_an_if_with_run_time_output_shapes_runs_its_compiled_branches() -> None:
    """Branch outputs whose shape only the data decides (NonZero) live in the plan's cells; the If still runs its
    compiled branches (it used to fall back to the interpreter for the whole subtree)."""
    then = h.make_graph([h.make_node("NonZero", ["x"], ["t"])], "then", [], [_vi("t", TP.INT64, [1, None])])
    other = h.make_graph([h.make_node("Neg", ["x"], ["nx"]), h.make_node("NonZero", ["nx"], ["e"])], "else", [],
                         [_vi("e", TP.INT64, [1, None])])
    g = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "m",
                     [_vi("x", TP.FLOAT, [5]), _vi("c", TP.BOOL, [])], [_vi("y", TP.INT64, None)])
    compiled = quantgraph.compile(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), opt_level=2)
    x = np.array([1, -2, 0, 3, -4], np.float32)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        np.testing.assert_array_equal(compiled(feeds)[0], np.array(np.nonzero(x if c else -x)))
        assert compiled.plan_for(feeds).kernels == ["compiled_subgraphs"]


def test_a_loop_whose_carried_value_grows_stops_planning_per_iteration() -> None:
    """v = concat(v, v[-1:] + 1) for M iterations: a new shape each iteration. The compiled body builds at most
    MAX_BODY_PLANS plans; later iterations run the interpreter, with the same results."""
    from quantgraph.compiler.lower import MAX_BODY_PLANS

    body = h.make_graph([h.make_node("Slice", ["v", "minus1", "big"], ["last"]),
                         h.make_node("Add", ["last", "one_f"], ["nxt"]),
                         h.make_node("Concat", ["v", "nxt"], ["v2"], axis=0),
                         h.make_node("Identity", ["cond"], ["cond2"])],
                        "body", [_vi("i", TP.INT64, []), _vi("cond", TP.BOOL, []), _vi("v", TP.FLOAT, [None])],
                        [_vi("cond2", TP.BOOL, []), _vi("v2", TP.FLOAT, [None])])
    g = h.make_graph([h.make_node("Loop", ["M", "", "v0"], ["vN"], body=body)], "m",
                     [_vi("M", TP.INT64, []), _vi("v0", TP.FLOAT, [1])], [_vi("vN", TP.FLOAT, [None])],
                     initializer=[nh.from_array(np.array([-1], np.int64), "minus1"),
                                  nh.from_array(np.array([1 << 30], np.int64), "big"),
                                  nh.from_array(np.float32(1), "one_f")])
    compiled = quantgraph.compile(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), opt_level=2)
    out = compiled({"M": np.array(20, np.int64), "v0": np.array([5], np.float32)})[0]
    np.testing.assert_array_equal(out, np.arange(5, 26, dtype=np.float32))
    (node,) = [ln for ln in compiled.lowered if ln.node.op == "Loop"]
    assert len(node.packed["body"].plans) == MAX_BODY_PLANS
