"""Kernel records for float32 Softmax (last axis), LayerNormalization (last axis) and inference BatchNormalization."""
from __future__ import annotations

from typing import Any

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.shapes import normalize_axis
from quantgraph.kernels.checks import all_of, const_of, float32_only, rank_of, single_output, step
from quantgraph.kernels.fp32 import norm_f32
from quantgraph.kernels.registry import Kernel, Step, register


def _softmax_accepts(n: Node, g: Graph) -> str | None:
    r = rank_of(g, n.inputs[0])
    if r is None or normalize_axis(n.attrs["axis"], r) != r - 1:
        return "softmax over a non-last axis runs the reference"
    return float32_only(n, g)


def _softmax_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    c = ins[0].shape[-1]
    return [step(norm_f32.softmax_rows, ins[0].reshape(-1, c), outs[0].reshape(-1, c))]


def _ln_accepts(n: Node, g: Graph) -> str | None:
    r = rank_of(g, n.inputs[0])
    if r is None or normalize_axis(n.attrs["axis"], r) != r - 1:
        return "LayerNormalization over more than the last axis runs the reference"
    return all_of(single_output, lambda n_, g_: float32_only(n_, g_))(n, g)


def _ln_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    c = ins[0].shape[-1]
    scale = np.broadcast_to(ins[1], (c,)).astype(np.float32)
    bias = ins[2] if len(ins) > 2 and ins[2] is not None else None
    b = np.zeros(c, np.float32) if bias is None else np.ascontiguousarray(np.broadcast_to(bias, (c,)), np.float32)
    return [step(norm_f32.layernorm_rows, ins[0].reshape(-1, c), scale, b, bias is not None,
                 float(n.attrs["epsilon"]), outs[0].reshape(-1, c))]


def _bn_accepts(n: Node, g: Graph) -> str | None:
    if any(const_of(g, t) is None for t in n.inputs[1:5]):
        return "BatchNormalization parameters are not constants"
    if (rank_of(g, n.inputs[0]) or 0) < 2:
        return "BatchNormalization needs (N, C, ...)"
    return all_of(single_output, lambda n_, g_: float32_only(n_, g_, 1))(n, g)


def _bn_prepack(n: Node, g: Graph) -> dict:
    a, b = norm_f32.bn_fold(*(const_of(g, t) for t in n.inputs[1:5]), n.attrs["epsilon"])
    return {"a": a, "b": b}


def _bn_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    x = ins[0]
    shp = (x.shape[0], x.shape[1], -1)
    return [step(norm_f32.channel_affine, x.reshape(shp), packed["a"], packed["b"], outs[0].reshape(shp))]


register(Kernel("softmax_f32_numba", ("Softmax",), _softmax_accepts, _softmax_bind, inplace=True))
register(Kernel("layernorm_f32_numba", ("LayerNormalization",), _ln_accepts, _ln_bind, inplace=True))
register(Kernel("batchnorm_f32_numba", ("BatchNormalization",), _bn_accepts, _bn_bind, prepack=_bn_prepack,
                inplace=True))
