"""Shape and data-movement ops: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Expand, Tile,
Pad, CenterCropPad, Shape, Size.

Inputs that carry shapes or indices (Reshape's ``shape``, Slice's ``starts``, ...) give exact output shapes when they
are constant; otherwise inference keeps the rank and marks the affected dims unknown (None). The helpers at the top
are shared with ``indexing.py`` and ``resize.py``.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import REQUIRED, Fusion, Layout, op
from quantgraph.ir.shapes import Dim, Shape, broadcast_shapes, format_shape
from quantgraph.ir.tensor import TensorInfo, TensorType

#: a Slice end at least this large means "to the end of the axis" whatever the dim (ONNX uses INT64_MAX / INT_MAX)
_TO_END = 2 ** 31 - 1


# -- helpers shared by the shape-family modules -----------------------------------------------------------------
def const_ints(t: TensorInfo | None) -> tuple[int, ...] | None:
    """The values of a constant integer input, flattened; None when omitted or not constant."""
    if t is None or t.const is None:
        return None
    return tuple(int(v) for v in np.asarray(t.const).reshape(-1))


def vector_len(t: TensorInfo | None) -> int | None:
    """The static length of a 1-D input (how many values it will hold), or None."""
    if t is None or t.shape is None or len(t.shape) != 1 or not isinstance(t.shape[0], int):
        return None
    return t.shape[0]


def axis_of(n: Node, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` normalized into [0, rank), or a ShapeError naming the node."""
    if not -rank <= axis < rank:
        raise n.error(f"{what} {axis} is out of range for input of rank {rank}; expected -{rank} <= {what} < {rank}")
    return axis + rank if axis < 0 else axis


def axis_or_none(n: Node, axis: int, rank: int | None, what: str = "axis") -> int | None:
    """Like :func:`axis_of`, but None when the rank is unknown."""
    return None if rank is None else axis_of(n, axis, rank, what)


