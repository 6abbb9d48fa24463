"""numpy int32 references every kernel is tested against (the slow twins; clarity over speed)."""
from __future__ import annotations

import numpy as np

from quantgraph.kernels.epilogue import Epilogue, apply_epilogue_reference


def _wrap32(x: np.ndarray) -> np.ndarray:
    """int64 -> int32 with two's-complement wraparound, like every kernel's int32 sums."""
    return x.astype(np.int64).astype(np.int32)


def gemm_reference(a: np.ndarray, w: np.ndarray, *, a_zero_point: int = 0, bias_s32: np.ndarray | None = None,
                   epilogue: Epilogue = Epilogue()) -> np.ndarray:
    """``epilogue(sum_k (a - a_zp) * w + bias_s32)`` for int8/int16 A [M, K] and W [K, N]."""
    acc = (a.astype(np.int64) - int(a_zero_point)) @ w.astype(np.int64)
    bias = np.zeros(w.shape[1], np.int32) if bias_s32 is None else np.asarray(bias_s32)
    return apply_epilogue_reference(_wrap32(acc), _wrap32(np.asarray(bias, np.int64)), epilogue)


def conv_reference(x: np.ndarray, w: np.ndarray, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                   group: int = 1, x_zero_point: int = 0, bias_s32: np.ndarray | None = None,
                   epilogue: Epilogue = Epilogue()) -> np.ndarray:
    """NHWC conv: x [N, H, W, C] int8/uint8, w [M, C/group, kH, kW] int8 (ONNX order); out [N, OH, OW, M].

    ``pads`` is ONNX's (top, left, bottom, right); padded taps hold the zero point, i.e. contribute nothing.
    """
    nb, h, wd, c = x.shape
    mo, cg, kh, kw = w.shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    xs = x.astype(np.int64) - int(x_zero_point)
    xp = np.zeros((nb, h + pt + pb, wd + pl + pr, c), np.int64)
    xp[:, pt:pt + h, pl:pl + wd, :] = xs
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    mg = mo // group
    acc = np.zeros((nb, oh, ow, mo), np.int64)
    for g in range(group):
        wg = w[g * mg:(g + 1) * mg].astype(np.int64)  # [mg, cg, kh, kw]
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[:, ky * dh: ky * dh + sh * (oh - 1) + 1: sh, kx * dw: kx * dw + sw * (ow - 1) + 1: sw,
                           g * cg:(g + 1) * cg]
                acc[..., g * mg:(g + 1) * mg] += patch @ wg[:, :, ky, kx].T
    bias = np.zeros(mo, np.int64) if bias_s32 is None else np.asarray(bias_s32, np.int64)
    return apply_epilogue_reference(_wrap32(acc), _wrap32(bias), epilogue)


def _qrange(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def requantize_reference(y: np.ndarray, out_scale: float, out_zero_point: int, dtype: np.dtype) -> np.ndarray:
    """float32 y -> saturate(rint(y / out_scale) + zp): ONNX QuantizeLinear (float32 division, ties to even)."""
    f32 = np.float32
    lo, hi = _qrange(np.dtype(dtype))
    q = np.rint(y.astype(f32) / f32(out_scale)) + f32(out_zero_point)
    q = np.where(q < f32(lo), f32(lo), np.where(q > f32(hi), f32(hi), q))
    return q.astype(dtype)


def max_pool_reference(x: np.ndarray, kernel, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)) -> np.ndarray:
    """NHWC max pooling over valid taps."""
    nb, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    pt, pl, pb, pr = pads
    info = np.iinfo(x.dtype)
    xp = np.full((nb, h + pt + pb, w + pl + pr, c), info.min, np.int64)
    xp[:, pt:pt + h, pl:pl + w] = x
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.full((nb, oh, ow, c), info.min, np.int64)
    for ky in range(kh):
        for kx in range(kw):
            win = xp[:, ky * dh: ky * dh + sh * (oh - 1) + 1: sh, kx * dw: kx * dw + sw * (ow - 1) + 1: sw]
            out = np.maximum(out, win)
    return out.astype(x.dtype)


def avg_pool_reference(x: np.ndarray, kernel, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), *,
                       count_include_pad: bool = False, x_scale: float, x_zero_point: int, out_scale: float,
                       out_zero_point: int, out_dtype=None) -> np.ndarray:
    """NHWC average pooling with the float32 requantization of pool_int8.py."""
    nb, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    pt, pl, pb, pr = pads
    xp = np.zeros((nb, h + pt + pb, w + pl + pr, c), np.int64)
    valid = np.zeros((h + pt + pb, w + pl + pr), np.int64)
    xp[:, pt:pt + h, pl:pl + w] = x.astype(np.int64) - int(x_zero_point)
    valid[pt:pt + h, pl:pl + w] = 1
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((nb, oh, ow, c), np.int64)
    cnt = np.zeros((oh, ow), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            sl = (slice(ky * dh, ky * dh + sh * (oh - 1) + 1, sh), slice(kx * dw, kx * dw + sw * (ow - 1) + 1, sw))
            acc += xp[:, sl[0], sl[1]]
            cnt += 1 if count_include_pad else valid[sl]
    f32 = np.float32
    y = acc.astype(np.int32).astype(f32) / np.maximum(cnt, 1).astype(f32)[None, :, :, None] * f32(x_scale)
    return requantize_reference(y, out_scale, out_zero_point, np.dtype(out_dtype or x.dtype))


def add_requant_reference(a, b, *, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point,
                          out_dtype="uint8", relu=False) -> np.ndarray:
    f32 = np.float32
    y = ((a.astype(np.int32) - np.int32(a_zero_point)).astype(f32) * f32(a_scale)
         + (b.astype(np.int32) - np.int32(b_zero_point)).astype(f32) * f32(b_scale))
    if relu:
        y = np.where(y > f32(0), y, f32(0))
    return requantize_reference(y, out_scale, out_zero_point, np.dtype(out_dtype))


def concat_requant_reference(xs, scales, zero_points, *, axis, out_scale, out_zero_point, out_dtype="uint8"):
    f32 = np.float32
    parts = [requantize_reference((x.astype(np.int32) - np.int32(z)).astype(f32) * f32(s), out_scale,
                                  out_zero_point, np.dtype(out_dtype)) for x, s, z in zip(xs, scales, zero_points)]
    return np.concatenate(parts, axis=axis)
