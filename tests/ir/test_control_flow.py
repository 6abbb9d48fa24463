"""Control flow in the IR: If/Loop/Scan subgraphs with outer-scope reads, sequence ops; import, verify, print,
serialize, interpret and compile, against hand-computed numpy and onnxruntime (when installed)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

import quantgraph
from quantgraph.compiler.passes.eliminate_dead_code import eliminate_dead_code
from quantgraph.errors import GraphError
from quantgraph.ir import serialize
from quantgraph.ir.dtypes import sequence_of
from quantgraph.ir.interpreter import run
from quantgraph.ir.printer import format_graph
from quantgraph.ir.subgraph import subgraphs
from quantgraph.ir.verify import verify

LEVELS = (0, 2, 3)


def _vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(nodes, "m", inputs, outputs, initializer=[nh.from_array(v, k) for k, v in dict(inits).items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _nested_if_model():
    """If(c1) { If(c2) { x * w_outer + b } else { -x } } else { Conv-free relu(x) + inner constant }: the innermost
    branch reads x and w from two scopes up."""
    inner_then = h.make_graph([h.make_node("Mul", ["x", "w"], ["xw"]), h.make_node("Add", ["xw", "b"], ["it"])],
                              "inner_then", [], [_vi("it", TP.FLOAT, [2, 3])],
                              initializer=[nh.from_array(np.full((2, 3), 0.5, np.float32), "b")])
    inner_else = h.make_graph([h.make_node("Neg", ["x"], ["ie"])], "inner_else", [], [_vi("ie", TP.FLOAT, [2, 3])])
    then = h.make_graph([h.make_node("If", ["c2"], ["t"], then_branch=inner_then, else_branch=inner_else)],
                        "then", [], [_vi("t", TP.FLOAT, [2, 3])])
    other = h.make_graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("Add", ["r", "k"], ["e"])], "else", [],
                         [_vi("e", TP.FLOAT, [2, 3])], initializer=[nh.from_array(np.float32(2.0), "k")])
    return _model([h.make_node("If", ["c1"], ["y"], then_branch=then, else_branch=other)],
                  [_vi("x", TP.FLOAT, [2, 3]), _vi("c1", TP.BOOL, []), _vi("c2", TP.BOOL, [])],
                  [_vi("y", TP.FLOAT, [2, 3])], {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})


def _nested_want(x, c1, c2):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    if c1:
        return x * w + 0.5 if c2 else -x
    return np.maximum(x, 0) + 2


def test_nested_if_imports_with_captures_and_verifies() -> None:
    g = quantgraph.load_onnx(_nested_if_model())
    verify(g)
    (node,) = g.topo()
    then = node.attrs["then_branch"]
    assert then.captures == ["c2", "x", "w"] and node.inputs == ("c1", "c2", "x", "w", "x")
    (inner,) = then.topo()
    assert inner.attrs["then_branch"].captures == ["x", "w"]
    text = format_graph(g)
    assert "    then_branch: then\n      outer  %c2: bool()" in text
    assert "        then_branch: inner_then\n          outer  %x: float32(2, 3)" in text


@pytest.mark.parametrize("c1,c2", [(True, True), (True, False), (False, True)])
def test_nested_if_runs_everywhere(c1, c2) -> None:
    model = _nested_if_model()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    feeds = {"x": x, "c1": np.array(c1), "c2": np.array(c2)}
    want = _nested_want(x, c1, c2)
    np.testing.assert_allclose(_ort(model, feeds)[0], want, rtol=1e-6)
    np.testing.assert_allclose(run(quantgraph.load_onnx(model), feeds)["y"], want, rtol=1e-6)
    for level in LEVELS:
        np.testing.assert_allclose(quantgraph.compile(model, opt_level=level)(feeds)[0], want, rtol=1e-6)


def test_serialize_round_trip_of_nested_subgraphs(tmp_path) -> None:
    g = quantgraph.load_onnx(_nested_if_model())
    doc, arrays = serialize.to_dict(g)
    back = serialize.from_dict(doc, arrays)
    assert back.same_as(g)
    verify(back)
    path, _ = serialize.save(g, tmp_path / "nested")
    again = serialize.load(path)
    x = np.ones((2, 3), np.float32)
    feeds = {"x": x, "c1": np.array(True), "c2": np.array(True)}
    np.testing.assert_allclose(run(again, feeds)["y"], _nested_want(x, True, True))


def test_verify_names_a_broken_subgraph() -> None:
    g = quantgraph.load_onnx(_nested_if_model())
    (node,) = g.topo()
    then = node.attrs["then_branch"]
    then.captures.remove("w")  # the inner branch still reads w: now undefined in this scope
    with pytest.raises(GraphError, match=r"in subgraph m/If_0\.then_branch"):
        verify(g)


def test_dead_code_keeps_values_only_a_branch_reads() -> None:
    then = h.make_graph([h.make_node("Add", ["ax", "ax"], ["t"])], "then", [], [_vi("t", TP.FLOAT, [3])])
    other = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e", TP.FLOAT, [3])])
    model = _model([h.make_node("Abs", ["x"], ["ax"]), h.make_node("Neg", ["x"], ["dead"]),
                    h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                   [_vi("x", TP.FLOAT, [3]), _vi("c", TP.BOOL, [])], [_vi("y", TP.FLOAT, [3])])
    g = eliminate_dead_code(quantgraph.load_onnx(model))
    assert [n.op for n in g.topo()] == ["Abs", "If"]
    x = np.array([-1, 2, -3], np.float32)
    np.testing.assert_array_equal(run(g, {"x": x, "c": np.array(True)})["y"], 2 * np.abs(x))


def _loop_model():
    """for i in range(M) while s < limit: s += x * i; collects s every iteration (scan output); a captured x."""
    body = h.make_graph(
        [h.make_node("Cast", ["i"], ["fi"], to=TP.FLOAT), h.make_node("Mul", ["x", "fi"], ["xi"]),
         h.make_node("Add", ["s_in", "xi"], ["s_out"]), h.make_node("ReduceSum", ["s_out"], ["tot"], keepdims=0),
         h.make_node("Less", ["tot", "limit"], ["cond_out"]), h.make_node("Identity", ["s_out"], ["scan"])],
        "body", [_vi("i", TP.INT64, []), _vi("cond_in", TP.BOOL, []), _vi("s_in", TP.FLOAT, [3])],
        [_vi("cond_out", TP.BOOL, []), _vi("s_out", TP.FLOAT, [3]), _vi("scan", TP.FLOAT, [3])])
    return _model([h.make_node("Loop", ["M", "c", "s0"], ["s", "hist"], body=body)],
                  [_vi("x", TP.FLOAT, [3]), _vi("M", TP.INT64, []), _vi("c", TP.BOOL, []), _vi("s0", TP.FLOAT, [3])],
                  [_vi("s", TP.FLOAT, [3]), _vi("hist", TP.FLOAT, None)], {"limit": np.float32(40.0)})


def _loop_want(x, m, c, s0):
    s, hist, i = s0.copy(), [], 0
    keep = c
    while keep and i < m:
        s = s + x * np.float32(i)
        hist.append(s)
        keep = s.sum() < 40
        i += 1
    return s, np.stack(hist) if hist else np.zeros((0, 3), np.float32)


@pytest.mark.parametrize("m,c", [(10, True), (3, True), (5, False)])
def test_loop_against_numpy_and_onnxruntime(m, c) -> None:
    model = _loop_model()
    x = np.array([1, 2, 3], np.float32)
    feeds = {"x": x, "M": np.array(m, np.int64), "c": np.array(c), "s0": np.zeros(3, np.float32)}
    want = _loop_want(x, m, c, feeds["s0"])
    if c:  # onnxruntime and the spec agree on the scan output when at least one iteration runs
        for got, w in zip(_ort(model, feeds), want):
            np.testing.assert_allclose(got, w)
    for level in LEVELS:
        got = quantgraph.compile(model, opt_level=level)(feeds)
        for gv, w in zip(got, want):
            np.testing.assert_allclose(gv, w)


def _scan_model():
    """A running sum (state) over rows of xs, with a scan output of state * y (y captured from outside), reversed."""
    body = h.make_graph([h.make_node("Add", ["acc_in", "row"], ["acc_out"]),
                         h.make_node("Mul", ["acc_out", "y"], ["out"])],
                        "body", [_vi("acc_in", TP.FLOAT, [2]), _vi("row", TP.FLOAT, [2])],
                        [_vi("acc_out", TP.FLOAT, [2]), _vi("out", TP.FLOAT, [2])])
    return _model([h.make_node("Scan", ["init", "xs"], ["acc", "outs"], body=body, num_scan_inputs=1,
                               scan_input_directions=[1], scan_output_axes=[1])],
                  [_vi("init", TP.FLOAT, [2]), _vi("xs", TP.FLOAT, [4, 2]), _vi("y", TP.FLOAT, [2])],
                  [_vi("acc", TP.FLOAT, [2]), _vi("outs", TP.FLOAT, [2, 4])])


def test_scan_against_numpy_and_onnxruntime() -> None:
    model = _scan_model()
    rng = np.random.default_rng(1)
    feeds = {"init": np.ones(2, np.float32), "xs": rng.standard_normal((4, 2)).astype(np.float32),
             "y": np.array([2, -1], np.float32)}
    acc, outs = feeds["init"].copy(), []
    for row in feeds["xs"][::-1]:
        acc = acc + row
        outs.append(acc * feeds["y"])
    want = [acc, np.stack(outs, axis=1)]
    for got, w in zip(_ort(model, feeds), want):
        np.testing.assert_allclose(got, w, rtol=1e-6)
    g = quantgraph.load_onnx(model)
    assert g.tensors["outs"].shape == (2, 4)
    for level in LEVELS:
        for got, w in zip(quantgraph.compile(model, opt_level=level)(feeds), want):
            np.testing.assert_allclose(got, w, rtol=1e-6)


def test_sequence_ops_in_a_loop_body() -> None:
    """A Loop carrying a sequence: SequenceInsert per iteration, ConcatFromSequence after; SplitToSequence,
    SequenceAt, SequenceLength, SequenceErase around it."""
    body = h.make_graph([h.make_node("Cast", ["i"], ["fi"], to=TP.FLOAT), h.make_node("Add", ["x", "fi"], ["xi"]),
                         h.make_node("SequenceInsert", ["seq_in", "xi"], ["seq_out"]),
                         h.make_node("Identity", ["cond_in"], ["cond_out"])],
                        "body", [_vi("i", TP.INT64, []), _vi("cond_in", TP.BOOL, []),
                                 h.make_tensor_sequence_value_info("seq_in", TP.FLOAT, None)],
                        [_vi("cond_out", TP.BOOL, []), h.make_tensor_sequence_value_info("seq_out", TP.FLOAT, None)])
    model = _model([h.make_node("SequenceEmpty", [], ["empty"], dtype=TP.FLOAT),
                    h.make_node("Loop", ["M", "", "empty"], ["seq"], body=body),
                    h.make_node("SequenceErase", ["seq", "zero"], ["seq2"]),
                    h.make_node("SequenceLength", ["seq2"], ["n"]),
                    h.make_node("ConcatFromSequence", ["seq2"], ["cat"], axis=0, new_axis=1),
                    h.make_node("SplitToSequence", ["cat"], ["parts"], axis=1, keepdims=0),
                    h.make_node("SequenceAt", ["parts", "minus_one"], ["last"])],
                   [_vi("x", TP.FLOAT, [2]), _vi("M", TP.INT64, [])],
                   [_vi("n", TP.INT64, []), _vi("cat", TP.FLOAT, None), _vi("last", TP.FLOAT, None)],
                   {"zero": np.array(0, np.int64), "minus_one": np.array(-1, np.int64)})
    g = quantgraph.load_onnx(model)
    assert g.tensors["seq"].dtype == sequence_of("float32") and g.tensors["seq"].shape is None
    x = np.array([10, 20], np.float32)
    feeds = {"x": x, "M": np.array(4, np.int64)}
    cat = np.stack([x + i for i in range(1, 4)])
    want = [np.array(3, np.int64), cat, cat[:, -1]]
    for got, w in zip(_ort(model, feeds), want):
        np.testing.assert_array_equal(got, w)
    for level in LEVELS:
        for got, w in zip(quantgraph.compile(model, opt_level=level)(feeds), want):
            np.testing.assert_array_equal(got, w)


def _vad_like_model():
    """An If on a sample-rate input whose branches hold their own Conv weights (as silero VAD keeps its 16 kHz
    and 8 kHz networks), with an outer Conv before it."""
    rng = np.random.default_rng(2)

    def branch(name, k):
        w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
        return h.make_graph([h.make_node("Conv", ["feat", f"w_{name}"], [f"c_{name}"], pads=[1, 1, 1, 1]),
                             h.make_node("Relu", [f"c_{name}"], [f"r_{name}"]),
                             h.make_node("Mul", [f"r_{name}", f"k_{name}"], [f"o_{name}"])],
                            name, [], [_vi(f"o_{name}", TP.FLOAT, [1, 4, 6, 6])],
                            initializer=[nh.from_array(w, f"w_{name}"), nh.from_array(np.float32(k), f"k_{name}")])
    w0 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    return _model([h.make_node("Conv", ["x", "w0"], ["feat"], pads=[1, 1, 1, 1]),
                   h.make_node("Equal", ["sr", "sr16k"], ["is16k"]),
                   h.make_node("If", ["is16k"], ["y"], then_branch=branch("b16k", 1.0),
                               else_branch=branch("b8k", -1.0))],
                  [_vi("x", TP.FLOAT, [1, 1, 6, 6]), _vi("sr", TP.INT64, [])], [_vi("y", TP.FLOAT, [1, 4, 6, 6])],
                  {"w0": w0, "sr16k": np.array(16000, np.int64)})


def test_vad_like_if_with_conv_branches_matches_onnxruntime() -> None:
    model = _vad_like_model()
    x = np.random.default_rng(3).standard_normal((1, 1, 6, 6)).astype(np.float32)
    for sr in (16000, 8000):
        feeds = {"x": x, "sr": np.array(sr, np.int64)}
        want = _ort(model, feeds)[0]
        for level in LEVELS:
            compiled = quantgraph.compile(model, opt_level=level)
            np.testing.assert_allclose(compiled(feeds)[0], want, rtol=1e-4, atol=1e-5)
            if level:  # each branch is compiled once as its own graph: its Conv runs a compiled kernel
                (node,) = [ln for ln in compiled.lowered if ln.node.op == "If"]
                assert node.kernel.name == "compiled_subgraphs"
                assert "FusedConv" in node.packed["else_branch"].graph.op_counts()


def test_subgraphs_helper_lists_branches_in_schema_order() -> None:
    (node,) = quantgraph.load_onnx(_nested_if_model()).topo()
    assert [k for k, _ in subgraphs(node)] == ["then_branch", "else_branch"]
