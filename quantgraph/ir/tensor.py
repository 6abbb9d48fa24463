"""Typed values of the IR: TensorType (what inference produces) and TensorInfo (a named value in a graph)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from quantgraph.ir.dtypes import dtype_name
from quantgraph.ir.shapes import Shape, format_shape, normalize_shape


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``.

    ``axis`` is None for per-tensor parameters (one scale, one zero point), else the channel axis of per-channel
    parameters. ``dtype`` is the storage type ("uint8", "int8", "int16", ...).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dtype: str
    axis: int | None = None

    def __post_init__(self) -> None:
        if len(self.scale) != len(self.zero_point):
            raise ValueError(f"QuantParams: {len(self.scale)} scales but {len(self.zero_point)} zero points")
        if self.axis is None and len(self.scale) != 1:
            raise ValueError("QuantParams: per-tensor parameters need exactly one scale (or set axis)")

    def to_json(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "dtype": self.dtype, "axis": self.axis}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "QuantParams":
        return cls(tuple(float(s) for s in d["scale"]), tuple(int(z) for z in d["zero_point"]), d["dtype"], d["axis"])


@dataclass(frozen=True, eq=False)
class SequenceValue:
    """A runtime ONNX sequence: an immutable tuple of arrays with one element dtype (IR dtype ``seq(<elem>)``).

    Not a tuple subclass on purpose: references return it as one value, not as several outputs.
    """

    items: tuple[np.ndarray, ...]
    elem: str

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dtype(self) -> str:
        return f"seq({self.elem})"


@dataclass(frozen=True, eq=False)
class OptionalValue:
    """A runtime ONNX optional: ``value`` (a tensor or a SequenceValue) or None when empty (IR dtype
    ``optional(<inner>)``)."""

    value: Any
    inner: str

    @property
    def dtype(self) -> str:
        return f"optional({self.inner})"


#: runtime values that are not arrays (references pass them through as one value each)
NON_TENSOR_VALUES = (SequenceValue, OptionalValue)


@dataclass(frozen=True)
class TensorType:
    """Shape and dtype: the result of an op's type inference."""

    shape: Shape
    dtype: str

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


@dataclass(frozen=True, eq=False)
class TensorInfo:
    """A named value: its shape (ints, symbolic names or None), dtype, constant value and quantization."""

    name: str
    shape: Shape
    dtype: str
    const: np.ndarray | None = field(default=None, repr=False)
    qparams: QuantParams | None = None

    @staticmethod
    def constant(name: str, value: Any, dtype: str | None = None) -> "TensorInfo":
        """A constant tensor (initializer); the value is copied and made read-only."""
        arr = np.array(value, dtype=None if dtype is None else dtype, copy=True)
        if arr.dtype.kind in ("U", "S"):
            arr = arr.astype(object)
        arr.setflags(write=False)
        return TensorInfo(name, tuple(int(d) for d in arr.shape), dtype_name(arr), arr)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def type(self) -> TensorType:
        return TensorType(self.shape, self.dtype)

    def with_(self, **changes: Any) -> "TensorInfo":
        if "shape" in changes:
            changes["shape"] = normalize_shape(changes["shape"])
        return replace(self, **changes)

    def same_as(self, other: "TensorInfo") -> bool:
        """Structural equality, comparing constant values exactly."""
        if (self.name, self.shape, self.dtype, self.qparams) != (other.name, other.shape, other.dtype, other.qparams):
            return False
        if (self.const is None) != (other.const is None):
            return False
        if self.const is None:
            return True
        assert other.const is not None
        return self.const.dtype == other.const.dtype and bool(
            np.array_equal(self.const, other.const, equal_nan=self.const.dtype.kind == "f"))

    def describe(self) -> str:
        return f"{self.dtype}{format_shape(self.shape)}"
