"""Compiler-made quantized ops: int8 convolution and matmul with a requantizing epilogue, and quantized Add.

X of QConv (A of QMatMul) may also be int16 (W8A16: the weights stay int8); the integer semantics are the same.

Made by the realize rules (``compiler/rules/realize_*.py``) from imported QOperator ops (QLinearConv, ConvInteger,
...) and QDQ-wrapped float ops, never by a frontend. Their inputs follow ``QLinearConv`` / ``QLinearMatMul`` (scales
and zero points are tensors, so a graph whose parameters are run-time inputs still runs), with the epilogue after:

    QConv(X, X_scale?, X_zero_point?, W, W_scale?, W_zero_point?, Y_scale?, Y_zero_point?, B?,
          Z?, Z_scale?, Z_zero_point?)
    QMatMul(A, A_scale?, A_zero_point?, B, B_scale?, B_zero_point?, Y_scale?, Y_zero_point?, bias?,
            Z?, Z_scale?, Z_zero_point?)
    QAdd(A, A_scale, A_zero_point, B, B_scale, B_zero_point, Y_scale, Y_zero_point)
    QAveragePool(X, X_scale, X_zero_point, Y_scale, Y_zero_point)         kind AveragePool | GlobalAveragePool
    QConcat(inputs+)                 scales, zero points (per input) and the output's are attributes
    QuantizeClip(X, Y_scale, Y_zero_point)  QuantizeLinear saturating to [qmin, qmax] (attributes) inside its type

Integer semantics of QConv / QMatMul (``acc`` is exact, then wrapped to int32 like every kernel's sums):

    acc = sum (x - x_zp) * (w - w_zp) + B                    B: int32 per output channel; w_zp/w_scale per channel
    out_dtype "int32":   acc                                            (ConvInteger / MatMulInteger)
    out_dtype "float32": y = float32(acc) * S,  S = float32(x_scale * w_scale)   (dequantized, float32 throughout)
                         y += float32(z - z_zp) * float32(z_scale)  or  y += z (float32 residual);  y = act(y)
    out_dtype "uint8" | "int8":
                         t = float64(acc) * float64(M),  M = x_scale * w_scale / y_scale  (in the scales' type)
                         t += float64(z - z_zp) * float64(float32(z_scale) / float32(y_scale))   (residual)
                         t = max(t, 0) (relu) or clamp(t, float32(alpha / y_scale), float32(beta / y_scale)) (clip)
                         q = saturate(rint(t + float64(y_zp)))   round half to even

The requantization is ONNX ``QLinearConv`` / ``QLinearMatMul`` bit for bit (``onnx.reference`` forms the combined
multiplier in the scales' type and applies it in float64, then adds the zero point and rounds); it is also what the
int8 kernels' epilogue computes (``kernels/epilogue.py``). QAdd is the QDQ form bit for bit:
``QuantizeLinear(act(DequantizeLinear(a) + DequantizeLinear(b)))`` in float32, the quantize dividing by the scale.
QConcat is the QDQ form bit for bit too (each input dequantized in float32, then quantized to the output's
parameters; an input whose parameters are the output's is copied). QAveragePool sums ``x - x_zp`` exactly in int32
and requantizes ``float32(sum) / float32(count) * x_scale`` (float32, that order) with the output's QuantizeLinear,
as ``QLinearAveragePool`` does; the QDQ graph instead averages float32 values, so the two can differ by one level
where the average lies within float32 rounding of a rounding boundary.

``layout`` is "NCHW" or "NHWC" (X, Z and the output channels-last; W stays (M, C/group, kH, kW)), as for FusedConv.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.activation import ACTIVATIONS as ACTIVATION_TABLE
from quantgraph.ir.ops.fused import LAYOUTS, _inner, to_channels_first, to_channels_last
from quantgraph.ir.ops.pool import _counts, _window_axes, _windows
from quantgraph.ir.ops.quant import (CONV_ATTRS, QUANT_RANGES, SCALE_DTYPES, _check_channel_param, _check_dtype,
                                     _conv_infer, _integer_conv, _integer_matmul, _matmul_infer, _row_param)
from quantgraph.ir.ops.registry import REQUIRED, Fusion, Layout, get_op, op, ref
from quantgraph.ir.shapes import shapes_compatible
from quantgraph.ir.tensor import TensorInfo, TensorType

OUT_DTYPES = ("int32", "float32", "uint8", "int8")
#: the int8 rows of the activation table (ir/ops/activation.py)
ACTIVATIONS = tuple(a.name for a in ACTIVATION_TABLE.values() if a.int8)
INT8 = ("uint8", "int8")
#: what the activation (X of QConv, A of QMatMul) may be: int8, or int16 for W8A16 groups (``quantize.py``)
X_DTYPES = INT8 + ("int16",)
_EPILOGUE = {"out_dtype": REQUIRED, "activation": "none", "alpha": 0.0, "beta": 0.0}


# -- checks shared by QConv and QMatMul --------------------------------------------------------------------------
def _check_epilogue(n: Node, infos: dict[str, TensorInfo | None], out_shape: tuple | None,
                    names: tuple[str, str] = ("X", "W")) -> str:
    """Validate the quantization inputs against ``out_dtype`` and the activation; returns the output dtype."""
    out = n.attrs["out_dtype"]
    if out not in OUT_DTYPES:
        raise n.error(f"out_dtype is {out!r}; expected one of {', '.join(OUT_DTYPES)}")
    if n.attrs["activation"] not in ACTIVATIONS:
        raise n.error(f"activation is {n.attrs['activation']!r}; expected one of {', '.join(ACTIVATIONS)}")
    x, w = infos["x"], infos["w"]
    for what, t, zp, allowed in ((names[0], x, infos["x_zp"], X_DTYPES), (names[1], w, infos["w_zp"], INT8)):
        _check_dtype(n, what, t, allowed)
        if zp is not None and zp.dtype != t.dtype:
            raise n.error(f"{what}_zero_point is {zp.dtype} but {what} is {t.dtype}; they must have the same type")
    for what in ("x_scale", "w_scale", "y_scale", "z_scale"):
        _check_dtype(n, what, infos[what], SCALE_DTYPES)
    _check_dtype(n, "B", infos["b"], {"int32"})
    have = {k for k, v in infos.items() if v is not None}
    z = infos["z"]
    if out == "int32":
        extra = sorted(have & {"y_scale", "y_zp", "z"})
        if extra or n.attrs["activation"] != "none":
            raise n.error(f"out_dtype int32 (raw accumulators) takes no {', '.join(extra) or 'activation'}; "
                          "use out_dtype float32, uint8 or int8")
        return out
    missing = sorted({"x_scale", "w_scale"} - have) + (["y_scale"] if out in INT8 and "y_scale" not in have else [])
    if missing:
        raise n.error(f"out_dtype {out} needs {', '.join(missing)}")
    if out == "float32" and have & {"y_scale", "y_zp"}:
        raise n.error("out_dtype float32 (dequantized) takes no Y_scale / Y_zero_point")
    y_zp = infos["y_zp"]
    if y_zp is not None and y_zp.dtype != out:
        raise n.error(f"Y_zero_point is {y_zp.dtype} but out_dtype is {out}; they must agree")
    if z is not None:
        if z.dtype in INT8:
            if infos["z_scale"] is None:
                raise n.error("an integer residual Z needs Z_scale")
            if infos["z_zp"] is not None and infos["z_zp"].dtype != z.dtype:
                raise n.error(f"Z_zero_point is {infos['z_zp'].dtype} but Z is {z.dtype}; they must agree")
        elif z.dtype != "float32":
            raise n.error(f"residual Z is {z.dtype}; expected uint8, int8 or float32")
        if not shapes_compatible(out_shape, z.shape):
            raise n.error(f"residual Z has shape {z.shape}; expected the output shape {out_shape}")
    return out


def _infos(names: str, values: tuple) -> dict[str, TensorInfo | None]:
    return dict(zip(names.split(), values))


def _flat(p: np.ndarray | None) -> np.ndarray | None:
    return None if p is None else np.asarray(p).reshape(-1)


def _epilogue(n: Node, acc: np.ndarray, channel_shape: tuple[int, ...], x_s: np.ndarray | None,
              w_s: np.ndarray | None, y_s: np.ndarray | None, y_zp: np.ndarray | None, z: np.ndarray | None,
              z_s: np.ndarray | None, z_zp: np.ndarray | None, row: np.ndarray | None = None) -> np.ndarray:
    """The epilogue of the module docstring on the exact accumulators ``acc`` (float64, integer valued).

    ``channel_shape`` reshapes a per-channel W scale so it broadcasts over ``acc``; ``row`` is an extra factor of
    the X scale (QMatMul's per-row A scale, already broadcastable)."""
    v = acc.astype(np.int64).astype(np.int32)  # NOTE: wraps like the kernels' int32 sums
    out = n.attrs["out_dtype"]
    act = n.attrs["activation"]
    if out == "int32":
        return v
    ws = w_s.reshape(channel_shape) if w_s.size > 1 else w_s.reshape(())
    xs = x_s.reshape(()) if row is None else row
    zc = None  # an integer residual, centred
    if z is not None and z.dtype != np.float32:
        zc = z.astype(np.int32) - (np.int32(0) if z_zp is None else np.int32(z_zp.reshape(())))
    f32 = np.float32
    if out == "float32":
        y = v.astype(f32) * (xs * ws).astype(f32)
        if z is not None:
            y = y + (z if zc is None else zc.astype(f32) * f32(z_s.reshape(())))
        if act == "relu":
            y = np.where(y > f32(0), y, f32(0))
        elif act == "clip":
            lo, hi = f32(n.attrs["alpha"]), f32(n.attrs["beta"])
            y = np.where(y < lo, lo, np.where(y > hi, hi, y))
        return y.astype(f32)
    ys = y_s.reshape(())
    t = v.astype(np.float64) * (xs * ws / ys).astype(np.float64)  # NOTE: multiplier in the scales' type, as ONNX
    if z is not None:
        if zc is None:
            t = t + z.astype(np.float64) * np.float64(f32(1.0 / float(ys)))
        else:
            t = t + zc.astype(np.float64) * np.float64(f32(z_s.reshape(())) / f32(ys))
    if act == "relu":
        t = np.where(t > 0.0, t, 0.0)
    elif act == "clip":
        inv = 1.0 / float(ys)
        lo, hi = np.float64(f32(n.attrs["alpha"] * inv)), np.float64(f32(n.attrs["beta"] * inv))
        t = np.where(t < lo, lo, np.where(t > hi, hi, t))
    zp = 0.0 if y_zp is None else np.float64(y_zp.reshape(()))
    qlo, qhi = QUANT_RANGES[out]
    return np.clip(np.rint(t + zp), qlo, qhi).astype(out)


# -- QConv -------------------------------------------------------------------------------------------------------
_QCONV_PORTS = "X X_scale? X_zero_point? W W_scale? W_zero_point? Y_scale? Y_zero_point? B? Z? Z_scale? Z_zero_point?"
_QCONV_NAMES = "x x_scale x_zp w w_scale w_zp y_scale y_zp b z z_scale z_zp"
qconv = op("QConv", inputs=_QCONV_PORTS, outputs="Y", fusion=Fusion.OUT_FUSABLE, weights=(3,),
           layout=Layout.ATTR, layout_slots=(0, 9),
           attrs={**CONV_ATTRS, **_EPILOGUE, "layout": "NCHW"},
           doc="int8 Conv with exact int32 accumulation and a dequantizing / requantizing epilogue")


def _check_layout(n: Node) -> bool:
    if n.attrs["layout"] not in LAYOUTS:
        raise n.error(f"layout '{n.attrs['layout']}' is unknown; expected NCHW or NHWC")
    return n.attrs["layout"] == "NHWC"


@qconv.infer
def _(n: Node, *infos: TensorInfo | None) -> TensorType:
    d = _infos(_QCONV_NAMES, infos)
    nhwc = _check_layout(n)
    x, w = d["x"], d["w"]
    _check_dtype(n, "X", x, X_DTYPES)
    _check_dtype(n, "W", w, INT8)
    for what in ("w_scale", "w_zp", "b"):
        _check_channel_param(n, what, d[what], w)
    xin = x.with_(shape=to_channels_first(x.shape), dtype="float32") if nhwc else x
    shape = _conv_infer(n, xin, w)
    if nhwc:
        shape = to_channels_last(shape)
    return TensorType(shape, _check_epilogue(n, d, shape))


def _nchw(x: np.ndarray | None, nhwc: bool) -> np.ndarray | None:
    return np.moveaxis(x, -1, 1) if nhwc and x is not None else x


@qconv.reference
def _(n: Node, *arrays: np.ndarray | None) -> np.ndarray:
    d = _infos(_QCONV_NAMES, arrays)
    nhwc = n.attrs["layout"] == "NHWC"
    x = _nchw(d["x"], nhwc)
    acc = _integer_conv(n, x, d["x_zp"], d["w"], _flat(d["w_zp"]))
    channel = (-1,) + (1,) * (x.ndim - 2)  # output channels are axis 1 in NCHW
    if d["b"] is not None:
        acc = acc + d["b"].astype(np.float64).reshape(channel)
    y = _epilogue(n, acc, channel, d["x_scale"], _flat(d["w_scale"]), d["y_scale"], d["y_zp"], _nchw(d["z"], nhwc),
                  d["z_scale"], d["z_zp"])
    return np.ascontiguousarray(np.moveaxis(y, 1, -1)) if nhwc else y


# -- QMatMul -----------------------------------------------------------------------------------------------------
_QMM_PORTS = "A A_scale? A_zero_point? B B_scale? B_zero_point? Y_scale? Y_zero_point? bias? Z? Z_scale? Z_zero_point?"
qmatmul = op("QMatMul", inputs=_QMM_PORTS, outputs="Y", fusion=Fusion.OUT_FUSABLE, attrs=dict(_EPILOGUE), weights=(3,),
             doc="int8 MatMul with exact int32 accumulation and a dequantizing / requantizing epilogue; B's scale, "
                 "zero point and the bias are per tensor or per column")


def _check_column_param(n: Node, what: str, p: TensorInfo | None, b: TensorInfo) -> None:
    if p is None or p.shape is None or b.shape is None or not b.shape:
        return
    cols = b.shape[-1]
    ok = p.rank == 0 or (p.rank == 1 and (p.shape[0] in (1, cols) or not isinstance(p.shape[0], int)
                                          or not isinstance(cols, int)))
    if not ok:
        raise n.error(f"{what} has shape {p.shape}; expected a scalar or {cols} values (one per column of B)")


@qmatmul.infer
def _(n: Node, *infos: TensorInfo | None) -> TensorType:
    d = _infos(_QCONV_NAMES, infos)
    a, b = d["x"], d["w"]
    _check_dtype(n, "A", a, X_DTYPES)
    _check_dtype(n, "B", b, INT8)
    for what in ("w_scale", "w_zp", "b"):
        _check_column_param(n, {"w_scale": "B_scale", "w_zp": "B_zero_point", "b": "bias"}[what], d[what], b)
    shape = _matmul_infer(n, a, b)
    return TensorType(shape, _check_epilogue(n, d, shape, ("A", "B")))


@qmatmul.reference
def _(n: Node, *arrays: np.ndarray | None) -> np.ndarray:
    d = _infos(_QCONV_NAMES, arrays)
    a = d["x"]
    acc = _integer_matmul(a, d["x_zp"], d["w"], _flat(d["w_zp"]))
    if d["b"] is not None:
        acc = acc + d["b"].astype(np.float64).reshape(-1)
    x_s = d["x_scale"]
    row = None if x_s is None or x_s.size == 1 else _row_param(x_s, a.ndim)
    return _epilogue(n, acc, (-1,), x_s, _flat(d["w_scale"]), d["y_scale"], d["y_zp"], d["z"], d["z_scale"],
                     d["z_zp"], row)


# -- QAdd --------------------------------------------------------------------------------------------------------
qadd = op("QAdd", inputs="A A_scale A_zero_point B B_scale B_zero_point Y_scale Y_zero_point", outputs="Y",
          fusion=Fusion.OPAQUE, attrs={"activation": "none"}, layout=Layout.AGNOSTIC,
          doc="QuantizeLinear(act(DequantizeLinear(A) + DequantizeLinear(B))), per-tensor parameters, same shapes")


@qadd.infer
def _(n: Node, a: TensorInfo, a_s: TensorInfo, a_zp: TensorInfo, b: TensorInfo, b_s: TensorInfo,
      b_zp: TensorInfo, y_s: TensorInfo, y_zp: TensorInfo) -> TensorType:
    if n.attrs["activation"] not in ("none", "relu"):
        raise n.error(f"activation is {n.attrs['activation']!r}; QAdd applies none or relu")
    for what, t, zp in (("A", a, a_zp), ("B", b, b_zp)):
        _check_dtype(n, what, t, INT8)
        if zp.dtype != t.dtype:
            raise n.error(f"{what}_zero_point is {zp.dtype} but {what} is {t.dtype}; they must have the same type")
    _check_dtype(n, "Y_zero_point", y_zp, INT8)
    for what, t in (("A_scale", a_s), ("B_scale", b_s), ("Y_scale", y_s)):
        _check_dtype(n, what, t, {"float32"})
        if t.shape is not None and t.shape not in ((), (1,)):
            raise n.error(f"{what} has shape {t.shape}; QAdd takes per-tensor parameters (a scalar)")
    if not shapes_compatible(a.shape, b.shape):
        raise n.error(f"A has shape {a.shape} and B {b.shape}; QAdd adds tensors of the same shape")
    return TensorType(a.shape if a.shape is not None else b.shape, y_zp.dtype)


@qadd.reference
def _(n: Node, a: np.ndarray, a_s: np.ndarray, a_zp: np.ndarray, b: np.ndarray, b_s: np.ndarray,
      b_zp: np.ndarray, y_s: np.ndarray, y_zp: np.ndarray) -> np.ndarray:
    y = ref("Add", ref("DequantizeLinear", a, a_s, a_zp), ref("DequantizeLinear", b, b_s, b_zp))
    if n.attrs["activation"] == "relu":
        y = ref("Relu", y)
    return ref("QuantizeLinear", y, y_s, y_zp)


# -- QAveragePool --------------------------------------------------------------------------------------------------
#: the average pools QAveragePool computes (``kind``) and the attributes each carries
QPOOL_KINDS = {"AveragePool": ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides",
                               "count_include_pad"),
               "GlobalAveragePool": ()}
