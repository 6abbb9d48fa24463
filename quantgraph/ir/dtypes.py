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


def dtype_name(x: Any) -> str:
    """Normalize a numpy dtype, array, type or name to the IR's dtype name."""
    if isinstance(x, str) and x in DTYPES:
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
