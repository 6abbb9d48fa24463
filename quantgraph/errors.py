"""Exception hierarchy.

Every error a user's model or call can trigger is a ``QuantgraphError`` whose message names the node and op
(when there is one), what was found and what was expected:

    ShapeError: node 'conv_7' (Conv): W has shape (64, 3, 7); Conv expects 4-D W (M, C/group, kH, kW)
"""
from __future__ import annotations


class QuantgraphError(Exception):
    """Base class. ``node`` and ``op`` name where the problem is, when it is tied to a node."""

    def __init__(self, message: str, node: str | None = None, op: str | None = None):
        self.message = message
        self.node = node
        self.op = op
        super().__init__(self._format())

    def _format(self) -> str:
        if self.node is not None and self.op is not None:
            return f"node '{self.node}' ({self.op}): {self.message}"
        if self.node is not None:
            return f"node '{self.node}': {self.message}"
        if self.op is not None:
            return f"op {self.op}: {self.message}"
        return self.message


class GraphError(QuantgraphError):
    """The graph breaks an invariant (cycle, undefined input, bad attribute, duplicate name)."""


class ShapeError(QuantgraphError):
    """Inputs of a node have shapes or dtypes the op does not accept."""


class UnsupportedOpError(QuantgraphError):
    """An op (or an op version, attribute value or dtype) that quantgraph does not implement."""


class ModelLoadError(QuantgraphError):
    """A model file or object could not be read (missing, truncated, not a model)."""


class PassError(QuantgraphError):
    """A compiler pass failed; the cause is chained."""


class KernelError(QuantgraphError):
    """A kernel was called with arguments it cannot run on (checked before any JIT code runs)."""


class InputError(QuantgraphError, ValueError):
    """A compiled model was called with a missing, unknown or mis-shaped/typed input."""