qaverage_pool = op("QAveragePool", inputs="X X_scale X_zero_point Y_scale Y_zero_point", outputs="Y",
                   fusion=Fusion.OPAQUE, layout=Layout.ATTR, layout_slots=(0,),
                   attrs={"kind": "AveragePool", "auto_pad": "NOTSET", "ceil_mode": 0, "dilations": (),
                          "kernel_shape": (), "pads": (), "strides": (), "count_include_pad": 0, "layout": "NCHW"},
                   doc="int8 average pooling (or global average pooling): exact int32 window sums, requantized")


def _qpool_inner(n: Node) -> Node:
    kind = n.attrs["kind"]
    if kind not in QPOOL_KINDS:
        raise n.error(f"kind '{kind}' is unknown; expected one of {', '.join(QPOOL_KINDS)}")
    _check_layout(n)
    return _inner(n, kind, QPOOL_KINDS[kind])


def _check_scalar_params(n: Node, params: Sequence[tuple[str, TensorInfo]]) -> None:
    for what, t in params:
        _check_dtype(n, what, t, {"float32"} if what.endswith("scale") else INT8)
        if t.shape is not None and t.shape not in ((), (1,)):
            raise n.error(f"{what} has shape {t.shape}; {n.op} takes per-tensor parameters (a scalar)")


