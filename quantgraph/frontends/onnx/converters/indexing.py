"""ONNX converters: gather/scatter and data-dependent selection ops (see quantgraph/ir/ops/indexing.py).

Scatter (opset 9, deprecated in 11) is ScatterElements without a reduction.
"""
from __future__ import annotations

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.indexing import REDUCTIONS


def _reduction(g: ConvertContext, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise g.unsupported(f"reduction '{reduction}' is not supported; supported: {', '.join(REDUCTIONS)}")
    return reduction


@onnx_op("Gather", since=1)
def Gather(g: ConvertContext, data: str, indices: str, *, axis: int = 0) -> str:
    return g.add("Gather", [data, indices], axis=axis)


@onnx_op("GatherElements", since=11)
def GatherElements(g: ConvertContext, data: str, indices: str, *, axis: int = 0) -> str:
    return g.add("GatherElements", [data, indices], axis=axis)


@onnx_op("GatherND", since=11)
def GatherND(g: ConvertContext, data: str, indices: str, *, batch_dims: int = 0) -> str:
    return g.add("GatherND", [data, indices], batch_dims=batch_dims)


@onnx_op("Scatter", since=9)
def Scatter(g: ConvertContext, data: str, indices: str, updates: str, *, axis: int = 0) -> str:
    return g.add("ScatterElements", [data, indices, updates], axis=axis)


@onnx_op("ScatterElements", since=11)
def ScatterElements(g: ConvertContext, data: str, indices: str, updates: str, *, axis: int = 0,
                    reduction: str = "none") -> str:
    return g.add("ScatterElements", [data, indices, updates], axis=axis, reduction=_reduction(g, reduction))


@onnx_op("ScatterND", since=11)
def ScatterND(g: ConvertContext, data: str, indices: str, updates: str, *, reduction: str = "none") -> str:
    return g.add("ScatterND", [data, indices, updates], reduction=_reduction(g, reduction))


@onnx_op("NonZero", since=9)
def NonZero(g: ConvertContext, X: str) -> str:
    return g.add("NonZero", [X])


@onnx_op("Compress", since=9)
def Compress(g: ConvertContext, input: str, condition: str, *, axis: int | None = None) -> str:
    return g.add("Compress", [input, condition], axis=axis)


@onnx_op("Trilu", since=14)
def Trilu(g: ConvertContext, input: str, k: str | None = None, *, upper: int = 1) -> str:
    return g.add("Trilu", [input, k], upper=upper)


@onnx_op("ReverseSequence", since=10)
def ReverseSequence(g: ConvertContext, input: str, sequence_lens: str, *, batch_axis: int = 1,
                    time_axis: int = 0) -> str:
    return g.add("ReverseSequence", [input, sequence_lens], batch_axis=batch_axis, time_axis=time_axis)
