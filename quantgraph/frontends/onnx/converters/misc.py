"""ONNX converters: Constant, Identity, Dropout, Cast/CastLike, generators, arg/sort/scan ops, Einsum, Det.

Older opsets are translated to the IR ops (which have the newest ONNX semantics): attributes that later became
inputs turn into constant inputs, and old defaults are made explicit.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.dtypes import ir_dtype
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.dtypes import dtype_name

# Constant's value_* attributes: name -> numpy dtype of the tensor it makes (shape from the python value)
_CONSTANT_FORMS = {
    "value_float": np.float32, "value_floats": np.float32,
    "value_int": np.int64, "value_ints": np.int64,
    "value_string": object, "value_strings": object,
}


def _ir_type(g: ConvertContext, elem_type: Any, attr: str) -> str:
    """The IR dtype for an ONNX element type (int code, or a type name as in Cast-1); unsupported -> import error."""
    if isinstance(elem_type, str):
        try:
            elem_type = TensorProto.DataType.Value(elem_type.upper())
        except ValueError:
            raise g.unsupported(f"{attr} {elem_type!r} is not an ONNX element type") from None
    try:
        return ir_dtype(int(elem_type), attr)
    except UnsupportedOpError as exc:
        raise g.unsupported(exc.message) from None


@onnx_op("Constant", since=1)
def Constant(g: ConvertContext, *, value: Any = None, sparse_value: Any = None, value_float: Any = None,
             value_floats: Any = None, value_int: Any = None, value_ints: Any = None, value_string: Any = None,
             value_strings: Any = None) -> str:
    forms = {"value_float": value_float, "value_floats": value_floats, "value_int": value_int,
             "value_ints": value_ints, "value_string": value_string, "value_strings": value_strings}
    given = [k for k, v in forms.items() if v is not None]
    given += [k for k, v in (("value", value), ("sparse_value", sparse_value)) if v is not None]
    if len(given) != 1:
        raise g.error(f"Constant needs exactly one value attribute; got {', '.join(given) or 'none'}")
    if sparse_value is not None:
        raise g.unsupported("sparse_value is not supported; store the constant as a dense tensor")
    if value is not None:
        arr = np.asarray(value)
    else:
        arr = np.array(forms[given[0]], dtype=_CONSTANT_FORMS[given[0]])
    try:
        dtype_name(arr)
    except TypeError as exc:  # float8, int4, ... arrive as ml_dtypes arrays
        raise g.unsupported(f"constant element type {arr.dtype} is not supported: {exc}") from None
    return g.const(arr)


@onnx_op("Identity", since=1)
def Identity(g: ConvertContext, x: str) -> str:
    return g.add("Identity", [x])


def _dropout_outputs(g: ConvertContext, data: str, ratio: str | None, training_mode: str | None) -> Any:
    n_out = 2 if g.output_used(1) else 1
    outs = g.add("Dropout", [data, ratio, training_mode], outputs=n_out)
    return outs if n_out == 2 else (outs[0] if isinstance(outs, tuple) else outs)


@onnx_op("Dropout", since=1)
def Dropout(g: ConvertContext, data: str, *, ratio: float = 0.5, is_test: int = 0,
            consumed_inputs: Any = None) -> Any:
    # NOTE: before opset 7, is_test=0 meant training; exporters left it at the default for inference models and
    # runtimes treat the op as inference, as we do (opset 7+ dropped the attribute).
    return _dropout_outputs(g, data, None, None)


@onnx_op("Dropout", since=12)
def Dropout_12(g: ConvertContext, data: str, ratio: str | None = None, training_mode: str | None = None, *,
               seed: int | None = None) -> Any:
    training = g.value(training_mode)
    r = g.value(ratio)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        if r is None or float(np.asarray(r).reshape(-1)[0]) != 0.0:
            raise g.unsupported("training_mode is true; only inference Dropout (or ratio 0) is supported")
    return _dropout_outputs(g, data, ratio, training_mode)


@onnx_op("Cast", since=1)
def Cast(g: ConvertContext, x: str, *, to: Any, saturate: int = 1, round_mode: str = "up") -> str:
    # saturate and round_mode only affect float8 targets, which are rejected by _ir_type
    return g.add("Cast", [x], to=_ir_type(g, to, "to"), saturate=saturate, round_mode=round_mode)


@onnx_op("CastLike", since=15)
def CastLike(g: ConvertContext, x: str, target_type: str, *, saturate: int = 1, round_mode: str = "up") -> str:
    # CastLike is Cast to the (statically known) dtype of its second input
    return g.add("Cast", [x], to=g.info(target_type).dtype, saturate=saturate, round_mode=round_mode)


@onnx_op("ConstantOfShape", since=9)
def ConstantOfShape(g: ConvertContext, shape: str, *, value: Any = None) -> str:
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value)
    try:
        dtype_name(fill)
    except TypeError as exc:
        raise g.unsupported(f"value element type {fill.dtype} is not supported: {exc}") from None
    return g.add("ConstantOfShape", [shape], value=fill)


@onnx_op("Range", since=11)
def Range(g: ConvertContext, start: str, limit: str, delta: str, *, stash_type: int = 1) -> str:
    # Range-11 computed in the input type (the onnx reference: double); 27 added stash_type, default float
    return g.add("Range", [start, limit, delta], stash_type=stash_type if g.opset >= 27 else TensorProto.DOUBLE)


@onnx_op("EyeLike", since=9)
def EyeLike(g: ConvertContext, x: str, *, dtype: int | None = None, k: int = 0) -> str:
    return g.add("EyeLike", [x], dtype=None if dtype is None else _ir_type(g, dtype, "dtype"), k=k)


def _arg(op_type: str) -> Any:
    def convert(g: ConvertContext, data: str, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> str:
        return g.add(op_type, [data], axis=axis, keepdims=keepdims, select_last_index=select_last_index)

    convert.__name__ = convert.__qualname__ = op_type
    return convert


for _op_type in ("ArgMax", "ArgMin"):
    onnx_op(_op_type, since=1)(_arg(_op_type))


@onnx_op("TopK", since=1)
def TopK(g: ConvertContext, x: str, K: str | None = None, *, axis: int = -1, k: int | None = None,
         largest: int = 1, sorted: int = 1) -> Any:
    if K is None:  # TopK-1: k was an attribute
        if k is None:
            raise g.error("TopK needs k (attribute before opset 10, input K since)")
        K = g.const(np.array([k], np.int64), name=f"{g.node_name}/K")
    return g.add("TopK", [x, K], axis=axis, largest=largest, sorted=sorted)


def _scan(op_type: str) -> Any:
    def convert(g: ConvertContext, x: str, axis: str, *, exclusive: int = 0, reverse: int = 0) -> str:
        return g.add(op_type, [x, axis], exclusive=exclusive, reverse=reverse)

    convert.__name__ = convert.__qualname__ = op_type
    return convert


onnx_op("CumSum", since=11)(_scan("CumSum"))
onnx_op("CumProd", since=26)(_scan("CumProd"))


@onnx_op("OneHot", since=9)
def OneHot(g: ConvertContext, indices: str, depth: str, values: str, *, axis: int = -1) -> str:
    return g.add("OneHot", [indices, depth, values], axis=axis)


@onnx_op("Einsum", since=12)
def Einsum(g: ConvertContext, *inputs: str, equation: str) -> str:
    return g.add("Einsum", list(inputs), equation=equation)


@onnx_op("Det", since=11)
def Det(g: ConvertContext, x: str) -> str:
    return g.add("Det", [x])
