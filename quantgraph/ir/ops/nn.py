"""Heavy linear ops: Conv, ConvTranspose (N-D, grouped, dilated), Gemm and MatMul.

Conv's reference is im2col: a strided window view of the padded input, copied once into columns and multiplied
per group with one batched ``np.matmul``; ConvTranspose is the transpose (one matmul, then col2im by adding each
kernel tap's strided slice).
"""
from __future__ import annotations

import itertools

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op
from quantgraph.ir.ops.spatial import AUTO_PADS, Window, out_dims, pad_for_windows, prod
from quantgraph.ir.ops.spatial import sliding_windows, window
from quantgraph.ir.shapes import Dim, Shape, broadcast_shapes
from quantgraph.ir.tensor import TensorInfo, TensorType

_WINDOW_ATTRS = {"auto_pad": "NOTSET", "dilations": (), "group": 1, "kernel_shape": (), "pads": (), "strides": ()}

conv = op("Conv", inputs="X W B?", outputs="Y", fusion=Fusion.OUT_FUSABLE, attrs=dict(_WINDOW_ATTRS), weights=(1, 2),
          doc="N-D convolution (ONNX Conv-22); empty window attributes mean the ONNX defaults")
conv_transpose = op("ConvTranspose", inputs="X W B?", outputs="Y", fusion=Fusion.OUT_FUSABLE, weights=(1, 2),
                    attrs={**_WINDOW_ATTRS, "output_padding": (), "output_shape": ()},
                    doc="N-D transposed convolution (ONNX ConvTranspose-22)")
gemm = op("Gemm", inputs="A B C?", outputs="Y", fusion=Fusion.OUT_FUSABLE, weights=(1, 2),
          attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
matmul = op("MatMul", inputs="A B", outputs="Y", fusion=Fusion.OUT_FUSABLE, weights=(1,))


# -- Conv / ConvTranspose --------------------------------------------------------------------------------------
def _check_conv_inputs(n: Node, x: TensorInfo, w: TensorInfo, b: TensorInfo | None, transposed: bool) -> int:
    """Validate ranks, dtypes and channel counts; returns the spatial rank."""
    what = "W (C, M/group, k1, ...)" if transposed else "W (M, C/group, k1, ...)"
    if w.rank is not None and w.rank < 3:
        raise n.error(f"W has shape {w.shape}; {n.op} expects a weight of rank >= 3: {what}")
    if x.rank is not None and x.rank < 3:
        raise n.error(f"X has shape {x.shape}; {n.op} expects (N, C, d1, ...) with at least one spatial axis")
    if x.rank is not None and w.rank is not None and x.rank != w.rank:
        raise n.error(f"X has shape {x.shape} but W has shape {w.shape}; {n.op} expects equal ranks ({what})")
    if x.dtype != w.dtype:
        raise n.error(f"X is {x.dtype} but W is {w.dtype}; {n.op} expects both of the same float type")
    rank = (x.rank or w.rank or 2 + len(n.attrs["kernel_shape"])) - 2
    group = n.attrs["group"]
    if group < 1:
        raise n.error(f"group is {group}; expected a positive group count")
    c_in = x.shape[1] if x.shape is not None else None
    w_in = w.shape[0 if transposed else 1] if w.shape is not None else None
    if isinstance(c_in, int) and isinstance(w_in, int) and c_in != (w_in if transposed else w_in * group):
        want = "W.shape[0] == C" if transposed else f"W.shape[1] * group == C ({w_in} * {group})"
        raise n.error(f"X has {c_in} channels but W has shape {w.shape}; {n.op} expects {want}")
    m = _out_channels(n, w)
    if b is not None and b.shape is not None and (len(b.shape) != 1 or (
            isinstance(m, int) and isinstance(b.shape[0], int) and b.shape[0] != m)):
        raise n.error(f"B has shape {b.shape}; {n.op} expects a 1-D bias of {m} values (one per output channel)")
    if not transposed and isinstance(m, int) and m % group:
        raise n.error(f"W has {m} output channels, not divisible by group {group}")
    return rank


def _out_channels(n: Node, w: TensorInfo) -> Dim:
    if w.shape is None:
        return None
    if n.op == "ConvTranspose":
        return w.shape[1] * n.attrs["group"] if isinstance(w.shape[1], int) else None
    return w.shape[0]


def _kernel(n: Node, w: TensorInfo | np.ndarray, rank: int) -> tuple[int, ...] | None:
    """The kernel's spatial shape from W, checked against the kernel_shape attribute."""
    attr = tuple(n.attrs["kernel_shape"])
    shape = w.shape
    from_w = tuple(shape[2:]) if shape is not None else None
    if attr and len(attr) != rank:
        raise n.error(f"kernel_shape {attr} has {len(attr)} values; expected {rank} (one per spatial axis)")
    if attr and from_w is not None and all(isinstance(d, int) for d in from_w) and attr != from_w:
        raise n.error(f"kernel_shape {attr} does not match W's spatial shape {from_w}")
    if from_w is not None and all(isinstance(d, int) for d in from_w):
        return tuple(int(d) for d in from_w)  # type: ignore[arg-type]
    return attr or None


@conv.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, b: TensorInfo | None) -> TensorType:
    rank = _check_conv_inputs(n, x, w, b, transposed=False)
    kernel = _kernel(n, w, rank)
    in_dims = x.shape[2:] if x.shape is not None else (None,) * rank
    spatial: tuple[Dim, ...] = (None,) * rank
    if kernel is not None:
        spatial = out_dims(n, window(n, kernel, in_dims), in_dims)
    batch = x.shape[0] if x.shape is not None else None
    return TensorType((batch, _out_channels(n, w)) + spatial, x.dtype)