def axes_of(n: Node, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    """Normalized axes; repeated axes are an error."""
    out = [axis_of(n, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise n.error(f"{what} {tuple(axes)} repeat an axis; each axis may appear once")
    return out


def dim_product(dims: Sequence[Dim]) -> Dim:
    """Product of dims: an int when all are known, the symbol when one symbol times 1s, else unknown."""
    ints = [d for d in dims if isinstance(d, int)]
    rest = [d for d in dims if not isinstance(d, int)]
    prod = int(np.prod(ints, dtype=np.int64)) if ints else 1
    if not rest:
        return prod
    if prod == 0:
        return 0
    if len(rest) == 1 and rest[0] is not None and prod == 1:
        return rest[0]
    return None


def merge_dim(a: Dim, b: Dim) -> Dim:
    """Two dims known to be equal: keep the most precise (int over symbol over unknown)."""
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return a if a is not None else b


# -- Reshape / Flatten / Transpose ------------------------------------------------------------------------------
reshape = op("Reshape", inputs="data shape", outputs="reshaped", attrs={"allowzero": 0}, fusion=Fusion.INJECTIVE)


def _solve_minus_one(n: Node, in_shape: Shape, out: list[Dim], hole: int) -> Dim:
    """The dim at ``out[hole]`` (-1) so that the element counts match, tracking symbols (N*512 / N = 512)."""
    if in_shape is None:
        return None
    num: Counter = Counter(d for d in in_shape if isinstance(d, str))
    den: Counter = Counter(d for i, d in enumerate(out) if i != hole and isinstance(d, str))
    if any(d is None for d in in_shape) or any(d is None for i, d in enumerate(out) if i != hole):
        return None
    common = num & den
    num, den = num - common, den - common
    if den:
        return None
    num_i = dim_product([d for d in in_shape if isinstance(d, int)])
    den_i = dim_product([d for i, d in enumerate(out) if i != hole and isinstance(d, int)])
    assert isinstance(num_i, int) and isinstance(den_i, int)
    if den_i == 0 or num_i % den_i:
        if not num and den_i != 0:
            raise n.error(f"cannot reshape {format_shape(in_shape)} to {tuple(out)}: {num_i} elements are not a "
                          f"multiple of {den_i}")
        return None
    sym = list(num.elements())
    if not sym:
        return num_i // den_i
    return sym[0] if len(sym) == 1 and num_i == den_i else None


@reshape.infer
def _(n: Node, data: TensorInfo, shape: TensorInfo) -> TensorType:
    target = const_ints(shape)
    if target is None:
        length = vector_len(shape)
        return TensorType(None if length is None else (None,) * length, data.dtype)
    if target.count(-1) > 1:
        raise n.error(f"shape {target} has more than one -1; at most one dim can be inferred")
    if any(v < -1 for v in target):
        raise n.error(f"shape {target} has a negative dim other than -1")
    allowzero = n.attrs["allowzero"]
    if allowzero and 0 in target and -1 in target:
        raise n.error(f"shape {target} has both 0 and -1 with allowzero=1; the -1 cannot be inferred")
    out: list[Dim] = []
    for i, v in enumerate(target):
        if v == 0 and not allowzero:
            if data.shape is None:
                out.append(None)
            elif i >= len(data.shape):
                raise n.error(f"shape {target} copies dim {i} (0) but data has rank {len(data.shape)}")
            else:
                out.append(data.shape[i])
        else:
            out.append(v)
    if -1 in out:
        hole = out.index(-1)
        out[hole] = _solve_minus_one(n, data.shape, out, hole)
    elif data.shape is not None:
        a, b = dim_product(data.shape), dim_product(out)
        if isinstance(a, int) and isinstance(b, int) and a != b:
            raise n.error(f"cannot reshape {format_shape(data.shape)} ({a} elements) to {tuple(out)} ({b} elements)")
    return TensorType(tuple(out), data.dtype)


@reshape.reference
def _(n: Node, data: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(v) for v in shape.reshape(-1)]
    if not n.attrs["allowzero"]:
        target = [data.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return data.reshape(target)


flatten = op("Flatten", inputs="input", outputs="output", attrs={"axis": 1}, fusion=Fusion.INJECTIVE)


def _flatten_axis(n: Node, rank: int) -> int:
    axis = n.attrs["axis"]
    if not -rank <= axis <= rank:
        raise n.error(f"axis {axis} is out of range for a rank-{rank} input; expected [{-rank}, {rank}]")
    return axis + rank if axis < 0 else axis


@flatten.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    if x.shape is None:
        return TensorType((None, None), x.dtype)
    axis = _flatten_axis(n, len(x.shape))
    return TensorType((dim_product(x.shape[:axis]), dim_product(x.shape[axis:])), x.dtype)


@flatten.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    axis = _flatten_axis(n, x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64)))


transpose = op("Transpose", inputs="data", outputs="transposed", attrs={"perm": None}, fusion=Fusion.INJECTIVE)


def _perm(n: Node, rank: int) -> tuple[int, ...]:
    perm = n.attrs["perm"]
    if perm is None:
        return tuple(range(rank - 1, -1, -1))
    if sorted(perm) != list(range(rank)):
        raise n.error(f"perm {tuple(perm)} is not a permutation of the {rank} axes of the input")
    return tuple(perm)


@transpose.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    if x.shape is None:
        return TensorType(None if n.attrs["perm"] is None else (None,) * len(n.attrs["perm"]), x.dtype)
    return TensorType(tuple(x.shape[p] for p in _perm(n, len(x.shape))), x.dtype)


@transpose.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, _perm(n, x.ndim))


# -- Squeeze / Unsqueeze ----------------------------------------------------------------------------------------
squeeze = op("Squeeze", inputs="data axes?", outputs="squeezed", fusion=Fusion.INJECTIVE)


@squeeze.infer
def _(n: Node, x: TensorInfo, axes: TensorInfo | None) -> TensorType:
    ax = const_ints(axes)
    if x.shape is None:
        return TensorType(None, x.dtype)
    if axes is not None and ax is None:  # runtime axes: only the rank may be known
        k = vector_len(axes)
        return TensorType(None if k is None else (None,) * (len(x.shape) - k), x.dtype)
    if ax is None:
        if any(not isinstance(d, int) for d in x.shape):
            return TensorType(None, x.dtype)  # which dims are 1 is not known until run time
        return TensorType(tuple(d for d in x.shape if d != 1), x.dtype)
    drop = axes_of(n, ax, len(x.shape))
    for a in drop:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise n.error(f"cannot squeeze axis {a} of {format_shape(x.shape)}: its size is {x.shape[a]}, not 1")
    return TensorType(tuple(d for i, d in enumerate(x.shape) if i not in drop), x.dtype)


@squeeze.reference
def _(n: Node, x: np.ndarray, axes: np.ndarray | None) -> np.ndarray:
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(axes_of(n, [int(a) for a in axes.reshape(-1)], x.ndim)))


