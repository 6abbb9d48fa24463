"""Int8 elementwise add and concat, each requantizing to the output's scale and zero point.

    add:    y = act(float32(a - a_zp) * a_scale + float32(b - b_zp) * b_scale)
            q = saturate(rint(y * float32(1 / out_scale)) + out_zp)
    concat: q = saturate(rint(float32(x - x_zp) * x_scale * float32(1 / out_scale)) + out_zp)   per input
            (an input whose scale, zero point and dtype equal the output's is copied: the formula is the identity)

float32 throughout in exactly this order; ``act`` is identity or relu. Shapes must match exactly (no broadcasting).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.kernels import cache
from quantgraph.kernels.epilogue import out_inverse

_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
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
    name = "add_int8_portable"
    a, b = _q(a, "A", name, node, op), _q(b, "B", name, node, op)
    if a.shape != b.shape:
        raise KernelError(f"kernel '{name}': A has shape {a.shape}, B {b.shape}; expected equal shapes", node, op)
    odt = np.dtype(out_dtype)
    if odt not in _QRANGE or not out_scale > 0:
        raise KernelError(f"kernel '{name}': out {odt}/{out_scale}; expected uint8/int8, positive scale", node, op)
    from quantgraph.kernels.gemm_int8 import check_out

    out = check_out(out, a.shape, odt.name, name, node, op)
    qlo, qhi = _QRANGE[odt]
    f32 = np.float32
    fn = cache.primitive("int_pool", _PARAMS, "add_requant")
    fn(a.reshape(-1), b.reshape(-1), np.int32(a_zero_point), f32(a_scale), np.int32(b_zero_point), f32(b_scale),
       bool(relu), out_inverse(out_scale), f32(out_zero_point), f32(qlo), f32(qhi), out.reshape(-1))
    return out


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
    if odt not in _QRANGE or not out_scale > 0:
        raise KernelError(f"kernel '{name}': out {odt}/{out_scale}; expected uint8/int8, positive scale", node, op)
    shape = list(arrs[0].shape)
    shape[ax] = sum(x.shape[ax] for x in arrs)
    out = np.empty(shape, odt)
    outer = int(np.prod(shape[:ax], dtype=np.int64))
    out2 = out.reshape(outer, -1)
    qlo, qhi = _QRANGE[odt]
    f32 = np.float32
    fn = cache.primitive("int_pool", _PARAMS, "requant_block")
    col = 0
    for x, s, z in zip(arrs, scales, zero_points):
        x2 = x.reshape(outer, -1)
        if x.dtype == odt and f32(s) == f32(out_scale) and int(z) == int(out_zero_point):
            out2[:, col:col + x2.shape[1]] = x2
        else:
            fn(x2, np.int32(z), f32(s), out_inverse(out_scale), f32(out_zero_point), f32(qlo), f32(qhi), out2, col)
        col += x2.shape[1]
    return out
