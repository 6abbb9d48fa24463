"""Kernel records for data movement: views (Reshape, Flatten, Squeeze, Unsqueeze, Identity share their input's
buffer), Transpose and Concat (copies into the planned buffer). Any dtype.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.shapes import normalize_axis
from quantgraph.kernels.checks import always, const_of, no_steps, single_output, step
from quantgraph.kernels.registry import Kernel, Step, register


def _view_accepts(n: Node, g: Graph) -> str | None:
    if const_of(g, n.inputs[0]) is not None:
        return "input is a constant"
    return single_output(n, g)


def _transpose_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    perm = n.attrs.get("perm") or tuple(reversed(range(ins[0].ndim)))
    return [step(np.copyto, outs[0], ins[0].transpose(perm))]


def _concat_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    return [step(_concat, tuple(ins), normalize_axis(n.attrs["axis"], outs[0].ndim), outs[0])]


def _concat(xs: tuple, axis: int, out: np.ndarray) -> None:
    np.concatenate(xs, axis=axis, out=out)


# NOTE: Dropout is not a view: inference Dropouts are eliminated by the cleanup rules, and a training-mode one must
# run its reference.
register(Kernel("view", ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"), _view_accepts, no_steps,
                view=True))
register(Kernel("transpose_copy", ("Transpose",), _view_accepts, _transpose_bind))
register(Kernel("concat_copy", ("Concat",), always, _concat_bind))
