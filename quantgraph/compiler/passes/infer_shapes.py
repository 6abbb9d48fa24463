"""infer_shapes: recompute every node's output types from its inputs (after an input shape changed)."""
from __future__ import annotations

from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import get_op


def infer_shapes(graph: Graph) -> Graph:
    """Re-run type inference in topological order and record the results in ``graph.tensors``."""
    for n in graph.topo():
        types = get_op(n.op).run_infer(n, [graph.tensors[t] if t else None for t in n.inputs])
        for t, ty in zip(n.outputs, types):
            if t:
                old = graph.tensors[t]
                if old.shape != ty.shape or old.dtype != ty.dtype:
                    graph.set_tensor(old.with_(shape=ty.shape, dtype=ty.dtype))
    return graph
