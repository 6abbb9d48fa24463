"""Pooling ops: MaxPool (with Indices), AveragePool, LpPool and the Global* pools (ONNX-22 semantics).

References reduce a strided window view of the padded input (spatial.sliding_windows), so no Python loop runs
over output pixels. Averages divide by a per-window count obtained by pooling a 0/1 mask the same way.
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, Layout, REQUIRED, op
from quantgraph.ir.ops.spatial import Window, out_dims, pad_for_windows, resolved_pads, sliding_windows, window
from quantgraph.ir.shapes import Dim
from quantgraph.ir.tensor import TensorInfo, TensorType

_POOL_ATTRS = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": (), "kernel_shape": REQUIRED, "pads": (),
               "strides": ()}

#: pooling runs channels-last as FusedPool (ir/ops/fused.py), which carries a layout
_VIA_FUSED_POOL = {"layout": Layout.VIA, "layout_via": "FusedPool"}
max_pool = op("MaxPool", inputs="X", outputs="Y Indices?", **_VIA_FUSED_POOL, fusion=Fusion.OPAQUE,
              attrs={**_POOL_ATTRS, "storage_order": 0})
average_pool = op("AveragePool", inputs="X", outputs="Y", **_VIA_FUSED_POOL, fusion=Fusion.OPAQUE,
                  attrs={**_POOL_ATTRS, "count_include_pad": 0})
lp_pool = op("LpPool", inputs="X", outputs="Y", fusion=Fusion.OPAQUE, attrs={**_POOL_ATTRS, "p": 2})
global_average_pool = op("GlobalAveragePool", inputs="X", outputs="Y", **_VIA_FUSED_POOL, fusion=Fusion.REDUCE)
global_max_pool = op("GlobalMaxPool", inputs="X", outputs="Y", **_VIA_FUSED_POOL, fusion=Fusion.REDUCE)
global_lp_pool = op("GlobalLpPool", inputs="X", outputs="Y", fusion=Fusion.REDUCE, attrs={"p": 2})


def _pool_type(n: Node, x: TensorInfo) -> TensorType:
    kernel = tuple(n.attrs["kernel_shape"])
    if x.rank is not None and x.rank != len(kernel) + 2:
        raise n.error(f"X has shape {x.shape} but kernel_shape {kernel} has {len(kernel)} axes; {n.op} expects "
                      f"X of rank {len(kernel) + 2} (N, C, d1, ...)")
    in_dims: tuple[Dim, ...] = tuple(x.shape[2:]) if x.shape is not None else (None,) * len(kernel)
    spatial = out_dims(n, window(n, kernel, in_dims), in_dims, bool(n.attrs["ceil_mode"]))
    lead = tuple(x.shape[:2]) if x.shape is not None else (None, None)
    return TensorType(lead + spatial, x.dtype)


for _d in (average_pool, lp_pool):
    _d.infer(lambda n, x: _pool_type(n, x))


@max_pool.infer
def _(n: Node, x: TensorInfo) -> list[TensorType]:
    y = _pool_type(n, x)
    return [y, TensorType(y.shape, "int64")]


def _windows(n: Node, x: np.ndarray, fill: float) -> tuple[Window, list[int], np.ndarray]:
    """(geometry, output spatial dims, (N, C, *out, *kernel) window view of x padded with ``fill``)."""
    win = window(n, n.attrs["kernel_shape"], x.shape[2:])
    out = [int(d) for d in out_dims(n, win, x.shape[2:], bool(n.attrs["ceil_mode"]))]  # type: ignore[arg-type]
    return win, out, sliding_windows(pad_for_windows(x, win, out, fill), win, out)


def _window_axes(rank: int) -> tuple[int, ...]:
    return tuple(range(2 + rank, 2 + 2 * rank))


def _lowest(dtype: np.dtype) -> float:
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


@max_pool.reference
def _(n: Node, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    win, out, v = _windows(n, x, _lowest(x.dtype))
    rank = win.rank
    if len(n.outputs) < 2 or not n.outputs[1]:  # indices cost an argmax and index arithmetic; skip when unused
        return v.max(axis=_window_axes(rank))
    flat = v.reshape(v.shape[: 2 + rank] + (-1,))
    # NOTE: the first maximum in row-major window order wins, as in the ONNX reference (strict '>').
    arg = np.argmax(flat, axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    taps = np.unravel_index(arg, win.kernel)
    pads = resolved_pads(win)
    coords = []
    for i in range(rank):
        o = np.arange(out[i]).reshape((-1,) + (1,) * (rank - 1 - i))
        coords.append(np.clip(o * win.strides[i] - pads[i] + taps[i] * win.dilations[i], 0, x.shape[2 + i] - 1))
    spatial = x.shape[2:]
    pos = np.ravel_multi_index(tuple(np.broadcast_arrays(*coords)), spatial,  # type: ignore[call-overload]
                               order="F" if n.attrs["storage_order"] else "C")
    base = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * rank) * int(np.prod(spatial))
    return y.astype(x.dtype, copy=False), (base + pos).astype(np.int64)


def _counts(n: Node, x: np.ndarray, win: Window, out: list[int]) -> np.ndarray:
    """How many elements each window averages: real inputs, plus explicit pads when count_include_pad."""
    mask = np.ones((1, 1) + x.shape[2:], dtype=np.float64)
    if n.attrs.get("count_include_pad", 0):
        pads = resolved_pads(win)
        mask = np.pad(mask, [(0, 0), (0, 0)] + [(pads[i], pads[win.rank + i]) for i in range(win.rank)],
                      constant_values=1.0)
        # the mask now starts at the padded origin; shift the window geometry so begin pads are not added twice
        win = Window(win.kernel, win.strides, win.dilations, (0,) * win.rank + win.pads[win.rank:])
    return sliding_windows(pad_for_windows(mask, win, out, 0.0), win, out).sum(axis=_window_axes(win.rank))


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


@average_pool.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    win, out, v = _windows(n, x, 0)
    total = v.sum(axis=_window_axes(win.rank), dtype=_acc_dtype(x.dtype))
    return (total / _counts(n, x, win, out)).astype(x.dtype)


@lp_pool.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    p = n.attrs["p"]
    win, out, v = _windows(n, x, 0)
    total = (np.abs(v.astype(_acc_dtype(x.dtype))) ** p).sum(axis=_window_axes(win.rank))
    return (total ** (1.0 / p)).astype(x.dtype)


def _global_type(n: Node, x: TensorInfo) -> TensorType:
    if x.rank is not None and x.rank < 2:
        raise n.error(f"X has shape {x.shape}; {n.op} expects (N, C, d1, ...)")
    return TensorType(None if x.shape is None else tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2), x.dtype)


for _d in (global_average_pool, global_max_pool, global_lp_pool):
    _d.infer(lambda n, x: _global_type(n, x))


def _spatial(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


@global_average_pool.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    return x.mean(axis=_spatial(x), keepdims=True, dtype=_acc_dtype(x.dtype)).astype(x.dtype)


@global_max_pool.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    return x.max(axis=_spatial(x), keepdims=True)


@global_lp_pool.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    p = n.attrs["p"]
    s = (np.abs(x.astype(_acc_dtype(x.dtype))) ** p).sum(axis=_spatial(x), keepdims=True)
    return (s ** (1.0 / p)).astype(x.dtype)