def _bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    if b is None:
        return y
    return y + b.reshape((1, -1) + (1,) * (y.ndim - 2)).astype(y.dtype)


@conv.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    rank = x.ndim - 2
    win = window(n, w.shape[2:], x.shape[2:])
    out = [int(d) for d in out_dims(n, win, x.shape[2:])]  # type: ignore[arg-type]
    group = n.attrs["group"]
    batch, c = x.shape[:2]
    m, cg = w.shape[0], c // group
    taps = prod(w.shape[2:])
    cols = sliding_windows(pad_for_windows(x, win, out, 0), win, out)            # (N, C, *out, *k)
    cols = cols.reshape((batch, group, cg) + cols.shape[2:])
    order = (0, 1, 2) + tuple(range(3 + rank, 3 + 2 * rank)) + tuple(range(3, 3 + rank))
    cols = cols.transpose(order).reshape(batch, group, cg * taps, prod(out))   # the im2col copy
    y = np.matmul(w.reshape(group, m // group, cg * taps), cols)               # (N, G, M/G, P)
    return _bias(y.reshape((batch, m) + tuple(out)), b).astype(x.dtype, copy=False)


def _transpose_pads(n: Node, win: Window, in_dims: tuple[Dim, ...]) -> tuple[tuple[int | None, ...], tuple[Dim, ...]]:
    """ConvTranspose's (pads, output spatial dims): from output_shape or SAME_* when given, else explicit pads."""
    rank = win.rank
    a = n.attrs
    opad = tuple(a["output_padding"]) or (0,) * rank
    if len(opad) != rank:
        raise n.error(f"output_padding {opad} has {len(opad)} values; expected {rank}")
    full = [d if not isinstance(d, int) else (d - 1) * win.strides[i] + win.extent(i) + opad[i]
            for i, d in enumerate(in_dims)]
    target: tuple[Dim, ...] | None = None
    if a["output_shape"]:
        target = tuple(a["output_shape"])[-rank:]
    elif a["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        target = tuple(d * win.strides[i] if isinstance(d, int) else None for i, d in enumerate(in_dims))
    if target is None:
        pads = tuple(win.pads) if a["auto_pad"] == "NOTSET" else (0,) * (2 * rank)
        outs = tuple(f - pads[i] - pads[rank + i] if isinstance(f, int) else None  # type: ignore[operator]
                     for i, f in enumerate(full))
        return pads, outs
    begin: list[int | None] = []
    end: list[int | None] = []
    for f, t in zip(full, target):
        total = f - t if isinstance(f, int) and isinstance(t, int) else None
        if total is None:
            begin.append(None)
            end.append(None)
        elif a["auto_pad"] == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:  # SAME_LOWER and output_shape with NOTSET put the odd pixel first (ONNX reference)
            begin.append(total - total // 2)
            end.append(total // 2)
    return tuple(begin + end), target


@conv_transpose.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, b: TensorInfo | None) -> TensorType:
    rank = _check_conv_inputs(n, x, w, b, transposed=True)
    kernel = _kernel(n, w, rank)
    in_dims = tuple(x.shape[2:]) if x.shape is not None else (None,) * rank
    spatial: tuple[Dim, ...] = (None,) * rank
    if kernel is not None:
        spatial = _transpose_pads(n, _transpose_window(n, kernel), in_dims)[1]
    batch = x.shape[0] if x.shape is not None else None
    return TensorType((batch, _out_channels(n, w)) + tuple(spatial), x.dtype)


def _transpose_window(n: Node, kernel: tuple[int, ...]) -> Window:
    # SAME_* is resolved from output_shape in _transpose_pads, so the window itself reads explicit pads only.
    if n.attrs["auto_pad"] not in AUTO_PADS:
        raise n.error(f"auto_pad is '{n.attrs['auto_pad']}'; expected one of {', '.join(AUTO_PADS)}")
    probe = Node(n.name, n.op, n.inputs, n.outputs, {**n.attrs, "auto_pad": "NOTSET"})
    return window(probe, kernel, (None,) * len(kernel))


@conv_transpose.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    rank = x.ndim - 2
    kernel = tuple(w.shape[2:])
    win = _transpose_window(n, kernel)
    pads, outs = _transpose_pads(n, win, x.shape[2:])
    group = n.attrs["group"]
    batch, c = x.shape[:2]
    mg, cg = w.shape[1], c // group
    cols = np.matmul(w.reshape(group, cg, mg * prod(kernel)).transpose(0, 2, 1),
                     x.reshape(batch, group, cg, prod(x.shape[2:])))            # (N, G, Mg*K, P_in)
    cols = cols.reshape((batch, group * mg) + kernel + tuple(x.shape[2:]))
    begin = [int(p) for p in pads[:rank]]  # type: ignore[arg-type]
    shift = [max(0, -p) for p in begin]    # negative pads (output_shape larger than the taps reach) grow the canvas
    full = [(x.shape[2 + i] - 1) * win.strides[i] + win.extent(i) for i in range(rank)]
    canvas = [shift[i] + max(full[i], begin[i] + int(outs[i])) for i in range(rank)]  # type: ignore[arg-type]
    y = np.zeros((batch, group * mg) + tuple(canvas), dtype=cols.dtype)
    for tap in itertools.product(*(range(k) for k in kernel)):  # col2im: one strided add per kernel tap
        dst = tuple(slice(shift[i] + tap[i] * win.dilations[i],
                          shift[i] + tap[i] * win.dilations[i] + (x.shape[2 + i] - 1) * win.strides[i] + 1,
                          win.strides[i]) for i in range(rank))
        y[(slice(None), slice(None)) + dst] += cols[(slice(None), slice(None)) + tap]
    crop = tuple(slice(shift[i] + begin[i], shift[i] + begin[i] + int(outs[i])) for i in range(rank))  # type: ignore
    return _bias(y[(slice(None), slice(None)) + crop], b).astype(x.dtype, copy=False)


# -- Gemm / MatMul -----------------------------------------------------------------------------------------------
@gemm.infer
def _(n: Node, a: TensorInfo, b: TensorInfo, c: TensorInfo | None) -> TensorType:
    for name, t in (("A", a), ("B", b)):
        if t.rank is not None and t.rank != 2:
            raise n.error(f"{name} has shape {t.shape}; Gemm expects a 2-D matrix (use MatMul for batches)")
    if a.dtype != b.dtype:
        raise n.error(f"A is {a.dtype} but B is {b.dtype}; Gemm expects one element type")
    sa = a.shape[::-1] if a.shape is not None and n.attrs["transA"] else a.shape
    sb = b.shape[::-1] if b.shape is not None and n.attrs["transB"] else b.shape
    m, k1 = sa if sa is not None else (None, None)
    k2, cols = sb if sb is not None else (None, None)
    if isinstance(k1, int) and isinstance(k2, int) and k1 != k2:
        raise n.error(f"A{' (transposed)' * bool(n.attrs['transA'])} is {m}x{k1} but "
                      f"B{' (transposed)' * bool(n.attrs['transB'])} is {k2}x{cols}; Gemm expects inner dims to match")
    out: tuple[Dim, Dim] = (m, cols)
    # C broadcasts unidirectionally to (M, N): at most 2-D, each dim 1 or equal to the output's.
    if c is not None and c.shape is not None and (len(c.shape) > 2 or any(
            isinstance(cd, int) and isinstance(od, int) and cd not in (1, od)
            for cd, od in zip(c.shape[::-1], out[::-1]))):
        raise n.error(f"C has shape {c.shape}; Gemm expects C to broadcast to the output {out}")
    return TensorType(out, a.dtype)


@gemm.reference
def _(n: Node, a: np.ndarray, b: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    at = a.T if n.attrs["transA"] else a
    bt = b.T if n.attrs["transB"] else b
    alpha, beta = n.attrs["alpha"], n.attrs["beta"]
    y = at @ bt
    if alpha != 1.0:
        y = alpha * y
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else beta * c)
    return np.asarray(y).astype(a.dtype, copy=False)


def _matmul_shape(n: Node, a: Shape, b: Shape) -> Shape:
    """numpy.matmul's result shape: 1-D operands are promoted and the promoted axis dropped; batch dims broadcast."""
    if a is None or b is None:
        return None
    if len(a) == 0 or len(b) == 0:
        raise n.error(f"A has shape {a} and B has shape {b}; MatMul expects operands of rank >= 1")
    pa = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    pb = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    k1, k2 = pa[-1], pb[-2]
    if isinstance(k1, int) and isinstance(k2, int) and k1 != k2:
        raise n.error(f"A has shape {a} and B has shape {b}; MatMul expects A's last dim ({k1}) to equal "
                      f"B's {'only' if len(b) == 1 else 'second-to-last'} dim ({k2})")
    try:
        batch = broadcast_shapes(pa[:-2], pb[:-2])
    except ValueError as exc:
        raise n.error(f"A has shape {a} and B has shape {b}; batch dims do not broadcast ({exc})") from None
    out = tuple(batch or ()) + ((pa[-2],) if len(a) > 1 else ()) + ((pb[-1],) if len(b) > 1 else ())
    return out


@matmul.infer
def _(n: Node, a: TensorInfo, b: TensorInfo) -> TensorType:
    if a.dtype != b.dtype:
        raise n.error(f"A is {a.dtype} but B is {b.dtype}; MatMul expects one element type")
    return TensorType(_matmul_shape(n, a.shape, b.shape), a.dtype)


@matmul.reference
def _(n: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.matmul(a, b)).astype(a.dtype, copy=False)
