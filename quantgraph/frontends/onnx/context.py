"""ConvertContext: what a converter sees of the graph being built (``g`` in every converter)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir.graph import Graph
from quantgraph.ir.tensor import TensorInfo


class ConvertContext:
    """Builds IR nodes for one ONNX node. New nodes are named after the ONNX node, so dumps show provenance."""

    def __init__(self, graph: Graph, node_name: str, op_type: str, opset: int, onnx_outputs: Sequence[str]):
        self.graph = graph
        self.node_name = node_name
        self.op_type = op_type
        self.opset = opset
        self.onnx_outputs = list(onnx_outputs)
        self.created: set[str] = set()   # tensors made by this conversion (may be renamed to the ONNX names)
        self._first = True

    @property
    def num_outputs(self) -> int:
        """How many outputs the ONNX node declares (trailing omitted ones excluded)."""
        outs = list(self.onnx_outputs)
        while outs and not outs[-1]:
            outs.pop()
        return len(outs)

    def output_used(self, i: int) -> bool:
        return i < len(self.onnx_outputs) and bool(self.onnx_outputs[i])

    def add(self, op: str, inputs: Sequence[str | None], outputs: int | None = None, **attrs: Any) -> Any:
        """Add an IR node; returns its output name(s)."""
        name = self.node_name if self._first else f"{self.node_name}/{op}"
        self._first = False
        result = self.graph.add(op, inputs, name=name, outputs=outputs, **attrs)
        for t in (result,) if isinstance(result, str) else result:
            if t:
                self.created.add(t)
        return result

    def const(self, value: Any, dtype: Any = None, name: str | None = None) -> str:
        t = self.graph.add_const(value, name=name or f"{self.node_name}/const", dtype=dtype)
        self.created.add(t)
        return t

    def info(self, tensor: str) -> TensorInfo:
        return self.graph.info(tensor)

    def value(self, tensor: str | None) -> np.ndarray | None:
        """The constant value of ``tensor``, or None when it is not a constant (or omitted)."""
        if not tensor:
            return None
        return self.graph.info(tensor).const

    def const_ints(self, tensor: str | None, what: str) -> tuple[int, ...] | None:
        """A constant integer input as a tuple (None when omitted); raises when it is not constant."""
        if not tensor:
            return None
        v = self.value(tensor)
        if v is None:
            raise self.unsupported(f"input {what} must be a constant (an initializer or Constant node) here")
        return tuple(int(x) for x in np.asarray(v).reshape(-1))

    def unsupported(self, message: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{message} (opset {self.opset})", self.node_name, self.op_type)

    def error(self, message: str) -> ShapeError:
        return ShapeError(message, self.node_name, self.op_type)
