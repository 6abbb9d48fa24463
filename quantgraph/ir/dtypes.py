"""Element types: numpy dtype names are the IR's dtype vocabulary ("float32", "uint8", "bool", ...)."""
from __future__ import annotations

from typing import Any

import numpy as np

#: dtypes a tensor in the IR may have. "string" maps to numpy object arrays.
DTYPES = (
    "float16", "float32", "float64", "bfloat16",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "bool", "string",
)
FLOAT = frozenset({"float16", "float32", "float64", "bfloat16"})
SIGNED = frozenset({"int8", "int16", "int32", "int64"})
UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64"})
INTEGER = SIGNED | UNSIGNED
NUMERIC = FLOAT | INTEGER


def sequence_of(elem: str) -> str:
    """The dtype of a sequence (ONNX ``seq(tensor(T))``) of ``elem`` tensors: ``"seq(float32)"``. A sequence value
    is a :class:`quantgraph.ir.tensor.SequenceValue`; its TensorInfo has shape None."""
    return f"seq({elem})"


def is_sequence(dtype: str) -> bool:
    return isinstance(dtype, str) and dtype.startswith("seq(") and dtype.endswith(")")


def element_of(dtype: str) -> str:
    """The element dtype of a sequence dtype (``"seq(float32)"`` -> ``"float32"``)."""
    if not is_sequence(dtype):
        raise TypeError(f"dtype {dtype} is not a sequence type")
    return dtype[4:-1]


def optional_of(inner: str) -> str:
    """The dtype of an ONNX optional holding a ``inner`` value (a tensor or sequence dtype): ``"optional(float32)"``.
    Its value is a :class:`quantgraph.ir.tensor.OptionalValue` (empty or holding one value); its shape is None."""
    return f"optional({inner})"


def is_optional(dtype: str) -> bool:
    return isinstance(dtype, str) and dtype.startswith("optional(") and dtype.endswith(")")


def inner_of(dtype: str) -> str:
    """What an optional dtype holds (``"optional(seq(float32))"`` -> ``"seq(float32)"``)."""
    if not is_optional(dtype):
        raise TypeError(f"dtype {dtype} is not an optional type")
    return dtype[len("optional("):-1]


def is_tensor(dtype: str) -> bool:
    """True for tensor dtypes; False for sequences and optionals (values the IR never holds as constants)."""
    return dtype in DTYPES


def dtype_name(x: Any) -> str:
    """Normalize a numpy dtype, array, type or name to the IR's dtype name."""
    if isinstance(x, str) and (x in DTYPES or is_sequence(x) or is_optional(x)):
        return x
    if isinstance(x, np.ndarray):
        x = x.dtype
    dt = np.dtype(x)
    if dt.kind in ("O", "U", "S"):
        return "string"
    name = dt.name
    if name not in DTYPES:
        raise TypeError(f"dtype {name} is not supported by quantgraph; supported: {', '.join(DTYPES)}")
    return name


def to_numpy(dtype: str) -> np.dtype:
    """The numpy dtype for an IR dtype name."""
    if dtype == "string":
        return np.dtype(object)
    if dtype == "bfloat16":
        import ml_dtypes  # onnx depends on it; imported lazily because few graphs need it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def is_float(dtype: str | None) -> bool:
    return dtype in FLOAT
