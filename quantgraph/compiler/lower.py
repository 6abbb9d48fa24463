"""lower: pick a kernel per node from the kernel registry and pre-pack its constant weights once.

The registry (``kernels/registry.py``) holds every kernel, fp32 and int8, with the ops and dtypes it serves and the
ISA rungs it runs on; each candidate's ``refusal`` says why it cannot run a node (or None). A node no kernel accepts
runs its registry reference (``get_op(op).run_reference``), so any graph runs. Binding to concrete buffers happens
per input-shape signature in ``plan.py``; packing does not depend on shapes, so it happens here, once per compiled
model. This is the only module that imports the kernel registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quantgraph.ir.dtypes import is_tensor
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.subgraph import as_bool, captured, subgraphs
from quantgraph.kernels.registry import Kernel, Step, select

__all__ = ["Kernel", "LoweredNode", "Step", "lower", "select"]


@dataclass
class LoweredNode:
    node: Node
    kernel: Kernel | None         # None: registry reference
    packed: Any = None
    reason: str = ""              # why the best candidate refused (for the report)


def lower(graph: Graph, opt_level: int = 3) -> list[LoweredNode]:
    """Choose a kernel for every node (topological order) and pre-pack its constant weights once. An If's branches
    are compiled once each, at ``opt_level``, as graphs of their own (:data:`IF_BRANCHES`)."""
    out = []
    for n in graph.topo():
        k, reason = select(n, graph)
        if k is None and n.op == "If" and IF_BRANCHES.accepts(n, graph) is None:
            out.append(LoweredNode(n, IF_BRANCHES, _compile_branches(n, opt_level), reason))
            continue
        out.append(LoweredNode(n, k, k.prepack(n, graph) if k is not None and k.prepack else None, reason))
    return out


# -- If: each branch compiled once as its own graph (its captures become its inputs) ----------------------------
def _compile_branches(n: Node, opt_level: int) -> dict[str, Any]:
    from quantgraph.compiler.api import compile as compile_graph  # (api imports this module)

    out = {}
    for attr, sub in subgraphs(n):
        g = sub.copy()
        g.name = f"{n.name}.{attr}"
        g.inputs, g.captures = list(sub.inputs) + list(sub.captures), []
        out[attr] = compile_graph(g, opt_level=max(1, opt_level))
    return out


def _if_accepts(n: Node, g: Graph) -> str | None:
    if any(t and not is_tensor(g.tensors[t].dtype) for t in list(n.inputs) + list(n.outputs)):
        return "sequence and optional values run on the reference"
    return None


def _if_bind(n: Node, packed: dict[str, Any], ins: list, outs: list, scratch: Any) -> list[Step]:
    def run(*values: Any) -> None:
        attr = "then_branch" if as_bool(values[0]) else "else_branch"
        model = packed[attr]
        feeds = captured(n, values)[attr]
        result = model._execute({t: feeds[t] for t in model.graph.inputs})
        for dst, t in zip(outs, model.graph.outputs):
            if dst is not None:
                np.copyto(dst, result[t], casting="unsafe")
    return [(run, tuple(ins))]


#: not in the kernel table (it compiles graphs, which kernels never do): ``lower`` picks it for If nodes
IF_BRANCHES = Kernel("if_compiled_branches", ("If",), _if_accepts, _if_bind)