@qaverage_pool.infer
def _(n: Node, x: TensorInfo, x_s: TensorInfo, x_zp: TensorInfo, y_s: TensorInfo, y_zp: TensorInfo) -> TensorType:
    inner = _qpool_inner(n)
    _check_dtype(n, "X", x, INT8)
    _check_scalar_params(n, (("X_scale", x_s), ("X_zero_point", x_zp), ("Y_scale", y_s), ("Y_zero_point", y_zp)))
    if x_zp.dtype != x.dtype:
        raise n.error(f"X_zero_point is {x_zp.dtype} but X is {x.dtype}; they must have the same type")
    nhwc = n.attrs["layout"] == "NHWC"
    xin = x.with_(shape=to_channels_first(x.shape) if nhwc else x.shape, dtype="float32")
    out = get_op(inner.op).run_infer(inner, [xin])[0]
    return TensorType(to_channels_last(out.shape) if nhwc else out.shape, y_zp.dtype)


@qaverage_pool.reference
def _(n: Node, x: np.ndarray, x_s: np.ndarray, x_zp: np.ndarray, y_s: np.ndarray, y_zp: np.ndarray) -> np.ndarray:
    inner = _qpool_inner(n)
    nhwc = n.attrs["layout"] == "NHWC"
    xc = _nchw(x, nhwc).astype(np.int64) - np.int64(x_zp.reshape(()))
    f32 = np.float32
    if inner.op == "GlobalAveragePool":
        axes = tuple(range(2, xc.ndim))
        total = xc.sum(axis=axes, keepdims=True)
        count = np.full((1,) * xc.ndim, int(np.prod(xc.shape[2:], dtype=np.int64)), f32)
    else:
        win, out, v = _windows(inner, xc, 0)
        total = v.sum(axis=_window_axes(win.rank))
        count = _counts(inner, xc, win, out).astype(f32)
    # NOTE: int32 sums (wrapped like the kernel's), then float32 in the kernel's order: sum / count * x_scale
    y = total.astype(np.int32).astype(f32) / count * f32(x_s.reshape(()))
    q = ref("QuantizeLinear", y.astype(f32), y_s, y_zp)
    return np.ascontiguousarray(np.moveaxis(q, 1, -1)) if nhwc else q


