"""Quantization ops: affine (de)quantization and integer / quantized-linear matmul and conv.

Semantics are those of the newest ONNX versions. Affine quantization is ``real = scale * (q - zero_point)``; scales
and zero points are per tensor (scalar or 1 element), per axis (1-D along ``axis``) or blocked (same rank as the
data, ``ceil(D / block_size)`` along ``axis``). Integer arithmetic is done exactly (int64, or float64 whose 53-bit
mantissa holds every product sum of 8/16-bit operands), then rounded half to even and saturated to the output type.
Conv and MatMul are not re-implemented here: references call the registry's ``Conv`` and ``MatMul``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from quantgraph.errors import QuantgraphError
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, Layout, get_op, op, ref
from quantgraph.ir.shapes import Shape, normalize_axis
from quantgraph.ir.tensor import TensorInfo, TensorType

#: storage types of quantized tensors and their saturation ranges
QUANT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}
#: DequantizeLinear also accepts int32 input (e.g. a quantized bias)
DEQUANT_INPUTS = frozenset(QUANT_RANGES) | {"int32"}
SCALE_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64"})
#: ConvInteger / QLinearConv carry Conv's window attributes (see ir/ops/spatial.py: () means the ONNX default)
CONV_ATTRS = {"auto_pad": "NOTSET", "strides": (), "pads": (), "dilations": (), "group": 1}


# -- shared helpers -----------------------------------------------------------------------------------------------
def _check_dtype(n: Node, what: str, info: TensorInfo | None, allowed: Sequence[str] | frozenset[str]) -> None:
    if info is not None and info.dtype not in allowed:
        raise n.error(f"{what} is {info.dtype}; {n.op} expects one of {', '.join(sorted(allowed))}")


def _check_params(n: Node, x: TensorInfo, param: TensorInfo | None, what: str) -> None:
    """Validate a scale / zero point shape against the data for per-tensor, per-axis or blocked quantization."""
    if param is None or param.shape is None or x.shape is None:
        return
    axis, block = n.attrs["axis"], n.attrs["block_size"]
    if block < 0:
        raise n.error(f"block_size is {block}; expected 0 (per tensor / per axis) or a positive block length")
    rank = len(x.shape)
    if param.rank == 0 or (param.rank == 1 and param.shape[0] == 1):
        return
    try:
        ax = normalize_axis(axis, rank)
    except ValueError:
        raise n.error(f"axis {axis} is out of range for X of rank {rank}") from None
    if block == 0:
        if param.rank != 1:
            raise n.error(f"{what} has shape {param.shape}; {n.op} without block_size expects a scalar or a 1-D "
                          f"tensor along axis {axis}")
        d, p = x.shape[ax], param.shape[0]
        if isinstance(d, int) and isinstance(p, int) and d != p:
            raise n.error(f"{what} has {p} elements but X has {d} along axis {axis}; expected one per channel")
        return
    if param.rank != rank:
        raise n.error(f"{what} has shape {param.shape}; blocked quantization expects rank {rank} like X")
    for i, (d, p) in enumerate(zip(x.shape, param.shape)):
        if not (isinstance(d, int) and isinstance(p, int)):
            continue
        want = -(-d // block) if i == ax else d
        if p != want:
            raise n.error(f"{what} has shape {param.shape}; with block_size {block} on axis {axis} expected "
                          f"dim {i} to be {want}")


def _expand(param: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """Broadcastable form of a per-tensor, per-axis or blocked scale / zero point for data of ``shape``."""
    if param.size == 1:
        return param.reshape(())
    ax = normalize_axis(axis, len(shape))
    if block_size == 0:
        dims = [1] * len(shape)
        dims[ax] = param.size
        return param.reshape(dims)
    # repeat each block's value block_size times; the last block may be partial
    return np.repeat(param, block_size, axis=ax).take(np.arange(shape[ax]), axis=ax)


def _saturate(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round half to even and clip to ``dtype``'s range (clip first in float so huge values cannot wrap)."""
    lo, hi = QUANT_RANGES[dtype]
    return np.clip(np.rint(values), lo, hi).astype(dtype)


