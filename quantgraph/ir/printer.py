"""A stable, one-line-per-node text dump of a graph (used for debugging, pass dumps and golden tests)."""
from __future__ import annotations

from typing import Any

import numpy as np

from quantgraph.ir.graph import Graph


def _attr(v: Any) -> str:
    if isinstance(v, np.ndarray):
        if v.size <= 4:
            return f"{v.dtype}{list(v.shape)}={v.reshape(-1).tolist()}"
        return f"{v.dtype}{list(v.shape)}"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_attr(x) for x in v) + ")"
    return repr(v) if isinstance(v, str) else str(v)


def format_graph(graph: Graph, show_consts: bool = False) -> str:
    """``%y = Op(%a, %b) {attr=...}  # dtype(shape)`` for every node, after the inputs and outputs. A node's
    subgraphs (If branches, loop bodies) follow it, indented, with the outer values they read as ``outer %t``."""
    return "\n".join(_lines(graph, show_consts, "graph", ""))


def _lines(graph: Graph, show_consts: bool, head: str, pad: str) -> list[str]:
    lines = [f"{pad}{head} {graph.name}"]
    pad2 = pad + "  "
    for t in graph.inputs:
        lines.append(f"{pad2}input  %{t}: {graph.tensors[t].describe()}")
    for t in graph.captures:
        lines.append(f"{pad2}outer  %{t}: {graph.tensors[t].describe()}")
    consts = [v for v in graph.tensors.values() if v.const is not None]
    if show_consts:
        for c in consts:
            lines.append(f"{pad2}const  %{c.name}: {c.describe()}")
    else:
        lines.append(f"{pad2}({len(consts)} constants)")
    for n in graph.topo():
        outs = ", ".join(f"%{t}" if t else "_" for t in n.outputs)
        ins = ", ".join(f"%{t}" if t else "_" for t in n.inputs)
        attrs = ", ".join(f"{k}={_attr(v)}" for k, v in sorted(n.attrs.items()) if not isinstance(v, Graph))
        types = ", ".join(graph.tensors[t].describe() for t in n.outputs if t)
        lines.append(f"{pad2}{outs} = {n.op}({ins})" + (f" {{{attrs}}}" if attrs else "") + f"  # {n.name}: {types}")
        for k, v in n.attrs.items():
            if isinstance(v, Graph):
                lines += _lines(v, show_consts, f"{k}:", pad2 + "  ")
    lines.append(f"{pad2}return " + ", ".join(f"%{t}" for t in graph.outputs))
    return lines