# -- QConcat -------------------------------------------------------------------------------------------------------
qconcat = op("QConcat", inputs="inputs+", outputs="Y", fusion=Fusion.INJECTIVE, layout=Layout.CHANNEL_AXIS,
             attrs={"axis": REQUIRED, "scales": REQUIRED, "zero_points": REQUIRED, "y_scale": REQUIRED,
                    "y_zero_point": REQUIRED, "out_dtype": REQUIRED},
             doc="Concat of int8 tensors, each requantized from its (scale, zero point) to the output's")


def _qconcat_params(n: Node, count: int) -> tuple[list[float], list[int]]:
    scales, zps = list(n.attrs["scales"]), list(n.attrs["zero_points"])
    if len(scales) != count or len(zps) != count:
        raise n.error(f"{count} inputs but {len(scales)} scales and {len(zps)} zero points; expected one each")
    if not all(s > 0 for s in scales + [n.attrs["y_scale"]]):
        raise n.error(f"scales {scales} and y_scale {n.attrs['y_scale']} must be positive")
    return scales, zps


@qconcat.infer
def _(n: Node, *xs: TensorInfo) -> TensorType:
    scales, zps = _qconcat_params(n, len(xs))
    out = n.attrs["out_dtype"]
    if out not in INT8:
        raise n.error(f"out_dtype is {out!r}; expected uint8 or int8")
    for i, (x, z) in enumerate(zip(xs, zps)):
        _check_dtype(n, f"input {i}", x, INT8)
        lo, hi = QUANT_RANGES[x.dtype]
        if not lo <= z <= hi:
            raise n.error(f"zero point {z} of input {i} is outside the {x.dtype} range")
    lo, hi = QUANT_RANGES[out]
    if not lo <= n.attrs["y_zero_point"] <= hi:
        raise n.error(f"y_zero_point {n.attrs['y_zero_point']} is outside the {out} range")
    inner = Node(n.name, "Concat", n.inputs, n.outputs, {"axis": n.attrs["axis"]})
    shape = get_op("Concat").run_infer(inner, [x.with_(dtype="float32") for x in xs])[0].shape
    return TensorType(shape, out)


