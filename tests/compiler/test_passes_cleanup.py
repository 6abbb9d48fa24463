"""fold_constants (incl. shape subgraphs, size limit) and eliminate_dead_code."""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.passes.eliminate_dead_code import eliminate_dead_code
from quantgraph.compiler.passes.fold_constants import MAX_GROWTH, fold_constants
from quantgraph.compiler.rewrite import collect_counts
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.verify import verify
from tests.compiler.test_pattern import assert_same_outputs, ops


def _shape_subgraph(batch):
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): the PyTorch flatten export."""
    gb = GraphBuilder("t")
    x = gb.input("x", (batch, 3, 4))
    i64 = lambda v: gb.const(np.array(v, np.int64))  # noqa: E731
    n = gb.op("Unsqueeze", gb.op("Gather", gb.op("Shape", x), i64(0)), i64([0]))
    return gb.output(gb.op("Relu", gb.op("Reshape", x, gb.op("Concat", n, i64([-1]), axis=0)))).build()


def test_shape_subgraph_with_known_dims_folds_to_a_constant() -> None:
    g = _shape_subgraph(2)
    before = g.copy()
    with collect_counts() as counts:
        fold_constants(g)
    verify(g)
    assert ops(g) == ["Reshape", "Relu"]
    assert g.tensors[g.topo()[0].inputs[1]].const.tolist() == [2, -1]
    assert counts == {"Shape": 1, "Gather": 1, "Unsqueeze": 1, "Concat": 1}
    # the readers of the folded shape are re-inferred in the same sweep: no separate shape inference pass needed
    assert before.tensors[g.outputs[0]].shape != (2, 12) and g.tensors[g.outputs[0]].shape == (2, 12)
    assert_same_outputs(before, g)


def test_symbolic_batch_is_left_alone_but_known_dims_still_fold() -> None:
    g = _shape_subgraph("N")
    fold_constants(g)
    verify(g)
    assert ops(g)[:2] == ["Shape", "Gather"] and "Reshape" in ops(g)
    gb = GraphBuilder("t")
    x = gb.input("x", ("N", 3, 4))
    y = gb.op("Gather", gb.op("Shape", x), gb.const(np.array([1, 2], np.int64)))
    g = gb.output(gb.op("Mul", y, gb.const(np.array(2, np.int64)))).build()
    fold_constants(g)
    assert "Gather" not in ops(g) and "Mul" in ops(g)  # Gather(Shape(x), [1, 2]) reads only known dims


def test_all_constant_nodes_fold_and_graph_outputs_stay() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (3,))
    c = gb.op("Mul", gb.const(np.arange(3, dtype=np.float32)), gb.const(np.float32(2)))
    k = gb.op("Neg", gb.const(np.ones(3, np.float32)))
    g = gb.output(gb.op("Add", x, c), k).build()
    before = g.copy()
    fold_constants(g)
    verify(g)
    assert ops(g) == ["Neg", "Add"]
    assert_same_outputs(before, g)


def test_size_limit_keeps_big_expansions_computed() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (1,))
    big = gb.op("ConstantOfShape", gb.const(np.array([MAX_GROWTH * 2], np.int64)))
    small = gb.op("ConstantOfShape", gb.const(np.array([16], np.int64)))
    g = gb.output(gb.op("Add", big, x), gb.op("Add", small, x)).build()
    with collect_counts() as counts:
        fold_constants(g)
    assert ops(g).count("ConstantOfShape") == 1 and counts["skipped_too_large"] == 1


def test_big_weights_generated_in_the_graph_are_folded() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (1, 3, 40, 40))
    w = gb.op("ConstantOfShape", gb.const(np.array([300, 3, 9, 9], np.int64)),
              value=np.array([0.01], np.float32))
    g = gb.output(gb.op("Conv", x, w)).build()
    fold_constants(g)
    assert ops(g) == ["Conv"] and g.tensors[g.topo()[0].inputs[1]].const.shape == (300, 3, 9, 9)


def test_eliminate_dead_code() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (3,))
    gb.op("Neg", gb.op("Relu", x))                      # dead chain
    gb.const(np.ones(4, np.float32), "unused")
    g = gb.output(gb.op("Abs", x)).build()
    with collect_counts() as counts:
        eliminate_dead_code(g)
    verify(g)
    assert ops(g) == ["Abs"] and "unused" not in g.tensors
    assert counts == {"Neg": 1, "Relu": 1, "constants": 1}
