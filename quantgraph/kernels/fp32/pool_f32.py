"""2-D max / average pooling in fp32, NCHW (parallel over planes) or NHWC (parallel over rows, vectorized over C).

Windows are clipped to the input; ``count_include_pad`` divides by the full window (ONNX semantics, explicit pads
only; ceil_mode windows are lowered to the reference).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def pool_nchw(x, y, is_max, kh, kw, sh, sw, dh, dw, pt, pl, include_pad):
    n_, c_, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for p in prange(n_ * c_):
        xi = x[p // c_, p % c_]
        yo = y[p // c_, p % c_]
        for oy in range(oh):
            for ox in range(ow):
                acc = np.float32(-np.inf) if is_max else np.float32(0.0)
                cnt = 0
                for ki in range(kh):
                    iy = oy * sh - pt + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    for kj in range(kw):
                        ix = ox * sw - pl + kj * dw
                        if 0 <= ix < w:
                            v = xi[iy, ix]
                            if is_max:
                                acc = max(acc, v)
                            else:
                                acc += v
                            cnt += 1
                if is_max:
                    yo[oy, ox] = acc
                else:
                    yo[oy, ox] = acc / np.float32(kh * kw if include_pad else max(cnt, 1))


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def pool_nhwc(x, y, is_max, kh, kw, sh, sw, dh, dw, pt, pl, include_pad):
    n_, h, w, c_ = x.shape
    oh, ow = y.shape[1], y.shape[2]
    for p in prange(n_ * oh):
        n = p // oh
        oy = p % oh
        for ox in range(ow):
            yo = y[n, oy, ox]
            for c in range(c_):
                yo[c] = np.float32(-np.inf) if is_max else np.float32(0.0)
            cnt = 0
            for ki in range(kh):
                iy = oy * sh - pt + ki * dh
                if iy < 0 or iy >= h:
                    continue
                for kj in range(kw):
                    ix = ox * sw - pl + kj * dw
                    if ix < 0 or ix >= w:
                        continue
                    xp = x[n, iy, ix]
                    cnt += 1
                    if is_max:
                        for c in range(c_):
                            yo[c] = max(yo[c], xp[c])
                    else:
                        for c in range(c_):
                            yo[c] += xp[c]
            if not is_max:
                d = np.float32(1.0) / np.float32(kh * kw if include_pad else max(cnt, 1))
                for c in range(c_):
                    yo[c] *= d


def global_pool(x: np.ndarray, y: np.ndarray, is_max: bool, layout: str) -> None:
    """Global average/max pool: NCHW reduces the trailing spatial axes, NHWC the middle ones."""
    n, c = (x.shape[0], x.shape[1]) if layout == "NCHW" else (x.shape[0], x.shape[-1])
    if layout == "NCHW":
        src, axis = x.reshape(n, c, -1), 2
    else:
        src, axis = x.reshape(n, -1, c), 1
    (np.max if is_max else np.mean)(src, axis=axis, out=y.reshape(n, c))