@qconcat.reference
def _(n: Node, *xs: np.ndarray) -> np.ndarray:
    scales, zps = _qconcat_params(n, len(xs))
    f32 = np.float32
    ys, yz = f32(n.attrs["y_scale"]), np.asarray(n.attrs["y_zero_point"], n.attrs["out_dtype"])
    parts = [ref("QuantizeLinear", ref("DequantizeLinear", x, f32(s), np.asarray(z, x.dtype)), ys, yz)
             for x, s, z in zip(xs, scales, zps)]
    return np.concatenate(parts, axis=n.attrs["axis"])


# -- QuantizeClip --------------------------------------------------------------------------------------------------
quantize_clip = op("QuantizeClip", inputs="X Y_scale Y_zero_point", outputs="Y", fusion=Fusion.OPAQUE,
                   layout=Layout.AGNOSTIC, attrs={"qmin": REQUIRED, "qmax": REQUIRED},
                   doc="clamp(QuantizeLinear(X, Y_scale, Y_zero_point), qmin, qmax), per tensor: the int16 input of "
                       "a W8A16 group, whose range +-int16_qmax keeps the int32 accumulator from overflowing")
#: the types QuantizeClip writes
QCLIP_DTYPES = ("uint8", "int8", "int16")


@quantize_clip.infer
def _(n: Node, x: TensorInfo, y_s: TensorInfo, y_zp: TensorInfo) -> TensorType:
    _check_dtype(n, "X", x, {"float32"})
    _check_scalar_params(n, (("Y_scale", y_s),))
    _check_dtype(n, "Y_zero_point", y_zp, QCLIP_DTYPES)
    if y_zp.shape is not None and y_zp.shape not in ((), (1,)):
        raise n.error(f"Y_zero_point has shape {y_zp.shape}; QuantizeClip takes per-tensor parameters (a scalar)")
    lo, hi = QUANT_RANGES[y_zp.dtype]
    if not lo <= n.attrs["qmin"] <= n.attrs["qmax"] <= hi:
        raise n.error(f"qmin {n.attrs['qmin']} and qmax {n.attrs['qmax']} must be ordered inside the {y_zp.dtype} "
                      f"range [{lo}, {hi}]")
    return TensorType(x.shape, y_zp.dtype)


@quantize_clip.reference
def _(n: Node, x: np.ndarray, y_s: np.ndarray, y_zp: np.ndarray) -> np.ndarray:
    q = ref("QuantizeLinear", x, y_s, y_zp)
    return np.clip(q, n.attrs["qmin"], n.attrs["qmax"]).astype(q.dtype)
