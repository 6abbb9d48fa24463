"""ONNX converters: Conv, ConvTranspose, Gemm, MatMul (every version from opset 1 maps onto the newest IR op).

``auto_pad`` SAME_*/VALID becomes explicit pads here when the input's spatial shape is known, so the IR shows
the real geometry; with symbolic spatial dims it stays an attribute and inference/reference resolve it.
"""
from __future__ import annotations

from typing import Any, Sequence

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.spatial import AUTO_PADS, Window, same_pads


def window_attrs(g: ConvertContext, x: str, kernel: Sequence[Any] | None, auto_pad: str, pads: Any,
                 strides: Any, dilations: Any) -> dict[str, Any]:
    """Window attributes for the IR op, with auto_pad resolved into pads when the spatial input dims are known."""
    if auto_pad not in AUTO_PADS:
        raise g.unsupported(f"auto_pad '{auto_pad}' is not supported; supported: {', '.join(AUTO_PADS)}")
    attrs = {"auto_pad": auto_pad, "pads": tuple(pads or ()), "strides": tuple(strides or ()),
             "dilations": tuple(dilations or ())}
    shape = g.info(x).shape
    if auto_pad == "NOTSET" or kernel is None or shape is None or not all(isinstance(k, int) for k in kernel):
        return attrs
    rank = len(kernel)
    if auto_pad == "VALID":
        return {**attrs, "auto_pad": "NOTSET", "pads": (0,) * (2 * rank)}
    in_dims = shape[2:]
    if len(in_dims) != rank or not all(isinstance(d, int) for d in in_dims):
        return attrs
    win = Window(tuple(kernel), tuple(strides or (1,) * rank), tuple(dilations or (1,) * rank), (0,) * (2 * rank))
    return {**attrs, "auto_pad": "NOTSET", "pads": same_pads(win, in_dims, upper=auto_pad == "SAME_UPPER")}


def _conv_kernel(g: ConvertContext, w: str, kernel_shape: Any) -> Sequence[Any] | None:
    shape = g.info(w).shape
    return tuple(kernel_shape) if kernel_shape else (tuple(shape[2:]) if shape is not None else None)


@onnx_op("Conv", since=1)
def Conv(g: ConvertContext, X: str, W: str, B: str | None = None, *, auto_pad: str = "NOTSET",
         dilations: Any = None, group: int = 1, kernel_shape: Any = None, pads: Any = None,
         strides: Any = None) -> str:
    attrs = window_attrs(g, X, _conv_kernel(g, W, kernel_shape), auto_pad, pads, strides, dilations)
    return g.add("Conv", [X, W, B], group=group, kernel_shape=tuple(kernel_shape or ()), **attrs)


@onnx_op("ConvTranspose", since=1)
def ConvTranspose(g: ConvertContext, X: str, W: str, B: str | None = None, *, auto_pad: str = "NOTSET",
                  dilations: Any = None, group: int = 1, kernel_shape: Any = None, output_padding: Any = None,
                  output_shape: Any = None, pads: Any = None, strides: Any = None) -> str:
    if auto_pad not in AUTO_PADS:
        raise g.unsupported(f"auto_pad '{auto_pad}' is not supported; supported: {', '.join(AUTO_PADS)}")
    # NOTE: SAME_* for ConvTranspose targets output = input * stride, resolved by the IR op (not window_attrs).
    return g.add("ConvTranspose", [X, W, B], auto_pad=auto_pad, dilations=tuple(dilations or ()), group=group,
                 kernel_shape=tuple(kernel_shape or ()), output_padding=tuple(output_padding or ()),
                 output_shape=tuple(output_shape or ()), pads=tuple(pads or ()), strides=tuple(strides or ()))


@onnx_op("Gemm", since=1)
def Gemm(g: ConvertContext, A: str, B: str, C: str | None = None, *, alpha: float = 1.0, beta: float = 1.0,
         broadcast: int = 0, transA: int = 0, transB: int = 0) -> str:
    # Gemm-1/6 'broadcast': with 0, C already has the output's shape, so numpy broadcasting covers both values.
    return g.add("Gemm", [A, B, C], alpha=float(alpha), beta=float(beta), transA=int(transA), transB=int(transB))


@onnx_op("MatMul", since=1)
def MatMul(g: ConvertContext, A: str, B: str) -> str:
    return g.add("MatMul", [A, B])
