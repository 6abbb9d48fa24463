"""ONNX element types <-> IR dtype names."""
from __future__ import annotations

from onnx import TensorProto

from quantgraph.errors import UnsupportedOpError

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
