"""Int8 elementwise add and concat, each requantizing to the output's scale and zero point.

    add:    y = act(float32(a - a_zp) * a_scale + float32(b - b_zp) * b_scale)
            q = saturate(rint(y / out_scale) + out_zp)
    concat: q = saturate(rint(float32(x - x_zp) * x_scale / out_scale) + out_zp)   per input
            (an input whose scale, zero point and dtype equal the output's is copied: the formula is the identity)

float32 throughout in exactly this order; ``act`` is identity or relu. Shapes must match exactly (no broadcasting).
This is the ONNX QDQ form bit for bit: ``QuantizeLinear(Relu?(Add(DequantizeLinear(a), DequantizeLinear(b))))``
(ONNX dequantizes in float32, adds in float32 and divides by the scale, rounding half to even).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.kernels import cache

_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
#: QuantizeClip also writes int16 (the input of W8A16 groups)
_QCLIP_RANGE = {**_QRANGE, np.dtype(np.int16): (-32768, 32767)}
_PARAMS = {"VERSION": 1}


def _q(x: object, what: str, name: str, node: str | None, op: str | None) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype not in _QRANGE:
        found = f"{x.dtype}{x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise KernelError(f"kernel '{name}': {what} is {found}; expected a uint8 or int8 array", node, op)
    return np.ascontiguousarray(x)


def add_requant(a: np.ndarray, b: np.ndarray, *, a_scale: float, a_zero_point: int, b_scale: float,
                b_zero_point: int, out_scale: float, out_zero_point: int, out_dtype: str = "uint8",
                relu: bool = False, out: np.ndarray | None = None, node: str | None = None,
                op: str | None = "QAdd") -> np.ndarray:
    """Quantized ``a + b`` (optionally relu'd) requantized to (out_scale, out_zero_point, out_dtype)."""
    from quantgraph.kernels.gemm_int8 import check_out

    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = check_out(out, a.shape, np.dtype(out_dtype).name, "add_int8_portable", node, op)
    fn, args = add_requant_step(a, b, a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale,
                                b_zero_point=b_zero_point, out_scale=out_scale, out_zero_point=out_zero_point,
                                relu=relu, out=out, node=node, op=op)
    fn(*args)
    return out


def add_requant_step(a: np.ndarray, b: np.ndarray, *, a_scale: float, a_zero_point: int, b_scale: float,
                     b_zero_point: int, out_scale: float, out_zero_point: int, relu: bool, out: np.ndarray,
                     node: str | None = None, op: str | None = "QAdd") -> tuple:
    """:func:`add_requant` bound to C-contiguous buffers: a prebound ``(fn, args)`` (the output dtype is out's)."""
    name = "add_int8_portable"
    for what, v in (("A", a), ("B", b)):
        if isinstance(v, np.ndarray) and not v.flags.c_contiguous:
            raise KernelError(f"kernel '{name}': {what} must be C-contiguous", node, op)
    a, b = _q(a, "A", name, node, op), _q(b, "B", name, node, op)
    if a.shape != b.shape:
        raise KernelError(f"kernel '{name}': A has shape {a.shape}, B {b.shape}; expected equal shapes", node, op)
    odt = out.dtype
    if odt not in _QRANGE or not out_scale > 0 or out.shape != a.shape or not out.flags.c_contiguous:
        raise KernelError(f"kernel '{name}': out {odt}{out.shape}/{out_scale}; expected C-contiguous uint8/int8 "
                          f"{a.shape} and a positive scale", node, op)
    qlo, qhi = _QRANGE[odt]
    f32 = np.float32
    fn = cache.primitive("int_pool", _PARAMS, "add_requant", parallel=True)
    return fn, (a.reshape(-1), b.reshape(-1), np.int32(a_zero_point), f32(a_scale), np.int32(b_zero_point),
                f32(b_scale), bool(relu), f32(out_scale), f32(out_zero_point), f32(qlo), f32(qhi), out.reshape(-1))


def concat_requant(xs: Sequence[np.ndarray], scales: Sequence[float], zero_points: Sequence[int], *, axis: int,
                   out_scale: float, out_zero_point: int, out_dtype: str = "uint8", node: str | None = None,
                   op: str | None = "QConcat") -> np.ndarray:
    """Concatenate quantized tensors along ``axis``, requantizing each to the output's parameters."""
    name = "concat_int8_portable"
    if not xs or len(xs) != len(scales) or len(xs) != len(zero_points):
        raise KernelError(f"kernel '{name}': need one scale and zero point per input ({len(xs)} inputs, "
                          f"{len(scales)} scales, {len(zero_points)} zero points)", node, op)
    arrs = [_q(x, f"input {i}", name, node, op) for i, x in enumerate(xs)]
    nd = arrs[0].ndim
    ax = axis + nd if axis < 0 else axis
    if not 0 <= ax < nd or any(x.ndim != nd or x.shape[:ax] + x.shape[ax + 1:] !=
                               arrs[0].shape[:ax] + arrs[0].shape[ax + 1:] for x in arrs):
        raise KernelError(f"kernel '{name}': shapes {[x.shape for x in arrs]} do not concatenate on axis {axis}",
                          node, op)
    odt = np.dtype(out_dtype)
    shape = list(arrs[0].shape)
    shape[ax] = sum(x.shape[ax] for x in arrs)
    out = np.empty(shape, odt)
    for fn, args in concat_requant_steps(arrs, scales, zero_points, axis=ax, out_scale=out_scale,
                                         out_zero_point=out_zero_point, out=out, node=node, op=op):
        fn(*args)
    return out


def concat_requant_steps(xs: Sequence[np.ndarray], scales: Sequence[float], zero_points: Sequence[int], *,
                         axis: int, out_scale: float, out_zero_point: int, out: np.ndarray, node: str | None = None,
                         op: str | None = "QConcat") -> list[tuple]:
    """:func:`concat_requant` into ``out`` as prebound ``(fn, args)`` steps, one per input (a copy where the
    input's parameters are the output's)."""
    name = "concat_int8_portable"
    odt = out.dtype
    if odt not in _QRANGE or not out_scale > 0 or not out.flags.c_contiguous:
        raise KernelError(f"kernel '{name}': out {odt}/{out_scale}; expected C-contiguous uint8/int8 and a positive "
                          "scale", node, op)
    ax = axis + out.ndim if axis < 0 else axis
    outer = int(np.prod(out.shape[:ax], dtype=np.int64))
    out2 = out.reshape(outer, -1)
    if sum(x.size for x in xs) != out.size:
        raise KernelError(f"kernel '{name}': inputs {[x.shape for x in xs]} do not fill out {out.shape}", node, op)
    qlo, qhi = _QRANGE[odt]
    f32 = np.float32
    fn = cache.primitive("int_pool", _PARAMS, "requant_block")
    steps: list[tuple] = []
    col = 0
    for x, s, z in zip(xs, scales, zero_points):
        if not x.flags.c_contiguous or x.dtype not in _QRANGE:
            raise KernelError(f"kernel '{name}': inputs must be C-contiguous uint8/int8 arrays", node, op)
        x2 = x.reshape(outer, -1)
        dst = out2[:, col:col + x2.shape[1]]
        if x.dtype == odt and f32(s) == f32(out_scale) and int(z) == int(out_zero_point):
            steps.append((np.copyto, (dst, x2)))
        else:
            steps.append((fn, (x2, np.int32(z), f32(s), f32(out_scale), f32(out_zero_point), f32(qlo), f32(qhi),
                               out2, col)))
        col += x2.shape[1]
    return steps


def _axis_view(x: np.ndarray, axis: int | None, channels: int) -> tuple[int, int, int]:
    """(outer, C, inner) of ``x`` for per-axis parameters along ``axis`` (None or C = 1: per tensor)."""
    if axis is None or channels == 1:
        return 1, 1, x.size
    ax = axis + x.ndim if axis < 0 else axis
    return int(np.prod(x.shape[:ax], dtype=np.int64)), x.shape[ax], int(np.prod(x.shape[ax + 1:], dtype=np.int64))


def _qparams(scale: object, zero_point: object, n: int, name: str, node: str | None,
             op: str | None) -> tuple[np.ndarray, np.ndarray]:
    s = np.ascontiguousarray(np.asarray(scale, np.float32).reshape(-1))
    z = np.zeros(s.size, np.int32) if zero_point is None else np.asarray(zero_point).astype(np.int32).reshape(-1)
    if s.size not in (1, n) or z.size != s.size:
        raise KernelError(f"kernel '{name}': {s.size} scales and {z.size} zero points for {n} channels; expected "
                          f"one each per channel or one for the tensor", node, op)
    return s, np.ascontiguousarray(z)


def quantize_step(x: np.ndarray, scale: object, zero_point: object, out: np.ndarray, axis: int | None = None,
                  node: str | None = None, op: str | None = "QuantizeLinear",
                  qrange: tuple[int, int] | None = None) -> tuple:
    """A prebound ``(fn, args)`` computing ONNX ``QuantizeLinear`` of float32 ``x`` into the u8/s8 ``out``:
    ``saturate(rint(x / scale) + zero_point)`` with float32 division, per tensor or per ``axis``.

    ``qrange`` saturates to [lo, hi] inside out's type instead (QuantizeClip); with it ``out`` may be int16."""
    name = "quantize_f32_portable"
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.c_contiguous:
        raise KernelError(f"kernel '{name}': X must be a C-contiguous float32 array", node, op)
    odt = out.dtype
    ranges = _QRANGE if qrange is None else _QCLIP_RANGE
    if odt not in ranges or out.shape != x.shape or not out.flags.c_contiguous:
        want = "uint8/int8" if qrange is None else "uint8/int8/int16"
        raise KernelError(f"kernel '{name}': out is {out.dtype}{out.shape}; expected {want}{x.shape}", node, op)
    n = x.shape[axis] if axis is not None and x.ndim else 1
    s, z = _qparams(scale, zero_point, n, name, node, op)
    shape3 = _axis_view(x, axis, s.size)
    qlo, qhi = ranges[odt]
    if qrange is not None:
        if not qlo <= qrange[0] <= qrange[1] <= qhi:
            raise KernelError(f"kernel '{name}': saturation range {qrange} is not ordered inside {odt}'s "
                              f"[{qlo}, {qhi}]", node, op)
        qlo, qhi = qrange
    fn = cache.primitive("int_pool", _PARAMS, "quantize", parallel=True)
    return fn, (x.reshape(-1), s, z, np.float32(qlo), np.float32(qhi), out.reshape(-1), shape3[1], shape3[2])


def dequantize_step(x: np.ndarray, scale: object, zero_point: object, out: np.ndarray, axis: int | None = None,
                    node: str | None = None, op: str | None = "DequantizeLinear") -> tuple:
    """A prebound ``(fn, args)`` computing ONNX ``DequantizeLinear`` of u8/s8 ``x`` into float32 ``out``:
    ``float32(x - zero_point) * scale``, per tensor or per ``axis``."""
    name = "dequantize_f32_portable"
    if not isinstance(x, np.ndarray) or x.dtype not in _QRANGE or not x.flags.c_contiguous:
        raise KernelError(f"kernel '{name}': X must be a C-contiguous uint8/int8 array", node, op)
    if out.dtype != np.float32 or out.shape != x.shape or not out.flags.c_contiguous:
        raise KernelError(f"kernel '{name}': out is {out.dtype}{out.shape}; expected float32{x.shape}", node, op)
    n = x.shape[axis] if axis is not None and x.ndim else 1
    s, z = _qparams(scale, zero_point, n, name, node, op)
    shape3 = _axis_view(x, axis, s.size)
    fn = cache.primitive("int_pool", _PARAMS, "dequantize", parallel=True)
    return fn, (x.reshape(-1), s, z, out.reshape(-1), shape3[1], shape3[2])


def quantize_linear(x: np.ndarray, scale: object, zero_point: object, *, out_dtype: str = "uint8",
                    axis: int | None = None, out: np.ndarray | None = None, node: str | None = None,
                    op: str | None = "QuantizeLinear") -> np.ndarray:
    """ONNX ``QuantizeLinear`` of float32 ``x`` (see :func:`quantize_step`)."""
    from quantgraph.kernels.gemm_int8 import check_out

    x = np.ascontiguousarray(x)
    out = check_out(out, x.shape, out_dtype, "quantize_f32_portable", node, op)
    fn, args = quantize_step(x, scale, zero_point, out, axis, node, op)
    fn(*args)
    return out


def dequantize_linear(x: np.ndarray, scale: object, zero_point: object, *, axis: int | None = None,
                      out: np.ndarray | None = None, node: str | None = None,
                      op: str | None = "DequantizeLinear") -> np.ndarray:
    """ONNX ``DequantizeLinear`` of u8/s8 ``x`` to float32 (see :func:`dequantize_step`)."""
    from quantgraph.kernels.gemm_int8 import check_out

    x = np.ascontiguousarray(x)
    out = check_out(out, x.shape, "float32", "dequantize_f32_portable", node, op)
    fn, args = dequantize_step(x, scale, zero_point, out, axis, node, op)
    fn(*args)
    return out
