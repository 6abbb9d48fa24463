"""ONNX converters: MaxPool, AveragePool, LpPool and the Global* pools (all versions onto the newest IR ops).

Older versions only lack attributes (storage_order < 8, ceil_mode < 10, dilations < 19 for AveragePool) whose
defaults are the IR defaults, so one converter per op covers every version.
"""
from __future__ import annotations

from typing import Any

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.converters.nn import window_attrs
from quantgraph.frontends.onnx.registry import onnx_op


def _pool_attrs(g: ConvertContext, X: str, kernel_shape: Any, auto_pad: str, pads: Any, strides: Any,
                dilations: Any, ceil_mode: int) -> dict[str, Any]:
    if kernel_shape is None:
        raise g.error("kernel_shape is missing; pooling needs the window size")
    # NOTE: SAME_* output sizes ignore ceil_mode, so auto_pad is only resolved when ceil_mode is off.
    resolve = window_attrs(g, X, tuple(kernel_shape), auto_pad, pads, strides, dilations) if not ceil_mode else {
        "auto_pad": auto_pad, "pads": tuple(pads or ()), "strides": tuple(strides or ()),
        "dilations": tuple(dilations or ())}
    return {**resolve, "kernel_shape": tuple(kernel_shape), "ceil_mode": int(ceil_mode)}


@onnx_op("MaxPool", since=1)
def MaxPool(g: ConvertContext, X: str, *, auto_pad: str = "NOTSET", ceil_mode: int = 0, dilations: Any = None,
            kernel_shape: Any = None, pads: Any = None, storage_order: int = 0, strides: Any = None) -> Any:
    attrs = _pool_attrs(g, X, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    outs = g.add("MaxPool", [X], outputs=2 if g.output_used(1) else 1, storage_order=storage_order, **attrs)
    return outs if g.output_used(1) else outs[0]


@onnx_op("AveragePool", since=1)
def AveragePool(g: ConvertContext, X: str, *, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                count_include_pad: int = 0, dilations: Any = None, kernel_shape: Any = None, pads: Any = None,
                strides: Any = None) -> str:
    attrs = _pool_attrs(g, X, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    return g.add("AveragePool", [X], count_include_pad=count_include_pad, **attrs)


@onnx_op("LpPool", since=1)
def LpPool(g: ConvertContext, X: str, *, auto_pad: str = "NOTSET", ceil_mode: int = 0, dilations: Any = None,
           kernel_shape: Any = None, p: Any = 2, pads: Any = None, strides: Any = None) -> str:
    attrs = _pool_attrs(g, X, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    return g.add("LpPool", [X], p=_int_p(g, p), **attrs)


def _int_p(g: ConvertContext, p: Any) -> int:
    # LpPool-1/GlobalLpPool-1 declared p as a float; later versions as an int. Only whole values are meaningful.
    if float(p) != int(p) or int(p) < 1:
        raise g.unsupported(f"p = {p} is not supported; expected a positive integer")
    return int(p)


@onnx_op("GlobalAveragePool", since=1)
def GlobalAveragePool(g: ConvertContext, X: str) -> str:
    return g.add("GlobalAveragePool", [X])


@onnx_op("GlobalMaxPool", since=1)
def GlobalMaxPool(g: ConvertContext, X: str) -> str:
    return g.add("GlobalMaxPool", [X])


@onnx_op("GlobalLpPool", since=1)
def GlobalLpPool(g: ConvertContext, X: str, *, p: Any = 2) -> str:
    return g.add("GlobalLpPool", [X], p=_int_p(g, p))
