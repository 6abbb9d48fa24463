"""Node: one operation of the graph."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quantgraph.errors import ShapeError, UnsupportedOpError


@dataclass(frozen=True, eq=False)
class Node:
    """An op applied to named tensors.

    ``inputs`` may hold ``""`` for an omitted optional input (as in ONNX). ``attrs`` are complete (defaults filled in)
    and validated against the op's schema when the node is added to a graph.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op}, in={list(self.inputs)}, out={list(self.outputs)})"

    def error(self, message: str) -> "ShapeError":
        """A ShapeError naming this node and op: ``raise n.error("W must be 4-D")``."""
        from quantgraph.errors import ShapeError

        return ShapeError(message, self.name, self.op)

    def unsupported(self, message: str) -> "UnsupportedOpError":
        from quantgraph.errors import UnsupportedOpError

        return UnsupportedOpError(message, self.name, self.op)
