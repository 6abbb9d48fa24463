"""Kernel records for float32 2-D pooling (Max/Average, Global*, and FusedPool in NCHW or NHWC)."""
from __future__ import annotations

from typing import Any

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.spatial import window
from quantgraph.kernels.checks import all_of, float32_only, layout_of, rank_of, single_output, step
from quantgraph.kernels.fp32 import pool_f32
from quantgraph.kernels.registry import Kernel, Shapes, Step, register


_GLOBAL = ("GlobalAveragePool", "GlobalMaxPool")


def _pool_kind(n: Node) -> str:
    return n.attrs["kind"] if n.op == "FusedPool" else n.op


def _pool_accepts(n: Node, g: Graph) -> str | None:
    if rank_of(g, n.inputs[0]) != 4:
        return "only 2-D pooling (4-D X) has a kernel"
    if _pool_kind(n) not in _GLOBAL:
        if n.attrs.get("ceil_mode", 0):
            return "ceil_mode pooling runs the reference"
        if any(d != 1 for d in n.attrs.get("dilations", ()) or ()):
            return "dilated pooling runs the reference"
    return all_of(single_output, lambda n_, g_: float32_only(n_, g_))(n, g)


def _pool_scratch(n: Node, packed: Any, ins: Shapes, outs: Shapes) -> int | None:
    if _pool_kind(n) in _GLOBAL:
        return 0
    lay = layout_of(n)
    spatial = ins[0][2:] if lay == "NCHW" else ins[0][1:3]
    win = window(n, n.attrs["kernel_shape"], spatial)
    return None if any(p is None for p in win.pads) else 0


def _pool_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    kind, lay = _pool_kind(n), layout_of(n)
    if kind in _GLOBAL:
        return [step(pool_f32.global_pool, ins[0], outs[0], kind == "GlobalMaxPool", lay)]
    spatial = ins[0].shape[2:] if lay == "NCHW" else ins[0].shape[1:3]
    win = window(n, n.attrs["kernel_shape"], spatial)
    fn = pool_f32.pool_nchw if lay == "NCHW" else pool_f32.pool_nhwc
    return [step(fn, ins[0], outs[0], kind == "MaxPool", *win.kernel, *win.strides, *win.dilations, win.pads[0],
                 win.pads[1], bool(n.attrs.get("count_include_pad", 0)))]


register(Kernel("pool_f32_numba", ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "FusedPool"),
                _pool_accepts, _pool_bind, scratch=_pool_scratch))