def _centered(q: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    """``q - zero_point`` as float64: exact for every 8/16-bit operand, and BLAS-backed in MatMul/Conv."""
    out = q.astype(np.float64)
    return out if zero_point is None else out - zero_point.astype(np.float64)


# -- QuantizeLinear / DequantizeLinear ---------------------------------------------------------------------------
# NOTE: Q/DQ are layout-agnostic for the layout pass when their parameters are scalars (per tensor): see Layout
quantize_linear = op("QuantizeLinear", inputs="X Y_scale Y_zero_point?", outputs="Y", fusion=Fusion.OPAQUE,
                     layout=Layout.AGNOSTIC,
                     attrs={"axis": 1, "block_size": 0, "output_dtype": None, "precision": None},
                     doc="y = saturate(round_half_even(x / y_scale) + y_zero_point); output_dtype and precision "
                         "are IR dtype names (None: zero point's type or uint8; y_scale's type)")


def _quant_dtype(n: Node, zp_dtype: str | None) -> str:
    want = n.attrs["output_dtype"]
    if zp_dtype is not None and want is not None and want != zp_dtype:
        raise n.error(f"output_dtype is {want} but Y_zero_point is {zp_dtype}; they must agree")
    dtype = zp_dtype or want or "uint8"
    if dtype not in QUANT_RANGES:
        raise n.unsupported(f"quantized type {dtype} is not supported; supported: {', '.join(QUANT_RANGES)}")
    return dtype


@quantize_linear.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo, zp: TensorInfo | None) -> TensorType:
    _check_dtype(n, "X", x, SCALE_DTYPES | {"int32"})
    _check_dtype(n, "Y_scale", scale, SCALE_DTYPES)
    _check_params(n, x, scale, "Y_scale")
    _check_params(n, x, zp, "Y_zero_point")
    if n.attrs["precision"] not in (None, *SCALE_DTYPES):
        raise n.error(f"precision is {n.attrs['precision']}; expected a float type")
    return TensorType(x.shape, _quant_dtype(n, None if zp is None else zp.dtype))


@quantize_linear.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    dtype = _quant_dtype(n, None if zp is None else str(zp.dtype))
    axis, block = n.attrs["axis"], n.attrs["block_size"]
    # the division runs in `precision` (default: y_scale's type), as the spec says, so rounding ties match
    prec = n.attrs["precision"] or scale.dtype
    q = np.rint(x.astype(prec) / _expand(scale, x.shape, axis, block).astype(prec)).astype(np.float64)
    if zp is not None:
        q = q + _expand(zp, x.shape, axis, block)
    return _saturate(q, dtype)


dequantize_linear = op("DequantizeLinear", inputs="X X_scale X_zero_point?", outputs="Y", fusion=Fusion.OPAQUE,
                       layout=Layout.AGNOSTIC,
                       attrs={"axis": 1, "block_size": 0, "output_dtype": None},
                       doc="y = (x - x_zero_point) * x_scale; output_dtype is an IR dtype name (None: x_scale's)")


@dequantize_linear.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo, zp: TensorInfo | None) -> TensorType:
    _check_dtype(n, "X", x, DEQUANT_INPUTS)
    _check_dtype(n, "X_scale", scale, SCALE_DTYPES)
    if zp is not None and zp.dtype != x.dtype:
        raise n.error(f"X_zero_point is {zp.dtype} but X is {x.dtype}; they must have the same type")
    _check_params(n, x, scale, "X_scale")
    _check_params(n, x, zp, "X_zero_point")
    out = n.attrs["output_dtype"] or scale.dtype
    if out not in SCALE_DTYPES:
        raise n.error(f"output_dtype is {out}; DequantizeLinear produces one of {', '.join(sorted(SCALE_DTYPES))}")
    return TensorType(x.shape, out)


@dequantize_linear.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    axis, block = n.attrs["axis"], n.attrs["block_size"]
    # float64 holds both (x - zp) and its product with a float32 scale exactly: one rounding, to the output type
    zp_b = None if zp is None else _expand(zp, x.shape, axis, block)
    y = _centered(x, zp_b) * _expand(scale, x.shape, axis, block).astype(np.float64)
    return y.astype(n.attrs["output_dtype"] or scale.dtype)


# -- DynamicQuantizeLinear ---------------------------------------------------------------------------------------
dynamic_quantize_linear = op("DynamicQuantizeLinear", inputs="X", outputs="Y Y_scale Y_zero_point",
                             fusion=Fusion.OPAQUE, doc="uint8 quantization with scale/zero point from x's range")


@dynamic_quantize_linear.infer
def _(n: Node, x: TensorInfo) -> list[TensorType]:
    _check_dtype(n, "X", x, {"float32"})
    return [TensorType(x.shape, "uint8"), TensorType((), "float32"), TensorType((), "uint8")]


@dynamic_quantize_linear.reference
def _(n: Node, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # the range always includes 0 so that 0 is exactly representable (zero padding stays exact)
    hi = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    lo = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zp = np.clip(np.rint(np.float32(0) - lo / scale), 0, 255)
    y = _saturate(np.rint(x / scale).astype(np.float64) + zp, "uint8")
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)


# -- MatMulInteger / QLinearMatMul -------------------------------------------------------------------------------
def _row_param(p: np.ndarray | None, a_ndim: int) -> np.ndarray | None:
    """A per-row (M) vector applies along A's second-last axis; scalars and N-D tensors broadcast as they are."""
    if p is None or p.ndim != 1 or p.size == 1 or a_ndim < 2:
        return None if p is None else (p.reshape(()) if p.size == 1 else p)
    return p.reshape(-1, 1)


