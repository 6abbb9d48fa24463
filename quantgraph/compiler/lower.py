"""lower: pick a kernel per node from the kernel registry and pre-pack its constant weights once.

The registry (``kernels/registry.py``) holds every kernel, fp32 and int8, with the ops and dtypes it serves and the
ISA rungs it runs on; each candidate's ``refusal`` says why it cannot run a node (or None). A node no kernel accepts
runs its registry reference (``get_op(op).run_reference``), so any graph runs. Binding to concrete buffers happens
per input-shape signature in ``plan.py``; packing does not depend on shapes, so it happens here, once per compiled
model. This is the only module that imports the kernel registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from quantgraph.ir.dtypes import is_tensor
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.control_flow import interpreted as interpreted_body
from quantgraph.ir.ops.control_flow import run_loop, run_scan
from quantgraph.ir.subgraph import as_bool, captured, standalone, subgraphs
from quantgraph.kernels.registry import Kernel, Step, select

__all__ = ["Kernel", "LoweredNode", "Step", "lower", "select"]


@dataclass
class LoweredNode:
    node: Node
    kernel: Kernel | None         # None: registry reference
    packed: Any = None
    reason: str = ""              # why the best candidate refused (for the report)


def lower(graph: Graph, opt_level: int = 3) -> list[LoweredNode]:
    """Choose a kernel for every node (topological order) and pre-pack its constant weights once. The branches of an
    If and the body of a Loop or Scan are compiled once each, at ``opt_level``, as graphs of their own
    (:data:`SUBGRAPHS`)."""
    out = []
    for n in graph.topo():
        k, reason = select(n, graph)
        if k is None and n.op in SUBGRAPHS.ops and SUBGRAPHS.accepts(n, graph) is None:
            out.append(LoweredNode(n, SUBGRAPHS, _compile_subgraphs(n, graph, opt_level), reason))
            continue
        out.append(LoweredNode(n, k, k.prepack(n, graph) if k is not None and k.prepack else None, reason))
    return out


# -- If / Loop / Scan: each subgraph compiled once as its own graph (its captures become its last inputs) ----------
def _compile_subgraphs(n: Node, graph: Graph, opt_level: int) -> dict[str, Any]:
    from quantgraph.compiler.api import compile as compile_graph  # (api imports this module)

    # captures bound to outer constants are constants of the compiled subgraph: its passes fold and fuse them
    return {attr: compile_graph(standalone(n, attr, graph), opt_level=max(1, opt_level)) for attr, _ in subgraphs(n)}


def _subgraphs_accept(n: Node, g: Graph) -> str | None:
    values = [g.tensors[t].dtype for t in list(n.inputs) + list(n.outputs) if t]
    for _, sub in subgraphs(n):
        values += [sub.tensors[t].dtype for t in list(sub.inputs) + list(sub.outputs)]
    if not all(is_tensor(dt) for dt in values):
        return "sequence and optional values run on the reference"
    return None


#: plans a compiled loop body may build (one per input-shape signature); a body whose values change shape from
#: iteration to iteration (a growing concatenation) runs the interpreter past this, not a new plan per iteration
MAX_BODY_PLANS = 8


def _body_runner(n: Node, model: Any) -> Callable[[Sequence[Any], dict], list]:
    """Runs a compiled subgraph as the control-flow drivers call a body: positional inputs, then captures."""
    body = n.attrs["body"]
    own = body.inputs
    captures = model.graph.inputs[len(own):]
    interpreted = interpreted_body(body)

    def run(inputs: Sequence[Any], caps: dict) -> list:
        feeds = dict(zip(own, inputs))
        feeds.update((c, caps[c]) for c in captures)
        key = tuple(np.shape(feeds[t]) for t in model.graph.inputs)
        if key not in model._plans and len(model._plans) >= MAX_BODY_PLANS:
            return interpreted(inputs, caps)
        result = model._execute(feeds)
        return [result[t] for t in model.graph.outputs]
    return run


def _subgraphs_bind(n: Node, packed: dict[str, Any], ins: list, outs: list, scratch: Any) -> list[Step]:
    if n.op == "If":
        def results(*values: Any) -> list:
            attr = "then_branch" if as_bool(values[0]) else "else_branch"
            model = packed[attr]
            feeds = captured(n, values)[attr]
            result = model._execute({t: feeds[t] for t in model.graph.inputs})
            return [result[t] for t in model.graph.outputs]
    else:
        body = _body_runner(n, packed["body"])
        drive = run_loop if n.op == "Loop" else run_scan

        def results(*values: Any) -> list:
            return drive(n, values, body)

    from quantgraph.compiler.plan import Cell  # (plan imports this module)

    def run(*values: Any) -> None:
        got = results(*[v.value if isinstance(v, Cell) else v for v in values])
        for dst, value in zip(outs, got):
            if isinstance(dst, Cell):  # a run-time shape: the compiled subgraph's result is a fresh array
                dst.value = value
            elif dst is not None:
                np.copyto(dst, value, casting="unsafe")
    return [(run, tuple(ins))]


#: not in the kernel table (it compiles graphs, which kernels never do): ``lower`` picks it for If, Loop and Scan.
#: It binds values of run-time shape too (a branch's outputs often have one): the subgraph plans per shape itself.
SUBGRAPHS = Kernel("compiled_subgraphs", ("If", "Loop", "Scan"), _subgraphs_accept, _subgraphs_bind, dynamic=True)
