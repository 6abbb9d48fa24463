"""Shapes with symbolic dimensions.

A shape is a tuple of dims; a dim is an ``int`` (known), a ``str`` (a symbolic size such as the batch ``"N"``,
equal wherever the same name appears) or ``None`` (unknown, e.g. data-dependent). A tensor whose rank is unknown
has shape ``None``.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple, Union

Dim = Union[int, str, None]
Shape = Optional[Tuple[Dim, ...]]


def normalize_shape(shape: Iterable[object] | None) -> Shape:
    """Turn a list/array of dims into the canonical tuple form."""
    if shape is None:
        return None
    out: list[Dim] = []
    for d in shape:
        if d is None or isinstance(d, str):
            out.append(d)
        else:
            out.append(int(d))  # type: ignore[call-overload]
    return tuple(out)


def is_static(shape: Shape) -> bool:
    """True when every dim is a known integer."""
    return shape is not None and all(isinstance(d, int) for d in shape)


def num_elements(shape: Shape) -> int | None:
    if not is_static(shape):
        return None
    n = 1
    for d in shape:  # type: ignore[union-attr]
        n *= d  # type: ignore[operator]
    return n


def broadcast_dim(a: Dim, b: Dim) -> Dim:
    """Numpy broadcasting of one dim; raises ValueError on a static mismatch."""
    if a == 1:
        return b
    if b == 1:
        return a
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError(f"dims {a} and {b} do not broadcast")
    # int vs symbolic/unknown: the symbol must equal the int (or be 1, which we cannot tell).
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Multidirectional (numpy) broadcasting over shapes that may hold symbolic dims."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = (1,) * (rank - len(s)) + tuple(s)  # type: ignore[arg-type]
        out = [broadcast_dim(a, b) for a, b in zip(out, padded)]
    return tuple(out)


def dims_compatible(a: Dim, b: Dim) -> bool:
    """Could a dim inferred as ``a`` and one recorded as ``b`` be the same size?"""
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return True
    return a == b


def shapes_compatible(a: Shape, b: Shape) -> bool:
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(dims_compatible(x, y) for x, y in zip(a, b))


def normalize_axis(axis: int, rank: int) -> int:
    """Map a possibly negative axis into ``[0, rank)``; raises ValueError when out of range."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def format_shape(shape: Shape) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def static_or_none(values: Sequence[Dim]) -> tuple[int, ...] | None:
    """The dims as ints when all are known, else None."""
    if all(isinstance(v, int) for v in values):
        return tuple(int(v) for v in values)  # type: ignore[arg-type]
    return None
