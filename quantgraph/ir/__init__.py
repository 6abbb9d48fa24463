"""The IR: Graph, typed tensors, the op registry, the reference interpreter. Never imports numba or llvmlite."""
from __future__ import annotations

from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import REQUIRED, Fusion, OpDef, all_ops, get_op, op, ref
from quantgraph.ir.printer import format_graph
from quantgraph.ir.serialize import load, save
from quantgraph.ir.tensor import QuantParams, TensorInfo, TensorType
from quantgraph.ir.verify import verify

__all__ = ["Graph", "GraphBuilder", "Node", "TensorInfo", "TensorType", "QuantParams", "Fusion", "OpDef",
           "REQUIRED", "op", "get_op", "all_ops", "ref", "verify", "format_graph", "save", "load"]
