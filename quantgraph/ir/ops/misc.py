"""Misc ops: Identity, Dropout, casts, generators (ConstantOfShape, Range, EyeLike), arg/sort/scan ops, Einsum, Det.

Every op has the semantics of the newest ONNX version of the same name; the ONNX converters translate older
versions (see ``frontends/onnx/converters/misc.py``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from quantgraph.ir.dtypes import DTYPES, FLOAT, to_numpy
from quantgraph.ir.node import Node
from quantgraph.ir.ops.shape import axis_or_none as _axis
from quantgraph.ir.ops.registry import REQUIRED, Fusion, Layout, op, same_type
from quantgraph.ir.shapes import Dim, Shape, broadcast_shapes
from quantgraph.ir.tensor import TensorInfo, TensorType

# ---------------------------------------------------------------------------------------------------------------
# shared helpers


def _scalar(n: Node, info: TensorInfo, what: str) -> Any | None:
    """The single value of a constant scalar-like input (shape () or (1,)), or None when it is not constant."""
    if info.const is None:
        return None
    if info.const.size != 1:
        raise n.error(f"{what} has shape {info.const.shape}; expected a scalar (or a 1-element tensor)")
    return info.const.reshape(-1)[0].item()


def _check_dtype(n: Node, dtype: str, attr: str) -> str:
    if dtype not in DTYPES:
        raise n.error(f"{attr} is {dtype!r}; expected one of {', '.join(DTYPES)}")
    return dtype


# ---------------------------------------------------------------------------------------------------------------
# Identity, Dropout

identity = op("Identity", inputs="input", outputs="output", fusion=Fusion.ELEMWISE)
identity.infer(lambda n, x: same_type(x))
identity.reference(lambda n, x: x)

# Dropout is the identity with an all-True mask in inference. A constant training_mode=true is refused at import
# (an inference compiler silently dropping activations would be a bug in the model); a training_mode fed at run time
# is honoured: the mask is drawn like the ONNX reference, ``RandomState(seed).uniform(0, 1) >= ratio`` (seed 0 when
# the attribute is absent), so runs are reproducible.
dropout = op("Dropout", inputs="data ratio? training_mode?", outputs="output mask?", attrs={"seed": None})


@dropout.infer
def _(n: Node, x: TensorInfo, ratio: TensorInfo | None, training: TensorInfo | None) -> list[TensorType]:
    r = 0.5 if ratio is None else _scalar(n, ratio, "ratio")
    if r is not None and not 0.0 <= float(r) < 1.0:
        raise n.error(f"ratio is {float(r)}; expected 0 <= ratio < 1")
    return [same_type(x), TensorType(x.shape, "bool")]


@dropout.reference
def _(n: Node, x: np.ndarray, ratio: np.ndarray | None, training: np.ndarray | None) -> tuple[np.ndarray, ...]:
    r = 0.5 if ratio is None else float(ratio.reshape(-1)[0])
    if training is None or not bool(training.reshape(-1)[0]) or r == 0.0:
        return x, np.ones(x.shape, dtype=bool)
    mask = np.random.RandomState(n.attrs["seed"] or 0).uniform(0.0, 1.0, x.shape) >= r
    return (mask * x / (1.0 - r)).astype(x.dtype), mask


# ---------------------------------------------------------------------------------------------------------------
# Cast: ``to`` is an IR dtype name. ``saturate`` and ``round_mode`` only matter for float8 types, which quantgraph
# does not have; they are kept so a Cast node round-trips its ONNX attributes.

# NOTE: not layout-agnostic for the layout pass, although elementwise (it has never been needed in a chain)
cast = op("Cast", inputs="input", outputs="output", fusion=Fusion.ELEMWISE, layout=Layout.NONE,
          attrs={"to": REQUIRED, "saturate": 1, "round_mode": "up"})


@cast.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    return TensorType(x.shape, _check_dtype(n, n.attrs["to"], "to"))


def _format_float(v: Any) -> str:
    """Number -> string like the ONNX reference: shortest round-trip repr, INF/-INF/NaN spelled as ONNX does."""
    f = float(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "INF" if f > 0 else "-INF"
    return str(v)


def cast_array(x: np.ndarray, to: str) -> np.ndarray:
    """Cast ``x`` to IR dtype ``to`` with ONNX semantics for strings and bools."""
    target = to_numpy(to)
    if to == "string":
        if x.dtype.kind in "fc" or x.dtype.name == "bfloat16":
            flat = [_format_float(v) for v in x.reshape(-1)]
        else:
            flat = [str(v) for v in x.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(x.shape)
    if x.dtype == object:  # parse text; float() understands "1e-3", "INF", "-inf", "NaN"
        parse = float if to in FLOAT else (lambda s: s.lower() in ("true", "1") if to == "bool" else int(s))
        return np.array([parse(str(s)) for s in x.reshape(-1)], dtype=target).reshape(x.shape)
    return x.astype(target)


cast.reference(lambda n, x: cast_array(x, n.attrs["to"]))


# ---------------------------------------------------------------------------------------------------------------
# Generators: ConstantOfShape, Range, EyeLike

constant_of_shape = op("ConstantOfShape", inputs="input", outputs="output",
                       attrs={"value": np.zeros(1, np.float32)})


def _fill_value(n: Node) -> np.ndarray:
    value = np.asarray(n.attrs["value"])
    if value.size != 1:
        raise n.error(f"value has {value.size} elements; ConstantOfShape expects a one-element tensor")
    return value.reshape(())


@constant_of_shape.infer
def _(n: Node, shape: TensorInfo) -> TensorType:
    dtype = TensorInfo.constant("v", _fill_value(n)).dtype
    if shape.rank not in (None, 1):
        raise n.error(f"input has shape {shape.shape}; ConstantOfShape expects a 1-D shape tensor")
    if shape.const is not None:
        dims = tuple(int(d) for d in shape.const.reshape(-1))
        if any(d < 0 for d in dims):
            raise n.error(f"shape {dims} has a negative dim")
        return TensorType(dims, dtype)
    length = None if shape.shape is None else shape.shape[0]
    return TensorType((None,) * length if isinstance(length, int) else None, dtype)


constant_of_shape.reference(lambda n, shape: np.full(tuple(int(d) for d in shape.reshape(-1)), _fill_value(n)))

# ``stash_type`` (ONNX TensorProto code: 1 = float32, 11 = float64) is the precision used for float16/bfloat16.
range_ = op("Range", inputs="start limit delta", outputs="output", attrs={"stash_type": 1})
_STASH = {1: np.float32, 11: np.float64}


def _range_values(n: Node, start: Any, limit: Any, delta: Any, dtype: np.dtype) -> np.ndarray:
    stash = _STASH.get(n.attrs["stash_type"])
    if stash is None:
        raise n.unsupported(f"stash_type {n.attrs['stash_type']}; supported: 1 (float), 11 (double)")
    if dtype.name in ("float16", "bfloat16"):
        return np.arange(stash(start), float(limit), float(delta), dtype=stash).astype(dtype)
    return np.arange(start, limit, delta).astype(dtype)


@range_.infer
def _(n: Node, start: TensorInfo, limit: TensorInfo, delta: TensorInfo) -> TensorType:
    for name, t in (("start", start), ("limit", limit), ("delta", delta)):
        if t.rank not in (None, 0) and t.shape not in ((1,), (None,)):  # (None,): e.g. an If output's merged shape
            raise n.error(f"{name} has shape {t.shape}; Range expects scalars")
        if t.dtype != start.dtype:
            raise n.error(f"{name} is {t.dtype} but start is {start.dtype}; Range expects one type")
    values = [_scalar(n, t, name) for name, t in (("start", start), ("limit", limit), ("delta", delta))]
    if any(v is None for v in values):
        return TensorType((None,), start.dtype)
    if values[2] == 0:
        raise n.error("delta is 0; Range needs a nonzero step")
    out = _range_values(n, *values, to_numpy(start.dtype))
    return TensorType((len(out),), start.dtype)


@range_.reference
def _(n: Node, start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return _range_values(n, start.item(), limit.item(), delta.item(), start.dtype)


# ``dtype`` None means the input's dtype.
eye_like = op("EyeLike", inputs="input", outputs="output", attrs={"dtype": None, "k": 0})


@eye_like.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    if x.rank not in (None, 2):
        raise n.error(f"input has shape {x.shape}; EyeLike expects a 2-D tensor")
    dtype = n.attrs["dtype"] or x.dtype
    return TensorType(x.shape if x.shape is not None else (None, None), _check_dtype(n, dtype, "dtype"))


eye_like.reference(lambda n, x: np.eye(x.shape[0], x.shape[1], k=n.attrs["k"],
                                       dtype=to_numpy(n.attrs["dtype"] or str(x.dtype))))


# ---------------------------------------------------------------------------------------------------------------
# ArgMax / ArgMin


def _reduce_axis_shape(n: Node, x: TensorInfo, axis: int, keepdims: bool) -> Shape:
    ax = _axis(n, axis, x.rank)
    if x.shape is None or ax is None:
        return None
    return x.shape[:ax] + ((1,) if keepdims else ()) + x.shape[ax + 1:]


def _arg_op(name: str, pick: Any) -> None:
    d = op(name, inputs="data", outputs="reduced", fusion=Fusion.REDUCE,
           attrs={"axis": 0, "keepdims": 1, "select_last_index": 0})

    @d.infer
    def _(n: Node, x: TensorInfo) -> TensorType:
        return TensorType(_reduce_axis_shape(n, x, n.attrs["axis"], bool(n.attrs["keepdims"])), "int64")

    @d.reference
    def _(n: Node, x: np.ndarray) -> np.ndarray:
        axis = _axis(n, n.attrs["axis"], x.ndim)
        if n.attrs["select_last_index"]:  # pick on the reversed axis, then map the index back
            idx = x.shape[axis] - 1 - pick(np.flip(x, axis), axis=axis)
        else:
            idx = pick(x, axis=axis)
        idx = np.asarray(idx, dtype=np.int64)
        return np.expand_dims(idx, axis) if n.attrs["keepdims"] else idx


_arg_op("ArgMax", np.argmax)
_arg_op("ArgMin", np.argmin)


# ---------------------------------------------------------------------------------------------------------------
# TopK

topk = op("TopK", inputs="X K", outputs="Values Indices", attrs={"axis": -1, "largest": 1, "sorted": 1})


@topk.infer
def _(n: Node, x: TensorInfo, k: TensorInfo) -> list[TensorType]:
    if k.rank not in (None, 0) and k.shape != (1,):
        raise n.error(f"K has shape {k.shape}; TopK expects a 1-element tensor")
    kv = _scalar(n, k, "K")
    ax = _axis(n, n.attrs["axis"], x.rank)
    shape: Shape = None
    if x.shape is not None and ax is not None:
        if kv is not None and isinstance(x.shape[ax], int) and not 0 <= kv <= x.shape[ax]:
            raise n.error(f"K is {kv} but axis {ax} has {x.shape[ax]} elements; expected 0 <= K <= {x.shape[ax]}")
        shape = x.shape[:ax] + (None if kv is None else int(kv),) + x.shape[ax + 1:]
    return [TensorType(shape, x.dtype), TensorType(shape, "int64")]


@topk.reference
def _(n: Node, x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = _axis(n, n.attrs["axis"], x.ndim)
    kv = int(k.reshape(-1)[0])
    size = x.shape[axis]
    if n.attrs["largest"]:
        # A stable ascending sort of the reversed axis, reversed again, is descending with ties in index order
        # (ONNX: among equal values the lower index comes first). No negation, so unsigned ints are safe.
        order = size - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(kv), axis=axis).astype(np.int64)
    return np.take_along_axis(x, idx, axis=axis), idx


# ---------------------------------------------------------------------------------------------------------------
# CumSum / CumProd: one scan helper, the op table gives the numpy scan and its identity element.

_SCANS = {"CumSum": (np.cumsum, 0), "CumProd": (np.cumprod, 1)}


def _scan_op(name: str) -> None:
    scan, identity_value = _SCANS[name]
    d = op(name, inputs="x axis", outputs="y", attrs={"exclusive": 0, "reverse": 0})

    @d.infer
    def _(n: Node, x: TensorInfo, axis: TensorInfo) -> TensorType:
        if axis.rank not in (None, 0) and axis.shape != (1,):
            raise n.error(f"axis has shape {axis.shape}; {name} expects a scalar axis")
        a = _scalar(n, axis, "axis")
        if a is not None:
            _axis(n, int(a), x.rank)
        return same_type(x)

    @d.reference
    def _(n: Node, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        ax = _axis(n, int(axis.reshape(-1)[0]), x.ndim)
        y = np.flip(x, ax) if n.attrs["reverse"] else x
        y = scan(y, axis=ax, dtype=x.dtype)
        if n.attrs["exclusive"]:  # shift by one along the axis, filling with the identity element
            head = np.full_like(np.take(y, [0], axis=ax), identity_value)
            y = np.concatenate([head, np.take(y, np.arange(y.shape[ax] - 1), axis=ax)], axis=ax)
        return np.flip(y, ax) if n.attrs["reverse"] else y


_scan_op("CumSum")
_scan_op("CumProd")


# ---------------------------------------------------------------------------------------------------------------
# OneHot

one_hot = op("OneHot", inputs="indices depth values", outputs="output", attrs={"axis": -1})


@one_hot.infer
def _(n: Node, indices: TensorInfo, depth: TensorInfo, values: TensorInfo) -> TensorType:
    n_values = None if values.shape is None or values.rank != 1 else values.shape[0]
    if values.rank not in (None, 1) or isinstance(n_values, int) and n_values != 2:
        raise n.error(f"values has shape {values.shape}; OneHot expects [off_value, on_value]")
    dv = _scalar(n, depth, "depth")
    if indices.shape is None:
        return TensorType(None, values.dtype)
    ax = _axis(n, n.attrs["axis"], indices.rank + 1)
    assert ax is not None
    dim: Dim = None if dv is None else int(dv)
    return TensorType(indices.shape[:ax] + (dim,) + indices.shape[ax:], values.dtype)


@one_hot.reference
def _(n: Node, indices: np.ndarray, depth: np.ndarray, values: np.ndarray) -> np.ndarray:
    d = int(depth.reshape(-1)[0])
    ax = _axis(n, n.attrs["axis"], indices.ndim + 1)
    idx = indices.astype(np.int64)
    idx = np.where(idx < 0, idx + d, idx)  # negative indices count from the end; still-out-of-range -> all off
    shape = [1] * (indices.ndim + 1)
    shape[ax] = d
    hot = np.expand_dims(idx, ax) == np.arange(d).reshape(shape)
    return np.where(hot, values[1], values[0]).astype(values.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Einsum

einsum = op("Einsum", inputs="Inputs+", outputs="Output", attrs={"equation": REQUIRED})


def _parse_einsum(n: Node, n_inputs: int) -> tuple[list[str], str | None]:
    eq = n.attrs["equation"].replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_inputs:
        raise n.error(f"equation {eq!r} has {len(terms)} operand(s) but the node has {n_inputs} input(s)")
    return terms, (rhs if "->" in eq else None)


def _term_dims(n: Node, term: str, shape: tuple[Dim, ...], dims: dict[str, Dim]) -> tuple[Dim, ...]:
    """Bind the letters of ``term`` to ``shape``; returns the dims the ellipsis stands for."""
    letters = term.replace("...", "")
    n_ell = len(shape) - len(letters)
    if n_ell < 0 or (n_ell > 0 and "..." not in term):
        raise n.error(f"term {term!r} does not match an input of rank {len(shape)}")
    before = term.split("...")[0] if "..." in term else term
    ell = tuple(shape[len(before):len(before) + n_ell])
    rest = shape[:len(before)] + shape[len(before) + n_ell:]
    for c, d in zip(letters, rest):
        old = dims.get(c, 1)
        if isinstance(old, int) and isinstance(d, int) and old != 1 and d != 1 and old != d:
            raise n.error(f"label {c!r} has size {old} and {d} in equation {n.attrs['equation']!r}")
        dims[c] = d if old == 1 or c not in dims else old
    return ell


@einsum.infer
def _(n: Node, *xs: TensorInfo) -> TensorType:
    terms, rhs = _parse_einsum(n, len(xs))
    if any(x.shape is None for x in xs):
        return TensorType(None, xs[0].dtype)
    dims: dict[str, Dim] = {}
    ells = [_term_dims(n, t, x.shape, dims) for t, x in zip(terms, xs)]  # type: ignore[arg-type]
    try:
        ell = broadcast_shapes(*ells) or ()
    except ValueError as exc:
        raise n.error(f"ellipsis dims do not broadcast: {exc}") from None
    if rhs is None:  # implicit output: ellipsis, then the labels used once, alphabetically
        letters = "".join(terms).replace("...", "")
        rhs = ("..." if ell else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    out: list[Dim] = []
    for i, part in enumerate(rhs.split("...")):
        if i:
            out.extend(ell)
        for c in part:
            if c not in dims:
                raise n.error(f"output label {c!r} does not appear in the inputs of {n.attrs['equation']!r}")
            out.append(dims[c])
    return TensorType(tuple(out), xs[0].dtype)


@einsum.reference
def _(n: Node, *xs: np.ndarray) -> np.ndarray:
    # numpy's einsum has no bfloat16 loop; half types accumulate in float32 and are cast back
    wide = [x.astype(np.float32) if x.dtype.name in ("float16", "bfloat16") else x for x in xs]
    return np.asarray(np.einsum(n.attrs["equation"].replace(" ", ""), *wide)).astype(xs[0].dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------------
# Det

det = op("Det", inputs="X", outputs="Y")


@det.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    if x.shape is None:
        return TensorType(None, x.dtype)
    if len(x.shape) < 2:
        raise n.error(f"X has shape {x.shape}; Det expects [..., M, M]")
    m1, m2 = x.shape[-2:]
    if isinstance(m1, int) and isinstance(m2, int) and m1 != m2:
        raise n.error(f"X has shape {x.shape}; Det expects square matrices in the last two dims")
    return TensorType(x.shape[:-2], x.dtype)


# float16 has no LAPACK path: compute in float32 (or float64) and cast back
det.reference(lambda n, x: np.asarray(np.linalg.det(x.astype(np.promote_types(x.dtype, np.float32)))).astype(x.dtype))
