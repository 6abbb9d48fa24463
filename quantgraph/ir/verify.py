"""verify(graph): the IR's invariants, checked after import and (with QUANTGRAPH_VERIFY=1) after every pass."""
from __future__ import annotations

from quantgraph.errors import GraphError, QuantgraphError
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import get_op
from quantgraph.ir.shapes import format_shape, shapes_compatible
from quantgraph.ir.subgraph import has_subgraphs, subgraphs


def verify(graph: Graph) -> Graph:
    """Check that ``graph`` is acyclic, every input is defined before use, attributes match their op's schema and
    type inference agrees with the recorded TensorInfo, in the graph and (through their scopes) in every subgraph.
    Raises GraphError listing every problem; returns the graph.
    """
    problems = _problems(graph, graph.name)
    if problems:
        head = f"graph '{graph.name}' failed verification ({len(problems)} problem(s)):\n  "
        raise GraphError(head + "\n  ".join(problems[:50]) + ("\n  ..." if len(problems) > 50 else ""))
    return graph


def _check_subgraphs(graph: Graph, n: Node, where: str, path: str) -> list[str]:
    """A node's subgraphs: each verified in its own scope, and its captures bound to the node's trailing inputs
    (defined in the enclosing graph, with the same dtype)."""
    problems: list[str] = []
    subs = subgraphs(n)
    k = sum(len(g.captures) for _, g in subs)
    if k > len(n.inputs):
        return [f"{where}: its subgraphs capture {k} outer values but the node has only {len(n.inputs)} inputs"]
    tail = n.inputs[len(n.inputs) - k:]
    at = 0
    for attr, g in subs:
        for c, t in zip(g.captures, tail[at:at + len(g.captures)]):
            if c not in g.tensors:
                problems.append(f"{where}: capture '{c}' of {attr} has no TensorInfo")
            elif t in graph.tensors and graph.tensors[t].dtype != g.tensors[c].dtype:
                problems.append(f"{where}: {attr} reads outer '{t}' as '{c}' of {g.tensors[c].dtype}; the outer "
                                f"value is {graph.tensors[t].dtype}")
        at += len(g.captures)
        problems += _problems(g, f"{path}/{n.name}.{attr}")
    return problems


def _problems(graph: Graph, path: str) -> list[str]:
    problems: list[str] = []
    order = graph.topo()  # raises on a cycle
    prefix = "" if path == graph.name else f"in subgraph {path}: "
    defined = set(graph.inputs) | set(graph.captures) | {k for k, v in graph.tensors.items() if v.const is not None}
    for k, info in graph.tensors.items():
        if info.name != k:
            problems.append(f"tensor '{k}' is recorded under the name '{info.name}'")
    for t in graph.inputs:
        if t not in graph.tensors:
            problems.append(f"graph input '{t}' has no TensorInfo")
    for n in order:
        where = f"node '{n.name}' ({n.op})"
        try:
            d = get_op(n.op)
            d.check_arity(n.name, len(n.inputs), len(n.outputs))
            complete = d.complete_attrs(n.name, n.attrs)
        except QuantgraphError as exc:
            problems.append(str(exc))
            continue
        if set(complete) != set(n.attrs):
            problems.append(f"{where}: attributes {sorted(n.attrs)} are not complete (schema: {sorted(complete)})")
        for i, t in enumerate(n.inputs):
            if t and t not in defined:
                problems.append(f"{where}: input {i} '{t}' is used before it is defined")
        for t in n.outputs:
            if not t:
                continue
            if t in defined:
                problems.append(f"{where}: output '{t}' is defined twice")
            if t not in graph.tensors:
                problems.append(f"{where}: output '{t}' has no TensorInfo")
            elif graph.producer(t) is None or graph.producer(t).name != n.name:  # type: ignore[union-attr]
                problems.append(f"{where}: output '{t}' is not linked to its producer")
            defined.add(t)
        if has_subgraphs(n):
            problems += _check_subgraphs(graph, n, where, path)
        if any(t and t not in graph.tensors for t in n.inputs):
            continue
        try:
            types = d.run_infer(n, [graph.tensors[t] if t else None for t in n.inputs])
        except QuantgraphError as exc:
            problems.append(f"inference failed: {exc}")
            continue
        for t, ty in zip(n.outputs, types):
            if not t or t not in graph.tensors:
                continue
            info = graph.tensors[t]
            if info.dtype != ty.dtype:
                problems.append(f"{where}: output '{t}' is recorded as {info.dtype}; inference says {ty.dtype}")
            if not shapes_compatible(info.shape, ty.shape):
                problems.append(f"{where}: output '{t}' is recorded with shape {format_shape(info.shape)}; "
                                f"inference says {format_shape(ty.shape)}")
    for t in graph.outputs:
        if t not in defined:
            problems.append(f"graph output '{t}' is never defined")
    return [p if p.startswith("in subgraph") else prefix + p for p in problems]
