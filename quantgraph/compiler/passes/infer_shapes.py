"""infer_shapes: recompute every node's output types from its inputs (after an input shape changed).

Graphs are typed as they are built (``Graph.add`` infers each node), so this pass is needed only when an input's
declared shape changes (``compile(input_shapes=...)``, a plan's concrete shapes); passes that change what inference
can see re-infer just the nodes downstream of the change (:func:`infer_node`).
"""
from __future__ import annotations

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import get_op


def infer_node(graph: Graph, n: Node) -> list[str]:
    """Re-infer ``n``'s output types from its inputs' current types; returns the outputs whose type changed."""
    changed = []
    types = get_op(n.op).run_infer(n, [graph.tensors[t] if t else None for t in n.inputs])
    for t, ty in zip(n.outputs, types):
        if t:
            old = graph.tensors[t]
            if old.shape != ty.shape or old.dtype != ty.dtype:
                graph.set_tensor(old.with_(shape=ty.shape, dtype=ty.dtype))
                changed.append(t)
    return changed


def infer_shapes(graph: Graph) -> Graph:
    """Re-run type inference in topological order and record the results in ``graph.tensors``."""
    for n in graph.topo():
        infer_node(graph, n)
    return graph
