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

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.kernels.registry import Kernel, Step, select

__all__ = ["Kernel", "LoweredNode", "Step", "lower", "select"]


@dataclass
class LoweredNode:
    node: Node
    kernel: Kernel | None         # None: registry reference
    packed: Any = None
    reason: str = ""              # why the best candidate refused (for the report)


def lower(graph: Graph) -> list[LoweredNode]:
    """Choose a kernel for every node (topological order) and pre-pack its constant weights once."""
    out = []
    for n in graph.topo():
        k, reason = select(n, graph)
        out.append(LoweredNode(n, k, k.prepack(n, graph) if k is not None and k.prepack else None, reason))
    return out
