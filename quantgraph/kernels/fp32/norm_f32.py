"""Row-wise normalizations in fp32: Softmax and LayerNormalization over the last axis, inference BatchNorm."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from quantgraph.kernels.fp32.expf import exp_nonpos_row
from quantgraph.kernels.intrinsics.scalar_f32 import fmax


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def softmax_rows(x, y):
    """y[i] = softmax(x[i]) over a (rows, n) array; x and y may be the same."""
    rows, n = x.shape
    for i in prange(rows):
        xr = x[i]
        yr = y[i]
        m = xr[0]
        for j in range(1, n):
            m = fmax(m, xr[j])
        for j in range(n):
            yr[j] = xr[j] - m
        exp_nonpos_row(yr, n)
        s = np.float32(0.0)
        for j in range(n):
            s += yr[j]
        inv = np.float32(1.0) / s
        for j in range(n):
            yr[j] *= inv


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def layernorm_rows(x, scale, bias, has_bias, eps, y):
    """y[i] = (x[i] - mean) / sqrt(var + eps) * scale + bias, over (rows, n); accumulates in float64."""
    rows, n = x.shape
    for i in prange(rows):
        xr = x[i]
        yr = y[i]
        s = 0.0
        for j in range(n):
            s += xr[j]
        mean = s / n
        v = 0.0
        for j in range(n):
            d = xr[j] - mean
            v += d * d
        inv = 1.0 / math.sqrt(v / n + eps)
        m32 = np.float32(mean)
        i32 = np.float32(inv)
        if has_bias:
            for j in range(n):
                yr[j] = (xr[j] - m32) * i32 * scale[j] + bias[j]
        else:
            for j in range(n):
                yr[j] = (xr[j] - m32) * i32 * scale[j]


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def channel_affine(x, a, b, y):
    """y[n, c, :] = x[n, c, :] * a[c] + b[c] over (N, C, S) views (inference BatchNormalization)."""
    n_, c_, s_ = x.shape
    for p in prange(n_ * c_):
        c = p % c_
        xr = x[p // c_, c]
        yr = y[p // c_, c]
        ac = a[c]
        bc = b[c]
        for j in range(s_):
            yr[j] = xr[j] * ac + bc


def bn_fold(scale: np.ndarray, b: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (a, shift) with y = x * a + shift, computed in float64 once."""
    a = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return a.astype(np.float32), (b.astype(np.float64) - mean.astype(np.float64) * a).astype(np.float32)
