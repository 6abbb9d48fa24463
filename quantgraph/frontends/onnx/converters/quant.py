"""ONNX converters: quantization ops (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv).

Every version of these ops only added attributes whose defaults give the older behaviour (axis, saturate,
block_size, output_dtype, precision) or new element types, so one converter per op, registered at its first
version, declares the attributes of all versions.
"""
from __future__ import annotations

from typing import Any, Sequence

from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.dtypes import ir_dtype
from quantgraph.frontends.onnx.registry import onnx_op


def _dtype_attr(g: ConvertContext, value: int, what: str) -> str | None:
    """An ONNX element-type attribute (0 = unset) as an IR dtype name."""
    if not value:
        return None
    try:
        return ir_dtype(value, what)
    except UnsupportedOpError as exc:
        raise g.unsupported(exc.message) from None


def _check_kernel_shape(g: ConvertContext, w: str, kernel_shape: Sequence[int]) -> None:
    """kernel_shape is redundant with W's shape; a model where they disagree is malformed."""
    shape = g.info(w).shape
    if kernel_shape and shape is not None and all(isinstance(d, int) for d in shape[2:]) and \
            tuple(kernel_shape) != tuple(shape[2:]):
        raise g.error(f"kernel_shape {tuple(kernel_shape)} does not match W's spatial shape {tuple(shape[2:])}")


@onnx_op("QuantizeLinear", since=10)
def QuantizeLinear(g: ConvertContext, x: str, y_scale: str, y_zero_point: str | None = None, *, axis: int = 1,
                   saturate: int = 1, block_size: int = 0, output_dtype: int = 0, precision: int = 0) -> Any:
    # NOTE: saturate only changes float8 outputs, which quantgraph does not support; integer outputs always saturate.
    return g.add("QuantizeLinear", [x, y_scale, y_zero_point], axis=axis, block_size=block_size,
                 output_dtype=_dtype_attr(g, output_dtype, "output_dtype"),
                 precision=_dtype_attr(g, precision, "precision"))


@onnx_op("DequantizeLinear", since=10)
def DequantizeLinear(g: ConvertContext, x: str, x_scale: str, x_zero_point: str | None = None, *, axis: int = 1,
                     block_size: int = 0, output_dtype: int = 0) -> Any:
    return g.add("DequantizeLinear", [x, x_scale, x_zero_point], axis=axis, block_size=block_size,
                 output_dtype=_dtype_attr(g, output_dtype, "output_dtype"))


@onnx_op("DynamicQuantizeLinear", since=11)
def DynamicQuantizeLinear(g: ConvertContext, x: str) -> Any:
    return g.add("DynamicQuantizeLinear", [x])


@onnx_op("MatMulInteger", since=10)
def MatMulInteger(g: ConvertContext, A: str, B: str, a_zero_point: str | None = None,
                  b_zero_point: str | None = None) -> Any:
    return g.add("MatMulInteger", [A, B, a_zero_point, b_zero_point])


@onnx_op("QLinearMatMul", since=10)
def QLinearMatMul(g: ConvertContext, a: str, a_scale: str, a_zero_point: str, b: str, b_scale: str,
                  b_zero_point: str, y_scale: str, y_zero_point: str) -> Any:
    return g.add("QLinearMatMul", [a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point])


@onnx_op("ConvInteger", since=10)
def ConvInteger(g: ConvertContext, x: str, w: str, x_zero_point: str | None = None, w_zero_point: str | None = None,
                *, auto_pad: str = "NOTSET", dilations: Sequence[int] = (), group: int = 1,
                kernel_shape: Sequence[int] = (), pads: Sequence[int] = (), strides: Sequence[int] = ()) -> Any:
    _check_kernel_shape(g, w, kernel_shape)
    return g.add("ConvInteger", [x, w, x_zero_point, w_zero_point], auto_pad=auto_pad, dilations=dilations,
                 group=group, pads=pads, strides=strides)


@onnx_op("QLinearConv", since=10)
def QLinearConv(g: ConvertContext, x: str, x_scale: str, x_zero_point: str, w: str, w_scale: str, w_zero_point: str,
                y_scale: str, y_zero_point: str, B: str | None = None, *, auto_pad: str = "NOTSET",
                dilations: Sequence[int] = (), group: int = 1, kernel_shape: Sequence[int] = (),
                pads: Sequence[int] = (), strides: Sequence[int] = ()) -> Any:
    _check_kernel_shape(g, w, kernel_shape)
    return g.add("QLinearConv", [x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B],
                 auto_pad=auto_pad, dilations=dilations, group=group, pads=pads, strides=strides)