def _matmul_infer(n: Node, a: TensorInfo, b: TensorInfo) -> Shape:
    """MatMul's output shape, from the registry's MatMul inference (one place for the broadcasting rules)."""
    probe = [TensorInfo(a.name, a.shape, "float32"), TensorInfo(b.name, b.shape, "float32")]
    return _delegate_infer(n, "MatMul", probe, {}).shape


def _delegate_infer(n: Node, op_name: str, infos: list[TensorInfo | None], attrs: dict) -> TensorType:
    d = get_op(op_name)
    inner = Node(n.name, op_name, tuple(i.name if i is not None else "" for i in infos), ("y",),
                 d.complete_attrs(n.name, attrs))
    try:
        return d.run_infer(inner, infos)[0]
    except QuantgraphError as exc:  # report it against this node and op
        raise n.error(exc.message) from exc


def _integer_matmul(a: np.ndarray, a_zp: np.ndarray | None, b: np.ndarray, b_zp: np.ndarray | None) -> np.ndarray:
    """(A - a_zp) @ (B - b_zp) as exact float64 (integer valued)."""
    return ref("MatMul", _centered(a, _row_param(a_zp, a.ndim)), _centered(b, b_zp))


matmul_integer = op("MatMulInteger", inputs="A B A_zero_point? B_zero_point?", outputs="Y", fusion=Fusion.OPAQUE,
                    doc="int32 (A - a_zero_point) @ (B - b_zero_point); zero points per tensor, per row of A, "
                        "per column of B")


@matmul_integer.infer
def _(n: Node, a: TensorInfo, b: TensorInfo, a_zp: TensorInfo | None, b_zp: TensorInfo | None) -> TensorType:
    for what, t, zp in (("A", a, a_zp), ("B", b, b_zp)):
        _check_dtype(n, what, t, {"uint8", "int8"})
        if zp is not None and zp.dtype != t.dtype:
            raise n.error(f"{what}_zero_point is {zp.dtype} but {what} is {t.dtype}; they must have the same type")
    return TensorType(_matmul_infer(n, a, b), "int32")


@matmul_integer.reference
def _(n: Node, a: np.ndarray, b: np.ndarray, a_zp: np.ndarray | None, b_zp: np.ndarray | None) -> np.ndarray:
    return _integer_matmul(a, a_zp, b, b_zp).astype(np.int32)


qlinear_matmul = op("QLinearMatMul", inputs="A A_scale A_zero_point B B_scale B_zero_point Y_scale Y_zero_point",
                    outputs="Y", fusion=Fusion.OPAQUE,
                    doc="quantized matmul: requantizes the exact integer product with a_scale * b_scale / y_scale")


def _requantize(acc: np.ndarray, multiplier: np.ndarray, y_zp: np.ndarray, dtype: str) -> np.ndarray:
    """Integer accumulator -> output type; the multiplier is formed in the scales' type, as ONNX does."""
    return _saturate(acc * multiplier.astype(np.float64) + y_zp.astype(np.float64), dtype)


@qlinear_matmul.infer
def _(n: Node, a: TensorInfo, a_s: TensorInfo, a_zp: TensorInfo, b: TensorInfo, b_s: TensorInfo,
      b_zp: TensorInfo, y_s: TensorInfo, y_zp: TensorInfo) -> TensorType:
    for what, t in (("a", a), ("a_zero_point", a_zp), ("b", b), ("b_zero_point", b_zp), ("y_zero_point", y_zp)):
        _check_dtype(n, what, t, {"uint8", "int8"})
    for what, t in (("a_scale", a_s), ("b_scale", b_s), ("y_scale", y_s)):
        _check_dtype(n, what, t, SCALE_DTYPES)
    return TensorType(_matmul_infer(n, a, b), y_zp.dtype)


@qlinear_matmul.reference
def _(n: Node, a: np.ndarray, a_s: np.ndarray, a_zp: np.ndarray, b: np.ndarray, b_s: np.ndarray,
      b_zp: np.ndarray, y_s: np.ndarray, y_zp: np.ndarray) -> np.ndarray:
    mult = _row_param(a_s, a.ndim) * b_s / y_s
    return _requantize(_integer_matmul(a, a_zp, b, b_zp), mult, y_zp, str(y_zp.dtype))


# -- ConvInteger / QLinearConv -----------------------------------------------------------------------------------
def _conv_attrs(n: Node) -> dict:
    return {k: n.attrs[k] for k in CONV_ATTRS}