unsqueeze = op("Unsqueeze", inputs="data axes", outputs="expanded", fusion=Fusion.INJECTIVE)


def _unsqueezed(n: Node, shape: Sequence[Dim], axes: Sequence[int]) -> tuple[Dim, ...]:
    rank = len(shape) + len(axes)
    new = axes_of(n, axes, rank)
    it = iter(shape)
    return tuple(1 if i in new else next(it) for i in range(rank))


@unsqueeze.infer
def _(n: Node, x: TensorInfo, axes: TensorInfo) -> TensorType:
    ax = const_ints(axes)
    if x.shape is None:
        return TensorType(None, x.dtype)
    if ax is None:
        k = vector_len(axes)
        return TensorType(None if k is None else (None,) * (len(x.shape) + k), x.dtype)
    return TensorType(_unsqueezed(n, x.shape, ax), x.dtype)


@unsqueeze.reference
def _(n: Node, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return x.reshape(_unsqueezed(n, x.shape, [int(a) for a in axes.reshape(-1)]))


# -- Concat / Split ---------------------------------------------------------------------------------------------
concat = op("Concat", inputs="inputs+", outputs="concat_result", attrs={"axis": REQUIRED},
            fusion=Fusion.INJECTIVE, layout=Layout.CHANNEL_AXIS)


@concat.infer
def _(n: Node, *xs: TensorInfo) -> TensorType:
    dtypes = {x.dtype for x in xs}
    if len(dtypes) > 1:
        raise n.error(f"inputs have different dtypes {sorted(dtypes)}; Concat needs one dtype")
    known = [x.shape for x in xs if x.shape is not None]
    if not known:
        return TensorType(None, xs[0].dtype)
    rank = len(known[0])
    if any(len(s) != rank for s in known):
        raise n.error(f"inputs have ranks {[len(s) for s in known]}; Concat needs equal ranks")
    axis = axis_of(n, n.attrs["axis"], rank)
    out: list[Dim] = list(known[0])
    for s in known[1:]:
        for i, d in enumerate(s):
            if i == axis:
                continue
            if isinstance(out[i], int) and isinstance(d, int) and out[i] != d:
                shapes = ", ".join(format_shape(x.shape) for x in xs)
                raise n.error(f"inputs {shapes} differ in dim {i}; only axis {axis} may differ")
            out[i] = merge_dim(out[i], d)
    sizes = [x.shape[axis] if x.shape is not None else None for x in xs]
    nonzero = [d for d in sizes if d != 0]
    out[axis] = sum(sizes) if all(isinstance(d, int) for d in sizes) else (  # type: ignore[arg-type]
        nonzero[0] if len(nonzero) == 1 else None)
    return TensorType(tuple(out), xs[0].dtype)


@concat.reference
def _(n: Node, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=n.attrs["axis"])


split = op("Split", inputs="input split?", outputs="outputs+", attrs={"axis": 0, "num_outputs": None},
           fusion=Fusion.INJECTIVE)


def _split_sizes(n: Node, dim: Dim, sizes: Sequence[int] | None, count: int) -> list[Dim]:
    """Chunk sizes along the split axis: explicit, by num_outputs (last chunk smaller), or equal parts."""
    if sizes is not None:
        if len(sizes) != count:
            raise n.error(f"split {tuple(sizes)} has {len(sizes)} sizes for {count} outputs")
        if isinstance(dim, int) and sum(sizes) != dim:
            raise n.error(f"split {tuple(sizes)} sums to {sum(sizes)}, but the axis has size {dim}")
        return list(sizes)
    num = n.attrs["num_outputs"]
    if num is not None and num != count:
        raise n.error(f"num_outputs is {num} but the node has {count} outputs")
    if not isinstance(dim, int):
        return [None] * count
    if num is not None:
        chunk = -(-dim // num)
        return [chunk] * (num - 1) + [dim - chunk * (num - 1)]
    if dim % count:
        raise n.error(f"axis of size {dim} cannot be split into {count} equal parts; give split or num_outputs")
    return [dim // count] * count


@split.infer
def _(n: Node, x: TensorInfo, split_: TensorInfo | None) -> list[TensorType]:
    count = len(n.outputs)
    if x.shape is None:
        return [TensorType(None, x.dtype)] * count
    axis = axis_of(n, n.attrs["axis"], len(x.shape))
    sizes = const_ints(split_)
    chunks = [None] * count if split_ is not None and sizes is None else _split_sizes(n, x.shape[axis], sizes, count)
    return [TensorType(x.shape[:axis] + (c,) + x.shape[axis + 1:], x.dtype) for c in chunks]


@split.reference
def _(n: Node, x: np.ndarray, split_: np.ndarray | None) -> tuple[np.ndarray, ...]:
    axis = axis_of(n, n.attrs["axis"], x.ndim)
    sizes = None if split_ is None else [int(v) for v in split_.reshape(-1)]
    chunks = _split_sizes(n, x.shape[axis], sizes, len(n.outputs))
    bounds = np.cumsum([0] + chunks)  # type: ignore[operator]
    return tuple(np.take(x, np.arange(b, e), axis=axis) for b, e in zip(bounds[:-1], bounds[1:]))


# -- Slice ------------------------------------------------------------------------------------------------------
slice_ = op("Slice", inputs="data starts ends axes? steps?", outputs="output", fusion=Fusion.INJECTIVE)


def _slice_plan(n: Node, rank: int, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
                steps: Sequence[int] | None) -> dict[int, tuple[int, int, int]]:
    """axis -> (start, end, step) as given (unclamped), after checking the lengths agree."""
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise n.error(f"starts, ends, axes and steps have lengths {len(starts)}, {len(ends)}, {len(axes)}, "
                      f"{len(steps)}; they must be equal")
    if 0 in steps:
        raise n.error(f"steps {tuple(steps)} contain 0")
    return dict(zip(axes_of(n, axes, rank), zip(starts, ends, steps)))


def _clamped(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's clamping is Python's slice.indices; a negative stop there means 'before index 0'."""
    s, e, st = slice(start, end, step).indices(dim)
    return slice(s, None if e < 0 else e, st)


def _sliced_dim(dim: Dim, start: int, end: int, step: int) -> Dim:
    if isinstance(dim, int):
        return len(range(*slice(start, end, step).indices(dim)))
    if start == 0 and step == 1 and end >= _TO_END:
        return dim  # the whole axis, whatever its size
    return None


def _runtime_sliced(n: Node, shape: tuple[Dim, ...], starts: TensorInfo, axes: TensorInfo | None,
                    axes_value: tuple[int, ...] | None) -> tuple[Dim, ...]:
    """Slice bounds known only at run time: the sliced axes become unknown, the others keep their dims."""
    count = vector_len(starts)
    if axes is not None:
        touched = None if axes_value is None else set(axes_of(n, axes_value, len(shape)))
    else:
        touched = None if count is None else set(range(count))
    return tuple(None if touched is None or i in touched else d for i, d in enumerate(shape))


@slice_.infer
def _(n: Node, x: TensorInfo, starts: TensorInfo, ends: TensorInfo, axes: TensorInfo | None,
      steps: TensorInfo | None) -> TensorType:
    if x.shape is None:
        return TensorType(None, x.dtype)
    rank = len(x.shape)
    vals = [const_ints(t) for t in (starts, ends, axes, steps)]
    if vals[0] is None or vals[1] is None or (axes is not None and vals[2] is None) or (
            steps is not None and vals[3] is None):
        return TensorType(_runtime_sliced(n, x.shape, starts, axes, vals[2]), x.dtype)
    plan = _slice_plan(n, rank, vals[0], vals[1], vals[2], vals[3])
    return TensorType(tuple(_sliced_dim(d, *plan[i]) if i in plan else d for i, d in enumerate(x.shape)), x.dtype)


@slice_.reference
def _(n: Node, x: np.ndarray, starts: np.ndarray, ends: np.ndarray, axes: np.ndarray | None,
      steps: np.ndarray | None) -> np.ndarray:
    def ints(a: np.ndarray | None) -> list[int] | None:
        return None if a is None else [int(v) for v in a.reshape(-1)]

    plan = _slice_plan(n, x.ndim, ints(starts), ints(ends), ints(axes), ints(steps))  # type: ignore[arg-type]
    index = tuple(_clamped(*plan[i], x.shape[i]) if i in plan else slice(None) for i in range(x.ndim))
    return x[index].copy()


# -- Expand / Tile ----------------------------------------------------------------------------------------------
expand = op("Expand", inputs="input shape", outputs="output", fusion=Fusion.BROADCAST)


@expand.infer
def _(n: Node, x: TensorInfo, shape: TensorInfo) -> TensorType:
    target = const_ints(shape)
    if target is None:
        k = vector_len(shape)
        target = None if k is None else (None,) * k  # type: ignore[assignment]
    if target is None or x.shape is None:
        return TensorType(None, x.dtype)
    try:
        return TensorType(broadcast_shapes(x.shape, tuple(target)), x.dtype)
    except ValueError as exc:
        raise n.error(f"input {format_shape(x.shape)} cannot be expanded to {tuple(target)}: {exc}") from None


@expand.reference
def _(n: Node, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    out = np.broadcast_shapes(x.shape, tuple(int(v) for v in shape.reshape(-1)))
    return np.broadcast_to(x, out).copy()


tile = op("Tile", inputs="input repeats", outputs="output", fusion=Fusion.INJECTIVE)


@tile.infer
def _(n: Node, x: TensorInfo, repeats: TensorInfo) -> TensorType:
    reps = const_ints(repeats)
    if x.shape is None:
        return TensorType(None, x.dtype)
    if reps is None:
        return TensorType((None,) * len(x.shape), x.dtype)
    if len(reps) != len(x.shape) or any(r < 0 for r in reps):
        raise n.error(f"repeats {reps} must hold one non-negative count per input dim ({len(x.shape)})")
    return TensorType(tuple(d * r if isinstance(d, int) else (d if r == 1 else None)
                            for d, r in zip(x.shape, reps)), x.dtype)


@tile.reference
def _(n: Node, x: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    return np.tile(x, [int(r) for r in repeats.reshape(-1)])


# -- Pad / CenterCropPad ----------------------------------------------------------------------------------------
PAD_MODES = ("constant", "reflect", "edge", "wrap")
pad = op("Pad", inputs="data pads constant_value? axes?", outputs="output", attrs={"mode": "constant"},
         fusion=Fusion.INJECTIVE)


def _pad_plan(n: Node, rank: int, pads: Sequence[int], axes: Sequence[int] | None) -> dict[int, tuple[int, int]]:
    """axis -> (before, after); ``pads`` is [x1_begin, x2_begin, ..., x1_end, x2_end, ...] over ``axes``."""
    axes = list(range(rank)) if axes is None else axes_of(n, axes, rank)
    if len(pads) != 2 * len(axes):
        raise n.error(f"pads has {len(pads)} values; expected 2 per padded axis ({2 * len(axes)})")
    return {a: (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)}


@pad.infer
def _(n: Node, x: TensorInfo, pads: TensorInfo, value: TensorInfo | None, axes: TensorInfo | None) -> TensorType:
    if n.attrs["mode"] not in PAD_MODES:
        raise n.unsupported(f"mode '{n.attrs['mode']}' is not supported; supported: {', '.join(PAD_MODES)}")
    p, ax = const_ints(pads), const_ints(axes)
    if x.shape is None:
        return TensorType(None, x.dtype)
    if p is None or (axes is not None and ax is None):
        return TensorType((None,) * len(x.shape), x.dtype)
    plan = _pad_plan(n, len(x.shape), p, ax)
    return TensorType(tuple(_padded_dim(d, *plan.get(i, (0, 0))) for i, d in enumerate(x.shape)), x.dtype)


def _padded_dim(dim: Dim, before: int, after: int) -> Dim:
    if before == after == 0:
        return dim
    return dim + before + after if isinstance(dim, int) else None


@pad.reference
def _(n: Node, x: np.ndarray, pads: np.ndarray, value: np.ndarray | None, axes: np.ndarray | None) -> np.ndarray:
    plan = _pad_plan(n, x.ndim, [int(v) for v in pads.reshape(-1)],
                     None if axes is None else [int(a) for a in axes.reshape(-1)])
    # Negative pads crop; crop first, then pad by the positive parts.
    crop = tuple(slice(max(-plan[i][0], 0), x.shape[i] - max(-plan[i][1], 0)) if i in plan else slice(None)
                 for i in range(x.ndim))
    x = x[crop]
    widths = [(max(plan[i][0], 0), max(plan[i][1], 0)) if i in plan else (0, 0) for i in range(x.ndim)]
    mode = n.attrs["mode"]
    if mode == "constant":
        fill = 0 if value is None or value.size == 0 else value.reshape(-1)[0]
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(fill).astype(x.dtype))
    return np.pad(x, widths, mode=mode)


center_crop_pad = op("CenterCropPad", inputs="input_data shape", outputs="output_data", attrs={"axes": None},
                     fusion=Fusion.INJECTIVE)


def _crop_axes(n: Node, rank: int, count: int) -> list[int]:
    axes = axes_of(n, n.attrs["axes"], rank) if n.attrs["axes"] is not None else list(range(rank))
    if len(axes) != count:
        raise n.error(f"shape has {count} values for {len(axes)} axes; expected one per axis")
    return axes


@center_crop_pad.infer
def _(n: Node, x: TensorInfo, shape: TensorInfo) -> TensorType:
    target = const_ints(shape)
    if x.shape is None:
        return TensorType(None, x.dtype)
    if target is None:
        count = vector_len(shape)
        axes = set(range(len(x.shape))) if count is None else set(_crop_axes(n, len(x.shape), count))
        return TensorType(tuple(None if i in axes else d for i, d in enumerate(x.shape)), x.dtype)
    sizes = dict(zip(_crop_axes(n, len(x.shape), len(target)), target))
    return TensorType(tuple(sizes.get(i, d) for i, d in enumerate(x.shape)), x.dtype)


@center_crop_pad.reference
def _(n: Node, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(v) for v in shape.reshape(-1)]
    src, dst, out_shape = [slice(None)] * x.ndim, [slice(None)] * x.ndim, list(x.shape)
    for a, want in zip(_crop_axes(n, x.ndim, len(target)), target):
        have = x.shape[a]
        # The centred window starts at floor(|diff| / 2); the extra odd element goes to the end.
        off = abs(have - want) // 2
        out_shape[a] = want
        if want < have:
            src[a] = slice(off, off + want)
        else:
            dst[a] = slice(off, off + have)
    out = np.zeros(out_shape, dtype=x.dtype)
    out[tuple(dst)] = x[tuple(src)]
    return out


# -- Shape / Size -----------------------------------------------------------------------------------------------
shape_ = op("Shape", inputs="data", outputs="shape", attrs={"start": 0, "end": None}, fusion=Fusion.OPAQUE)


def _shape_range(n: Node, rank: int) -> slice:
    """Shape's start/end: negative counts from the back, then clamped into [0, rank]."""
    start, end = n.attrs["start"], n.attrs["end"]
    return slice(*slice(start, rank if end is None else end).indices(rank)[:2])


@shape_.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    if x.shape is None:
        return TensorType((None,), "int64")
    r = _shape_range(n, len(x.shape))
    return TensorType((max(r.stop - r.start, 0),), "int64")


@shape_.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    return np.array(x.shape[_shape_range(n, x.ndim)], dtype=np.int64)


size = op("Size", inputs="data", outputs="size", fusion=Fusion.OPAQUE)


@size.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    return TensorType((), "int64")


@size.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    return np.array(x.size, dtype=np.int64)
