"""Subgraphs: graph-valued node attributes (If branches, Loop/Scan bodies) and their outer-scope reads.

A subgraph is an ordinary :class:`Graph`. The outer-scope values it reads by name are its ``captures`` (named as
in the enclosing graph, typed in its ``tensors``); the owning node lists them as its trailing inputs, one per
capture, subgraph after subgraph in attribute order. Every pass therefore sees an outer-scope read as an ordinary
use (dead-code elimination keeps the producer; ``replace_uses`` rewires it; the topological order respects it),
and the subgraph stays self-contained (verified, printed and serialized on its own).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from quantgraph.errors import GraphError
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node


def subgraphs(n: Node) -> list[tuple[str, Graph]]:
    """The node's graph-valued attributes, in schema order."""
    return [(k, v) for k, v in n.attrs.items() if isinstance(v, Graph)]


def has_subgraphs(n: Node) -> bool:
    return any(isinstance(v, Graph) for v in n.attrs.values())


def num_captured(n: Node) -> int:
    return sum(len(g.captures) for _, g in subgraphs(n))


def own_inputs(n: Node, values: Sequence[Any]) -> list[Any]:
    """``values`` (one per node input) without the trailing captured ones."""
    k = num_captured(n)
    return list(values[: len(values) - k]) if k else list(values)


def captured(n: Node, values: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per subgraph attribute: capture name -> the value bound to it (from the node's trailing inputs)."""
    k = num_captured(n)
    tail = list(values[len(values) - k:]) if k else []
    out: dict[str, dict[str, Any]] = {}
    at = 0
    for attr, g in subgraphs(n):
        out[attr] = dict(zip(g.captures, tail[at:at + len(g.captures)]))
        at += len(g.captures)
    return out


def run_subgraph(g: Graph, inputs: Sequence[Any], captures: Mapping[str, Any]) -> list[Any]:
    """Run ``g`` on its inputs (positional) and captured values; its outputs in order."""
    from quantgraph.ir.interpreter import run  # the interpreter imports the op registry; import when running

    if len(inputs) != len(g.inputs):
        raise GraphError(f"subgraph '{g.name}' takes {len(g.inputs)} inputs; got {len(inputs)}")
    feeds = dict(captures)
    feeds.update(zip(g.inputs, inputs))
    env = run(g, feeds)
    return [env[t] for t in g.outputs]


def copy_deep(g: Graph) -> Graph:
    """A copy whose nested subgraphs are copies too (passes may then edit them)."""
    out = g.copy()
    for n in out.topo():
        subs = subgraphs(n)
        if subs:
            attrs = dict(n.attrs)
            for k, s in subs:
                attrs[k] = copy_deep(s)
            out._replace_node(n, Node(n.name, n.op, n.inputs, n.outputs, attrs))
    return out


def standalone(n: Node, attr: str, outer: Graph | None = None) -> Graph:
    """Subgraph ``attr`` of ``n`` as a graph of its own, named ``{node}.{attr}``: its inputs, then its captures as
    more inputs, except the captures bound to constants of ``outer``, which become its constants (so its passes fold
    and fuse them, and the quantizer sees weights). The constant arrays are shared, not copied."""
    sub = n.attrs[attr]
    g = sub.copy()
    g.name = f"{n.name}.{attr}"
    bound = captured(n, list(n.inputs))[attr]
    inputs = list(sub.inputs)
    for c in sub.captures:
        info = outer.tensors.get(bound[c]) if outer is not None else None
        if info is not None and info.const is not None:
            g.tensors[c] = info.with_(name=c)
        else:
            inputs.append(c)
    g.inputs, g.captures = inputs, []
    return g


def as_subgraph(g: Graph, like: Graph) -> Graph:
    """A standalone graph made from ``like`` (see :func:`standalone`) as a subgraph again: ``like``'s inputs, the
    rest of its inputs as captures (in ``like``'s capture order); ``g`` is changed and returned."""
    inputs = set(g.inputs)
    g.name = like.name
    g.captures = [c for c in like.captures if c in inputs]
    g.inputs = list(like.inputs)
    return g


def replace_subgraphs(graph: Graph, n: Node, new: Mapping[str, Graph]) -> Node:
    """Give ``n`` the subgraphs ``new`` (attribute -> graph) and bind its trailing inputs to their captures, each
    to the outer value it was bound to (a new subgraph captures a subset of what the old one did)."""
    bound = captured(n, list(n.inputs))
    attrs = {**n.attrs, **new}
    tail = []
    for attr, sub in [(k, v) for k, v in attrs.items() if isinstance(v, Graph)]:
        missing = [c for c in sub.captures if c not in bound.get(attr, {})]
        if missing:
            raise GraphError(f"new {attr} captures {missing}, which the old one did not", n.name, n.op)
        tail += [bound[attr][c] for c in sub.captures]
    node = Node(n.name, n.op, tuple(own_inputs(n, list(n.inputs))) + tuple(tail), n.outputs, attrs)
    graph._replace_node(n, node)
    return node


def as_bool(cond: Any) -> bool:
    return bool(np.asarray(cond).reshape(-1)[0])


def inline(graph: Graph, n: Node, attr: str) -> list[str]:
    """Replace node ``n`` by the nodes of its subgraph ``attr`` (an If branch: no inputs). The subgraph's values get
    names under the node's (``If_3/t``), its outputs the node's output names; returns the tensors that now stand
    for the node's outputs (their types may be more precise than the node's were)."""
    sub = n.attrs[attr]
    if sub.inputs:
        raise GraphError(f"cannot inline {attr}: it takes inputs {sub.inputs}", n.name, n.op)
    names: dict[str, str] = dict(captured(n, list(n.inputs))[attr])
    fresh: set[str] = set()
    for t, info in sub.tensors.items():
        if info.const is not None:
            names[t] = graph.add_const(info.const, name=graph.unique_name(f"{n.name}/{t}"))
            if info.qparams is not None:
                graph.set_tensor(graph.tensors[names[t]].with_(qparams=info.qparams))
    for s in sub.topo():
        outs = []
        for t in s.outputs:
            if t:
                names[t] = graph.unique_name(f"{n.name}/{t}")
                fresh.add(names[t])
            outs.append(names.get(t, ""))
        node = Node(graph.unique_name(f"{n.name}/{s.name}"), s.op, tuple(names[t] if t else "" for t in s.inputs),
                    tuple(outs), s.attrs)
        graph.insert_node(node, [sub.tensors[t].with_(name=names[t]) if t else None for t in s.outputs])
    values = [names[t] for t in sub.outputs]
    was_output = list(graph.outputs)
    for o, v in zip(n.outputs, values):
        if o:
            graph.replace_uses(o, v)
    graph.erase(n)
    result = []
    renamed: set[str] = set()
    for o, v in zip(n.outputs, values):
        if not o:
            result.append(v)
        elif v in fresh and v not in renamed:  # the branch computed it: give it the If output's name
            graph.rename_tensor(v, o)
            renamed.add(v)
            result.append(o)
        elif o in was_output:  # an outer value or constant passed through: keep the graph output's name
            graph.add("Identity", [v], name=graph.unique_name(f"{n.name}/Identity"), outputs=[o])
            graph.outputs = [o if was == o else cur for was, cur in zip(was_output, graph.outputs)]
            result.append(o)
        else:
            result.append(v)
    return result
