"""ONNX element types <-> IR dtype names."""
from __future__ import annotations

from typing import Any

from onnx import TensorProto, helper

from quantgraph.errors import UnsupportedOpError
from quantgraph.ir.dtypes import element_of, inner_of, is_optional, is_sequence, optional_of, sequence_of

ONNX_TO_IR = {
    TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT8: "int8", TensorProto.INT16: "int16", TensorProto.INT32: "int32", TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8", TensorProto.UINT16: "uint16", TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64", TensorProto.BOOL: "bool", TensorProto.STRING: "string",
}
IR_TO_ONNX = {v: k for k, v in ONNX_TO_IR.items()}


def onnx_type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


def ir_dtype(elem_type: int, what: str) -> str:
    """The IR dtype of an ONNX element type; ``what`` names the tensor for the error."""
    try:
        return ONNX_TO_IR[elem_type]
    except KeyError:
        raise UnsupportedOpError(f"{what} has element type {onnx_type_name(elem_type)}, which quantgraph does not "
                                 f"support (supported: {', '.join(sorted(set(ONNX_TO_IR.values())))})") from None


def onnx_dtype(dtype: str) -> int:
    return IR_TO_ONNX[dtype]


def type_dtype(tp: Any, what: str) -> str:
    """The IR dtype of an ONNX TypeProto: a tensor's element type, ``seq(...)`` or ``optional(...)``."""
    if tp.HasField("tensor_type"):
        return ir_dtype(tp.tensor_type.elem_type, what)
    if tp.HasField("sequence_type") and tp.sequence_type.elem_type.HasField("tensor_type"):
        return sequence_of(type_dtype(tp.sequence_type.elem_type, what))
    if tp.HasField("optional_type"):
        return optional_of(type_dtype(tp.optional_type.elem_type, what))
    raise UnsupportedOpError(f"{what} is not a tensor, a sequence of tensors or an optional of either (map and "
                             f"sparse values are not supported)")


def type_proto(dtype: str, shape: Any = None) -> Any:
    """The ONNX TypeProto of an IR dtype (``shape`` for tensors: dims, symbols or None)."""
    if is_sequence(dtype):
        return helper.make_sequence_type_proto(type_proto(element_of(dtype)))
    if is_optional(dtype):
        return helper.make_optional_type_proto(type_proto(inner_of(dtype)))
    return helper.make_tensor_type_proto(IR_TO_ONNX[dtype], shape)
