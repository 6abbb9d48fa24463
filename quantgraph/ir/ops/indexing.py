"""Indexing ops: Gather, GatherElements, GatherND, ScatterElements, ScatterND, NonZero, Compress, Trilu,
ReverseSequence.

Indices may be negative (counting from the end of their axis), as in ONNX; references normalize them once and let
numpy's fancy indexing do the work. Ops whose output size depends on data (NonZero, Compress) infer unknown dims.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op
from quantgraph.ir.ops.shape import axis_of, const_ints
from quantgraph.ir.shapes import dims_compatible, format_shape
from quantgraph.ir.tensor import TensorInfo, TensorType

INDEX_DTYPES = ("int32", "int64")

#: ScatterElements / ScatterND ``reduction`` -> numpy ufunc applied unbuffered (repeated indices accumulate)
REDUCTIONS: dict[str, Callable[..., None] | None] = {
    "none": None, "add": np.add.at, "mul": np.multiply.at, "max": np.maximum.at, "min": np.minimum.at,
}


def _check_indices(n: Node, indices: TensorInfo, what: str = "indices") -> None:
    if indices.dtype not in INDEX_DTYPES:
        raise n.error(f"{what} has dtype {indices.dtype}; expected int32 or int64")


def _wrapped(n: Node, idx: np.ndarray, dim: int | np.ndarray) -> np.ndarray:
    """Negative indices count from the end; anything outside [-dim, dim) is an error (ONNX leaves it undefined)."""
    idx = idx.astype(np.int64)
    if np.any((idx < -dim) | (idx >= dim)):
        bad = idx[(idx < -dim) | (idx >= dim)].reshape(-1)[0]
        raise n.error(f"index {bad} is out of range for an axis of size {dim}")
    return np.where(idx < 0, idx + dim, idx)


# -- Gather family ----------------------------------------------------------------------------------------------
gather = op("Gather", inputs="data indices", outputs="output", attrs={"axis": 0}, fusion=Fusion.INJECTIVE)


@gather.infer
def _(n: Node, data: TensorInfo, indices: TensorInfo) -> TensorType:
    _check_indices(n, indices)
    if data.shape is None or indices.shape is None:
        return TensorType(None, data.dtype)
    axis = axis_of(n, n.attrs["axis"], len(data.shape))
    return TensorType(data.shape[:axis] + indices.shape + data.shape[axis + 1:], data.dtype)


@gather.reference
def _(n: Node, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    axis = axis_of(n, n.attrs["axis"], data.ndim)
    return np.take(data, _wrapped(n, indices, data.shape[axis]), axis=axis)


gather_elements = op("GatherElements", inputs="data indices", outputs="output", attrs={"axis": 0},
                     fusion=Fusion.INJECTIVE)


@gather_elements.infer
def _(n: Node, data: TensorInfo, indices: TensorInfo) -> TensorType:
    _check_indices(n, indices)
    if data.shape is not None and indices.shape is not None and len(data.shape) != len(indices.shape):
        raise n.error(f"indices {format_shape(indices.shape)} and data {format_shape(data.shape)} must have the "
                      f"same rank")
    if data.shape is not None:
        axis_of(n, n.attrs["axis"], len(data.shape))
    return TensorType(indices.shape, data.dtype)


@gather_elements.reference
def _(n: Node, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    axis = axis_of(n, n.attrs["axis"], data.ndim)
    return np.take_along_axis(data, _wrapped(n, indices, data.shape[axis]), axis=axis)


gather_nd = op("GatherND", inputs="data indices", outputs="output", attrs={"batch_dims": 0}, fusion=Fusion.INJECTIVE)


@gather_nd.infer
def _(n: Node, data: TensorInfo, indices: TensorInfo) -> TensorType:
    _check_indices(n, indices)
    b = n.attrs["batch_dims"]
    if data.shape is None or indices.shape is None:
        return TensorType(None, data.dtype)
    k = indices.shape[-1] if indices.shape else None
    if not isinstance(k, int):
        return TensorType(None, data.dtype)
    if b >= min(len(data.shape), len(indices.shape)) or b + k > len(data.shape):
        raise n.error(f"indices {format_shape(indices.shape)} with batch_dims={b} do not fit data "
                      f"{format_shape(data.shape)}; need batch_dims < both ranks and batch_dims + "
                      f"indices.shape[-1] <= rank(data)")
    return TensorType(indices.shape[:-1] + data.shape[b + k:], data.dtype)


def _nd_index(n: Node, data_shape: tuple[int, ...], indices: np.ndarray, batch_dims: int) -> tuple[np.ndarray, ...]:
    """A fancy index into ``data`` reshaped to (B, *rest) for index tuples (B, M, k): (batch ids, idx_0, ...)."""
    k = indices.shape[-1]
    batch = int(np.prod(data_shape[:batch_dims], dtype=np.int64))
    idx = indices.reshape(batch, -1, k)
    dims = np.array(data_shape[batch_dims:batch_dims + k], dtype=np.int64)
    idx = _wrapped(n, idx, dims)
    return (np.arange(batch)[:, None],) + tuple(idx[..., j] for j in range(k))


@gather_nd.reference
def _(n: Node, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    b = n.attrs["batch_dims"]
    k = indices.shape[-1]
    flat = data.reshape((-1,) + data.shape[b:])
    out = flat[_nd_index(n, data.shape, indices, b)]
    return out.reshape(indices.shape[:-1] + data.shape[b + k:])


# -- Scatter family ---------------------------------------------------------------------------------------------
def _scatter_infer(n: Node, data: TensorInfo, indices: TensorInfo, updates: TensorInfo) -> TensorType:
    _check_indices(n, indices)
    if n.attrs["reduction"] not in REDUCTIONS:
        raise n.unsupported(f"reduction '{n.attrs['reduction']}' is not supported; supported: "
                            f"{', '.join(REDUCTIONS)}")
    if updates.dtype != data.dtype:
        raise n.error(f"updates has dtype {updates.dtype} but data has {data.dtype}; they must match")
    return TensorType(data.shape, data.dtype)


def _scatter(n: Node, data: np.ndarray, index: tuple[np.ndarray, ...], updates: np.ndarray) -> np.ndarray:
    out = data.copy()
    ufunc_at = REDUCTIONS[n.attrs["reduction"]]
    if ufunc_at is None:
        out[index] = updates
    else:
        ufunc_at(out, index, updates)
    return out


scatter_elements = op("ScatterElements", inputs="data indices updates", outputs="output",
                      attrs={"axis": 0, "reduction": "none"}, fusion=Fusion.OPAQUE)


@scatter_elements.infer
def _(n: Node, data: TensorInfo, indices: TensorInfo, updates: TensorInfo) -> TensorType:
    if data.shape is not None:
        axis_of(n, n.attrs["axis"], len(data.shape))
    if indices.shape is not None and updates.shape is not None and len(indices.shape) != len(updates.shape):
        raise n.error(f"indices {format_shape(indices.shape)} and updates {format_shape(updates.shape)} must have "
                      f"the same shape")
    return _scatter_infer(n, data, indices, updates)


@scatter_elements.reference
def _(n: Node, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    axis = axis_of(n, n.attrs["axis"], data.ndim)
    grid: list[np.ndarray] = list(np.indices(indices.shape, sparse=True))
    grid[axis] = _wrapped(n, indices, data.shape[axis])
    return _scatter(n, data, tuple(grid), updates)


scatter_nd = op("ScatterND", inputs="data indices updates", outputs="output", attrs={"reduction": "none"},
                fusion=Fusion.OPAQUE)


@scatter_nd.infer
def _(n: Node, data: TensorInfo, indices: TensorInfo, updates: TensorInfo) -> TensorType:
    if data.shape is not None and indices.shape and isinstance(indices.shape[-1], int):
        k = indices.shape[-1]
        want = indices.shape[:-1] + data.shape[k:]
        if updates.shape is not None and (len(updates.shape) != len(want) or any(
                isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(updates.shape, want))):
            raise n.error(f"updates has shape {format_shape(updates.shape)}; expected {format_shape(want)} "
                          f"(indices.shape[:-1] + data.shape[indices.shape[-1]:])")
    return _scatter_infer(n, data, indices, updates)


@scatter_nd.reference
def _(n: Node, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    k = indices.shape[-1]
    index = _nd_index(n, (1,) + data.shape, indices[None], 1)[1:]  # no batch dims: one batch of all index tuples
    rows = tuple(i[0] for i in index)
    return _scatter(n, data, rows, updates.reshape((-1,) + data.shape[k:]))


# -- data-dependent selections ----------------------------------------------------------------------------------
nonzero = op("NonZero", inputs="X", outputs="Y", fusion=Fusion.OPAQUE)


@nonzero.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    return TensorType((None if x.shape is None else len(x.shape), None), "int64")


@nonzero.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    if x.ndim == 0:  # numpy 2 refuses 0-d nonzero; a scalar has no coordinates
        return np.zeros((0, int(bool(x))), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


compress = op("Compress", inputs="input condition", outputs="output", attrs={"axis": None}, fusion=Fusion.OPAQUE)


@compress.infer
def _(n: Node, x: TensorInfo, condition: TensorInfo) -> TensorType:
    if condition.dtype != "bool":
        raise n.error(f"condition has dtype {condition.dtype}; expected bool")
    if n.attrs["axis"] is None:
        return TensorType((None,), x.dtype)
    if x.shape is None:
        return TensorType(None, x.dtype)
    axis = axis_of(n, n.attrs["axis"], len(x.shape))
    return TensorType(x.shape[:axis] + (None,) + x.shape[axis + 1:], x.dtype)


@compress.reference
def _(n: Node, x: np.ndarray, condition: np.ndarray) -> np.ndarray:
    axis = n.attrs["axis"]
    return np.compress(condition.reshape(-1), x, axis=None if axis is None else axis_of(n, axis, x.ndim))


# -- masks and reorderings --------------------------------------------------------------------------------------
trilu = op("Trilu", inputs="input k?", outputs="output", attrs={"upper": 1}, fusion=Fusion.INJECTIVE)


@trilu.infer
def _(n: Node, x: TensorInfo, k: TensorInfo | None) -> TensorType:
    if x.shape is not None and len(x.shape) < 2:
        raise n.error(f"input has shape {format_shape(x.shape)}; Trilu needs rank >= 2")
    return TensorType(x.shape, x.dtype)


@trilu.reference
def _(n: Node, x: np.ndarray, k: np.ndarray | None) -> np.ndarray:
    diag = 0 if k is None else int(k.reshape(-1)[0])
    return np.triu(x, diag) if n.attrs["upper"] else np.tril(x, diag)


reverse_sequence = op("ReverseSequence", inputs="input sequence_lens", outputs="Y",
                      attrs={"batch_axis": 1, "time_axis": 0}, fusion=Fusion.INJECTIVE)


def _seq_axes(n: Node) -> tuple[int, int]:
    b, t = n.attrs["batch_axis"], n.attrs["time_axis"]
    if {b, t} != {0, 1}:
        raise n.error(f"batch_axis={b}, time_axis={t}; expected one of them 0 and the other 1")
    return b, t


@reverse_sequence.infer
def _(n: Node, x: TensorInfo, lens: TensorInfo) -> TensorType:
    b, _ = _seq_axes(n)
    _check_indices(n, lens, "sequence_lens")
    if x.shape is None:
        return TensorType(None, x.dtype)
    if len(x.shape) < 2:
        raise n.error(f"input has shape {format_shape(x.shape)}; ReverseSequence needs rank >= 2")
    want = x.shape[b]
    if lens.shape is not None and not (len(lens.shape) == 1 and dims_compatible(lens.shape[0], want)):
        raise n.error(f"sequence_lens has shape {format_shape(lens.shape)}; expected ({want},), one per batch")
    return TensorType(x.shape, x.dtype)


@reverse_sequence.reference
def _(n: Node, x: np.ndarray, lens: np.ndarray) -> np.ndarray:
    b, t = _seq_axes(n)
    xm = np.moveaxis(x, (b, t), (0, 1))  # (batch, time, ...)
    steps = np.arange(xm.shape[1])[None, :]
    lens = lens.astype(np.int64)[:, None]
    src = np.where(steps < lens, lens - 1 - steps, steps)  # reversed prefix, untouched tail
    out = xm[np.arange(xm.shape[0])[:, None], src]
    return np.ascontiguousarray(np.moveaxis(out, (0, 1), (b, t)))


__all__ = ["INDEX_DTYPES", "REDUCTIONS", "const_ints"]
