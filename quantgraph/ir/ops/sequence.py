"""Sequence ops. A sequence value is a :class:`SequenceValue` (a tuple of arrays of one dtype); its IR dtype is
``seq(<element dtype>)`` and its shape None (``dtypes.sequence_of``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from quantgraph.ir.dtypes import dtype_name, element_of, is_sequence, sequence_of
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import op
from quantgraph.ir.tensor import SequenceValue, TensorInfo, TensorType


def _seq_elem(n: Node, s: TensorInfo) -> str:
    if not is_sequence(s.dtype):
        raise n.error(f"input '{s.name}' is a {s.dtype} tensor; {n.op} expects a sequence")
    return element_of(s.dtype)


def _position(n: Node, pos: Any, size: int, insert: bool) -> int:
    p = int(np.asarray(pos).reshape(-1)[0])
    hi = size if insert else size - 1
    if not -size <= p <= hi:
        raise n.error(f"position {p} is out of range for a sequence of {size} tensors")
    return p + size if p < 0 else p


sequence_empty = op("SequenceEmpty", inputs="", outputs="output", attrs={"dtype": "float32"})


@sequence_empty.infer
def _(n: Node) -> TensorType:
    return TensorType(None, sequence_of(n.attrs["dtype"]))


@sequence_empty.reference
def _(n: Node) -> SequenceValue:
    return SequenceValue((), n.attrs["dtype"])


sequence_construct = op("SequenceConstruct", inputs="inputs+", outputs="output_sequence")


@sequence_construct.infer
def _(n: Node, *xs: TensorInfo) -> TensorType:
    for x in xs[1:]:
        if x.dtype != xs[0].dtype:
            raise n.error(f"inputs are {xs[0].dtype} and {x.dtype}; a sequence holds one dtype")
    return TensorType(None, sequence_of(xs[0].dtype))


@sequence_construct.reference
def _(n: Node, *xs: np.ndarray) -> SequenceValue:
    return SequenceValue(tuple(np.array(x, copy=True) for x in xs), dtype_name(xs[0]))  # (never a view of a buffer)


sequence_insert = op("SequenceInsert", inputs="input_sequence tensor position?", outputs="output_sequence")


@sequence_insert.infer
def _(n: Node, s: TensorInfo, t: TensorInfo, pos: TensorInfo | None) -> TensorType:
    elem = _seq_elem(n, s)
    if t.dtype != elem:
        raise n.error(f"tensor is {t.dtype}; the sequence holds {elem}")
    return TensorType(None, s.dtype)


@sequence_insert.reference
def _(n: Node, s: SequenceValue, t: np.ndarray, pos: np.ndarray | None) -> SequenceValue:
    items = list(s.items)
    items.insert(len(items) if pos is None else _position(n, pos, len(items), True), np.array(t, copy=True))
    return SequenceValue(tuple(items), s.elem)


sequence_erase = op("SequenceErase", inputs="input_sequence position?", outputs="output_sequence")


@sequence_erase.infer
def _(n: Node, s: TensorInfo, pos: TensorInfo | None) -> TensorType:
    _seq_elem(n, s)
    return TensorType(None, s.dtype)


@sequence_erase.reference
def _(n: Node, s: SequenceValue, pos: np.ndarray | None) -> SequenceValue:
    items = list(s.items)
    del items[len(items) - 1 if pos is None else _position(n, pos, len(items), False)]
    return SequenceValue(tuple(items), s.elem)


sequence_at = op("SequenceAt", inputs="input_sequence position", outputs="tensor")


@sequence_at.infer
def _(n: Node, s: TensorInfo, pos: TensorInfo) -> TensorType:
    return TensorType(None, _seq_elem(n, s))


@sequence_at.reference
def _(n: Node, s: SequenceValue, pos: np.ndarray) -> np.ndarray:
    return s.items[_position(n, pos, len(s.items), False)]


sequence_length = op("SequenceLength", inputs="input_sequence", outputs="length")


@sequence_length.infer
def _(n: Node, s: TensorInfo) -> TensorType:
    _seq_elem(n, s)
    return TensorType((), "int64")


@sequence_length.reference
def _(n: Node, s: SequenceValue) -> np.ndarray:
    return np.array(len(s.items), np.int64)


concat_from_sequence = op("ConcatFromSequence", inputs="input_sequence", outputs="concat_result",
                          attrs={"axis": 0, "new_axis": 0})


@concat_from_sequence.infer
def _(n: Node, s: TensorInfo) -> TensorType:
    return TensorType(None, _seq_elem(n, s))


@concat_from_sequence.reference
def _(n: Node, s: SequenceValue) -> np.ndarray:
    if not s.items:
        raise n.error("the sequence is empty; ConcatFromSequence needs at least one tensor")
    if n.attrs["new_axis"]:
        return np.stack(s.items, axis=n.attrs["axis"])
    return np.concatenate(s.items, axis=n.attrs["axis"])


split_to_sequence = op("SplitToSequence", inputs="input split?", outputs="output_sequence",
                       attrs={"axis": 0, "keepdims": 1})


@split_to_sequence.infer
def _(n: Node, x: TensorInfo, split: TensorInfo | None) -> TensorType:
    return TensorType(None, sequence_of(x.dtype))


@split_to_sequence.reference
def _(n: Node, x: np.ndarray, split: np.ndarray | None) -> SequenceValue:
    axis = n.attrs["axis"] % x.ndim
    size = x.shape[axis]
    if split is None:
        parts = [np.take(x, i, axis=axis) if not n.attrs["keepdims"] else np.take(x, [i], axis=axis)
                 for i in range(size)]
        return SequenceValue(tuple(parts), dtype_name(x))
    split = np.asarray(split)
    if split.ndim == 0:
        step = int(split)
        sizes = [min(step, size - i) for i in range(0, size, step)]
    else:
        sizes = [int(v) for v in split]
        if sum(sizes) != size:
            raise n.error(f"split sizes {sizes} sum to {sum(sizes)}; axis {axis} has {size}")
    bounds = np.cumsum([0] + sizes)
    parts = [np.take(x, np.arange(a, b), axis=axis) for a, b in zip(bounds[:-1], bounds[1:])]
    return SequenceValue(tuple(parts), dtype_name(x))
