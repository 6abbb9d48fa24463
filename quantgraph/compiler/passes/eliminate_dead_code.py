"""eliminate_dead_code: drop nodes whose outputs nothing reads, and unread constants."""
from __future__ import annotations

from quantgraph.compiler.rewrite import record
from quantgraph.ir.graph import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """Erase nodes (in reverse topological order) none of whose outputs is read or a graph output."""
    outputs = set(graph.outputs)
    for n in reversed(graph.topo()):
        if not any(t and (t in outputs or graph.consumers(t)) for t in n.outputs):
            graph.erase(n)
            record(n.op)
    dropped = graph.remove_unused_constants()
    record("constants", dropped)
    return graph