def _per_channel(p: np.ndarray | None, rank: int) -> np.ndarray | None:
    """A per-output-channel (M) vector as a (M, 1, ...) / (1, M, 1, ...) broadcastable array: axis given by rank."""
    if p is None or p.size == 1:
        return None if p is None else p.reshape(())
    return p.reshape((-1,) + (1,) * (rank - 1))


def _integer_conv(n: Node, x: np.ndarray, x_zp: np.ndarray | None, w: np.ndarray,
                  w_zp: np.ndarray | None) -> np.ndarray:
    """Conv of (x - x_zp) with (w - w_zp) as exact float64 (integer valued); w_zp may be per output channel."""
    xc = _centered(x, None if x_zp is None else x_zp.reshape(()))
    return ref("Conv", xc, _centered(w, _per_channel(w_zp, w.ndim)), None, **_conv_attrs(n))


def _conv_infer(n: Node, x: TensorInfo, w: TensorInfo) -> Shape:
    probe = [TensorInfo(x.name, x.shape, "float32"), TensorInfo(w.name, w.shape, "float32"), None]
    return _delegate_infer(n, "Conv", probe, _conv_attrs(n)).shape


def _check_channel_param(n: Node, what: str, p: TensorInfo | None, w: TensorInfo) -> None:
    if p is None or p.shape is None or w.shape is None or not w.shape:
        return
    m = w.shape[0]
    ok = p.rank == 0 or (p.rank == 1 and (p.shape[0] in (1, m) or not isinstance(p.shape[0], int)
                                          or not isinstance(m, int)))
    if not ok:
        raise n.error(f"{what} has shape {p.shape}; expected a scalar or {m} values (one per output channel)")


conv_integer = op("ConvInteger", inputs="X W X_zero_point? W_zero_point?", outputs="Y", attrs=dict(CONV_ATTRS),
                  fusion=Fusion.OPAQUE, doc="int32 Conv of (x - x_zero_point) and (w - w_zero_point)")


@conv_integer.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, x_zp: TensorInfo | None, w_zp: TensorInfo | None) -> TensorType:
    for what, t, zp in (("X", x, x_zp), ("W", w, w_zp)):
        _check_dtype(n, what, t, {"uint8", "int8"})
        if zp is not None and zp.dtype != t.dtype:
            raise n.error(f"{what}_zero_point is {zp.dtype} but {what} is {t.dtype}; they must have the same type")
    _check_channel_param(n, "W_zero_point", w_zp, w)
    return TensorType(_conv_infer(n, x, w), "int32")


@conv_integer.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, x_zp: np.ndarray | None, w_zp: np.ndarray | None) -> np.ndarray:
    return _integer_conv(n, x, x_zp, w, w_zp).astype(np.int32)


qlinear_conv = op("QLinearConv", inputs="X X_scale X_zero_point W W_scale W_zero_point Y_scale Y_zero_point B?",
                  outputs="Y", attrs=dict(CONV_ATTRS), fusion=Fusion.OPAQUE,
                  doc="quantized Conv: exact integer conv + int32 bias, requantized with x_scale * w_scale / y_scale "
                      "(w_scale / w_zero_point per tensor or per output channel)")


@qlinear_conv.infer
def _(n: Node, x: TensorInfo, x_s: TensorInfo, x_zp: TensorInfo, w: TensorInfo, w_s: TensorInfo,
      w_zp: TensorInfo, y_s: TensorInfo, y_zp: TensorInfo, b: TensorInfo | None) -> TensorType:
    for what, t in (("x", x), ("x_zero_point", x_zp), ("w", w), ("w_zero_point", w_zp), ("y_zero_point", y_zp)):
        _check_dtype(n, what, t, {"uint8", "int8"})
    for what, t in (("x_scale", x_s), ("w_scale", w_s), ("y_scale", y_s)):
        _check_dtype(n, what, t, SCALE_DTYPES)
    _check_dtype(n, "B", b, {"int32"})
    _check_channel_param(n, "w_scale", w_s, w)
    _check_channel_param(n, "w_zero_point", w_zp, w)
    _check_channel_param(n, "B", b, w)
    return TensorType(_conv_infer(n, x, w), y_zp.dtype)


@qlinear_conv.reference
def _(n: Node, x: np.ndarray, x_s: np.ndarray, x_zp: np.ndarray, w: np.ndarray, w_s: np.ndarray,
      w_zp: np.ndarray, y_s: np.ndarray, y_zp: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    acc = _integer_conv(n, x, x_zp, w, w_zp)
    channel = (-1,) + (1,) * (x.ndim - 2)  # output channels are axis 1 of Y
    if b is not None:
        acc = acc + b.astype(np.float64).reshape(channel)
    mult = x_s * (w_s.reshape(channel) if w_s.size > 1 else w_s.reshape(())) / y_s
    return _requantize(acc, mult, y_zp.reshape(()), str(y_zp.dtype))
