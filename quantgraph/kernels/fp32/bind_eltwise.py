"""Kernel records for float32 elementwise ops: activations (the activation table's rows, one Numba kernel that
branches on the row's code; Clip's bounds are the row's parameters) and numpy ufuncs writing into planned buffers.
All may run in place.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.activation import ACTIVATION_OPS, activation_of
from quantgraph.kernels.checks import const_of, float32_only, step
from quantgraph.kernels.fp32.eltwise_f32 import row_split, unary_2d
from quantgraph.kernels.registry import Kernel, Step, register


def _act_accepts(n: Node, g: Graph) -> str | None:
    row = activation_of(n)
    if row is None:
        return f"{n.op} with these attributes is no row of the activation table"
    params = row.params(n, lambda t: const_of(g, t))
    return params if isinstance(params, str) else float32_only(n, g, 1)


def _act_prepack(n: Node, g: Graph) -> tuple[int, float, float]:
    row = activation_of(n)
    alpha, beta = row.params(n, lambda t: const_of(g, t))  # type: ignore[union-attr, misc]
    return row.code, alpha, beta  # type: ignore[union-attr]


def _act_bind(n: Node, packed: tuple[int, float, float], ins: list, outs: list, scratch: Any) -> list[Step]:
    x, y = ins[0], outs[0]
    cols = row_split(x.size)
    return [step(unary_2d, x.reshape(-1, cols), y.reshape(-1, cols), *packed)]


_UFUNCS: dict[str, Callable[..., Any]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
    "Exp": np.exp, "Sqrt": np.sqrt, "Neg": np.negative, "Abs": np.abs, "Reciprocal": np.reciprocal,
    "Log": np.log, "Max": np.maximum, "Min": np.minimum,
}


def _ufunc_accepts(n: Node, g: Graph) -> str | None:
    if n.op in ("Max", "Min") and len(n.inputs) != 2:
        return f"{n.op} with {len(n.inputs)} inputs runs the reference"
    return float32_only(n, g)


def _ufunc_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    if n.op in ("Max", "Min"):  # positional out= is deprecated for maximum/minimum
        return [step(_binary_out, _UFUNCS[n.op], ins[0], ins[1], outs[0])]
    return [step(_UFUNCS[n.op], *ins, outs[0])]


def _binary_out(fn: Any, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    fn(a, b, out=out)


# every standalone op of the activation table (Relu, Clip, Gelu, Erf, ...) runs on the one Numba activation kernel
register(Kernel("unary_f32_numba", tuple(sorted(ACTIVATION_OPS)), _act_accepts, _act_bind, dtypes=("float32",),
                prepack=_act_prepack, inplace=True))
register(Kernel("eltwise_f32_numpy", tuple(_UFUNCS), _ufunc_accepts, _ufunc_bind, dtypes=("float32",), inplace=True))
