"""Reductions: ReduceSum, ReduceMean, ReduceMax, ... — one definition driven by a table.

All reduce ops have the newest ONNX signature: ``data`` and an optional int64 ``axes`` input, attributes
``keepdims`` and ``noop_with_empty_axes``. Omitted or empty ``axes`` reduces every axis, unless
``noop_with_empty_axes`` is set, in which case the op passes its input through. Reducing an empty set gives the
reduction's identity (ReduceSum 0, ReduceProd 1, ReduceMax -inf / the type's minimum, ReduceLogSum -inf, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op
from quantgraph.ir.shapes import Dim, normalize_axis
from quantgraph.ir.tensor import TensorInfo, TensorType

Axes = tuple[int, ...]


def _extreme(dtype: np.dtype, high: bool) -> object:
    """The identity of max (high=False) or min (high=True) for ``dtype``: the value every element beats."""
    if dtype == np.bool_:
        return high
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max if high else info.min
    return np.inf if high else -np.inf


def _wide(x: np.ndarray) -> np.ndarray:
    """Accumulation type: float16/bfloat16 sum in float32 (then cast back) so long reductions stay accurate."""
    return x.astype(np.float32) if x.dtype.name in ("float16", "bfloat16") else x


def _log_sum_exp(x: np.ndarray, axes: Axes) -> np.ndarray:
    x = _wide(x)
    if x.size == 0:
        return np.full(np.sum(x, axis=axes, keepdims=True).shape, -np.inf, x.dtype)
    top = np.max(x, axis=axes, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)  # an all -inf (or inf) slice must not produce inf - inf = nan
    return np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True)) + top


def _mean(x: np.ndarray, axes: Axes) -> np.ndarray:
    count = int(np.prod([x.shape[a] for a in axes]))
    total = np.sum(_wide(x), axis=axes, keepdims=True, dtype=np.float64 if x.dtype.kind in "iub" else None)
    return total / count if count else np.full(total.shape, np.nan)


@dataclass(frozen=True)
class Reducer:
    """How one reduce op computes: ``fn(x, axes)`` with keepdims=True, in any dtype; the caller casts back."""

    fn: Callable[[np.ndarray, Axes], np.ndarray]
    doc: str


def _sum(x: np.ndarray, axes: Axes) -> np.ndarray:
    return np.sum(_wide(x), axis=axes, keepdims=True)


REDUCERS: dict[str, Reducer] = {
    "ReduceSum": Reducer(_sum, "sum"),
    "ReduceMean": Reducer(_mean, "arithmetic mean"),
    "ReduceProd": Reducer(lambda x, a: np.prod(_wide(x), axis=a, keepdims=True), "product"),
    "ReduceMax": Reducer(lambda x, a: np.max(x, axis=a, keepdims=True, initial=_extreme(x.dtype, False)), "max"),
    "ReduceMin": Reducer(lambda x, a: np.min(x, axis=a, keepdims=True, initial=_extreme(x.dtype, True)), "min"),
    "ReduceL1": Reducer(lambda x, a: _sum(np.abs(x), a), "sum of absolute values"),
    "ReduceL2": Reducer(lambda x, a: np.sqrt(_sum(_wide(x) * _wide(x), a)), "euclidean norm"),
    "ReduceSumSquare": Reducer(lambda x, a: _sum(_wide(x) * _wide(x), a), "sum of squares"),
    "ReduceLogSum": Reducer(lambda x, a: np.log(_sum(x, a)), "log of the sum"),
    "ReduceLogSumExp": Reducer(_log_sum_exp, "log of the sum of exponentials"),
}


def _axes_value(n: Node, axes: TensorInfo | np.ndarray | None) -> Axes | None:
    """The axes as given (possibly negative), () when omitted/empty, None when not constant."""
    if axes is None:
        return ()
    value = axes if isinstance(axes, np.ndarray) else axes.const
    if value is None:
        return None
    if value.dtype.kind not in "iu":
        raise n.error(f"axes is {value.dtype}; expected int64")
    return tuple(int(a) for a in value.reshape(-1))


def resolve_axes(n: Node, axes: Axes, rank: int) -> Axes | None:
    """Normalized, sorted axes to reduce; None means no reduction (noop_with_empty_axes with empty axes)."""
    if not axes:
        return None if n.attrs["noop_with_empty_axes"] else tuple(range(rank))
    try:
        out = sorted({normalize_axis(a, rank) for a in axes})
    except ValueError:
        raise n.error(f"axes {axes} are out of range for input of rank {rank}") from None
    if len(out) != len(axes):
        raise n.error(f"axes {axes} repeat an axis")
    return tuple(out)


def _infer(n: Node, x: TensorInfo, axes: TensorInfo | None) -> TensorType:
    if axes is not None and axes.rank not in (None, 1):
        raise n.error(f"axes has shape {axes.shape}; expected a 1-D int64 tensor")
    given = _axes_value(n, axes)
    keep = bool(n.attrs["keepdims"])
    if x.shape is None:
        return TensorType(None, x.dtype)
    if given is None:  # data-dependent axes: the rank is known only when dims are kept or the count is known
        count = None if axes is None or axes.shape is None else axes.shape[0]
        if keep:
            return TensorType((None,) * len(x.shape), x.dtype)
        if isinstance(count, int) and count > 0:
            return TensorType((None,) * (len(x.shape) - count), x.dtype)
        return TensorType(None, x.dtype)
    picked = resolve_axes(n, given, len(x.shape))
    if picked is None:
        return TensorType(x.shape, x.dtype)
    dims: list[Dim] = []
    for i, d in enumerate(x.shape):
        if i not in picked:
            dims.append(d)
        elif keep:
            dims.append(1)
    return TensorType(tuple(dims), x.dtype)


def reduce_array(n: Node, reducer: Reducer, x: np.ndarray, axes: np.ndarray | None) -> np.ndarray:
    given = _axes_value(n, axes)
    assert given is not None
    picked = resolve_axes(n, given, x.ndim)
    if picked is None:
        return x
    y = reducer.fn(x, picked)
    if not n.attrs["keepdims"]:
        y = np.squeeze(y, axis=picked)
    return np.asarray(y).astype(x.dtype, copy=False)


def _define(name: str, reducer: Reducer) -> None:
    d = op(name, inputs="data axes?", outputs="reduced", fusion=Fusion.REDUCE,
           attrs={"keepdims": 1, "noop_with_empty_axes": 0}, doc=f"Reduce with the {reducer.doc}.")
    d.infer(_infer)
    d.reference(lambda n, x, axes: reduce_array(n, reducer, x, axes))


for _name, _reducer in REDUCERS.items():
    _define(_name, _reducer)
