"""Comparison, boolean, bitwise and selection ops (Equal, Less, And, Not, Where, IsNaN, ...)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from quantgraph.ir.dtypes import FLOAT, INTEGER
from quantgraph.ir.node import Node
from quantgraph.ir.ops.elementwise import binary_infer
from quantgraph.ir.ops.registry import Fusion, op
from quantgraph.ir.shapes import broadcast_shapes
from quantgraph.ir.tensor import TensorInfo, TensorType

_BOOL = frozenset({"bool"})

# name -> (numpy function, accepted input dtypes (None: any), output dtype (None: the input's))
_BINARY: dict[str, tuple[Callable[..., Any], frozenset[str] | None, str | None]] = {
    "Equal": (np.equal, None, "bool"),
    "Less": (np.less, None, "bool"),
    "Greater": (np.greater, None, "bool"),
    "LessOrEqual": (np.less_equal, None, "bool"),
    "GreaterOrEqual": (np.greater_equal, None, "bool"),
    "And": (np.logical_and, _BOOL, "bool"),
    "Or": (np.logical_or, _BOOL, "bool"),
    "Xor": (np.logical_xor, _BOOL, "bool"),
    "BitwiseAnd": (np.bitwise_and, INTEGER, None),
    "BitwiseOr": (np.bitwise_or, INTEGER, None),
    "BitwiseXor": (np.bitwise_xor, INTEGER, None),
}


def _define_binary(name: str, fn: Callable[..., Any], allowed: frozenset[str] | None, out: str | None) -> None:
    d = op(name, inputs="A B", outputs="C", fusion=Fusion.BROADCAST)

    @d.infer
    def _(n: Node, a: TensorInfo, b: TensorInfo) -> TensorType:
        if allowed is not None and a.dtype not in allowed:
            raise n.error(f"input has dtype {a.dtype}; {name} takes {', '.join(sorted(allowed))}")
        if a.dtype != b.dtype:
            raise n.error(f"inputs have dtypes {a.dtype} and {b.dtype}; {name} needs equal dtypes")
        return binary_infer(n, a, b, out)

    @d.reference
    def _(n: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        r = np.asarray(fn(a, b))
        return r if out is None else r.astype(out, copy=False)


for _name, (_fn, _allowed, _out) in _BINARY.items():
    _define_binary(_name, _fn, _allowed, _out)


# name -> (numpy function on the array and attrs, accepted dtypes, output dtype (None: the input's), attrs)
_UNARY: dict[str, tuple[Callable[..., Any], frozenset[str], str | None, dict[str, Any]]] = {
    "Not": (lambda x: np.logical_not(x), _BOOL, "bool", {}),
    "BitwiseNot": (lambda x: np.invert(x), INTEGER, None, {}),
    "IsNaN": (lambda x: np.isnan(x), FLOAT, "bool", {}),
    "IsInf": (lambda x, detect_negative, detect_positive: (np.isneginf(x) & bool(detect_negative)) | (
        np.isposinf(x) & bool(detect_positive)), FLOAT, "bool", {"detect_negative": 1, "detect_positive": 1}),
}


def _define_unary(name: str, fn: Callable[..., Any], allowed: frozenset[str], out: str | None,
                  attrs: dict[str, Any]) -> None:
    d = op(name, inputs="X", outputs="Y", attrs=attrs, fusion=Fusion.ELEMWISE)

    @d.infer
    def _(n: Node, x: TensorInfo) -> TensorType:
        if x.dtype not in allowed:
            raise n.error(f"input has dtype {x.dtype}; {name} takes {', '.join(sorted(allowed))}")
        return TensorType(x.shape, out or x.dtype)

    @d.reference
    def _(n: Node, x: np.ndarray) -> np.ndarray:
        r = np.asarray(fn(x, **n.attrs))
        return r if out is None else r.astype(out, copy=False)


for _name, (_fn1, _allowed1, _out1, _attrs1) in _UNARY.items():
    _define_unary(_name, _fn1, _allowed1, _out1, _attrs1)


where = op("Where", inputs="condition X Y", outputs="output", fusion=Fusion.BROADCAST)


@where.infer
def _(n: Node, c: TensorInfo, x: TensorInfo, y: TensorInfo) -> TensorType:
    if c.dtype != "bool":
        raise n.error(f"condition has dtype {c.dtype}; Where needs a bool condition")
    if x.dtype != y.dtype:
        raise n.error(f"X and Y have dtypes {x.dtype} and {y.dtype}; Where needs equal dtypes")
    try:
        return TensorType(broadcast_shapes(c.shape, x.shape, y.shape), x.dtype)
    except ValueError:
        raise n.error(f"shapes {c.shape}, {x.shape}, {y.shape} do not broadcast") from None


@where.reference
def _(n: Node, c: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(c, x, y).astype(x.dtype, copy=False)
