"""Fused elementwise epilogues in one pass: y = act(y + bias + z), in place, for the GEMM/conv kernels.

Activation codes are runtime ints (``Activation.code`` of the activation table), so one compiled kernel serves every
activation; the branch is taken once per row, outside the inner loop, so the inner loops stay vectorizable.
``act_row`` has one branch per row of the table (``tests/kernels/fp32/test_activation_table.py`` checks each
against its reference).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from quantgraph.ir.ops.activation import ACTIVATIONS
from quantgraph.kernels.fp32.expf import exp_nonpos

#: activation name -> the code the kernels branch on (the activation table, quantgraph/ir/ops/activation.py)
ACT_CODES = {a.name: a.code for a in ACTIVATIONS.values()}
BIAS_NONE, BIAS_ROWS, BIAS_COLS = 0, 1, 2
_EMPTY1 = np.zeros(0, np.float32)
_EMPTY2 = np.zeros((0, 0), np.float32)


@njit(error_model="numpy", inline="always", fastmath=True)
def _erf(x):
    # Rational approximation of erf on [-4, 4] (outside it erf is +-1 in float32); max abs error ~1e-7, and
    # unlike math.erf it vectorizes.
    x = min(max(x, np.float32(-4.0)), np.float32(4.0))
    x2 = x * x
    p = x2 * np.float32(-2.72614225801306e-10) + np.float32(2.77068142495902e-08)
    p = x2 * p + np.float32(-2.10102402082508e-06)
    p = x2 * p + np.float32(-5.69250639462346e-05)
    p = x2 * p + np.float32(-7.34990630326855e-04)
    p = x2 * p + np.float32(-2.95459980854025e-03)
    p = x2 * p + np.float32(-1.60960333262415e-02)
    p = x * p
    q = x2 * np.float32(-1.45660718464996e-05) + np.float32(-2.13374055278905e-04)
    q = x2 * q + np.float32(-1.68282697438203e-03)
    q = x2 * q + np.float32(-7.37332916720468e-03)
    q = x2 * q + np.float32(-1.42647390514189e-02)
    return p / q


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _sigmoid_row(r, silu):
    """r = sigmoid(r) (or r * sigmoid(r)) in place, vectorised: e = exp(-|v|) <= 1 never overflows, and
    sigmoid(v) = 1 / (1 + e) for v >= 0, e / (1 + e) below."""
    for j in range(r.shape[0]):
        v = r[j]
        e = exp_nonpos(-abs(v))
        inv = np.float32(1.0) / (np.float32(1.0) + e)
        s = inv if v >= np.float32(0.0) else e * inv
        r[j] = v * s if silu else s


@njit(error_model="numpy", fastmath=True, cache=True)
def act_row(r, act, alpha, beta):
    """Apply activation code ``act`` (``Activation.code``) to the 1-D float32 array ``r`` in place."""
    n = r.shape[0]
    a = np.float32(alpha)
    b = np.float32(beta)
    if act == 0:
        return
    elif act == 1:
        for j in range(n):
            r[j] = max(r[j], np.float32(0.0))
    elif act == 2:
        for j in range(n):
            v = r[j]
            r[j] = v if v >= 0 else v * a
    elif act == 3:
        for j in range(n):
            r[j] = min(max(r[j], a), b)
    elif act == 4:
        _sigmoid_row(r, False)
    elif act == 5:
        for j in range(n):
            r[j] = math.tanh(r[j])
    elif act == 6:
        _sigmoid_row(r, True)
    elif act == 7:
        for j in range(n):
            r[j] = min(max(r[j] * a + b, np.float32(0.0)), np.float32(1.0))
    elif act == 8:
        for j in range(n):
            v = r[j]
            r[j] = v * min(max(v * np.float32(1.0 / 6.0) + np.float32(0.5), np.float32(0.0)), np.float32(1.0))
    elif act == 9:
        for j in range(n):
            v = r[j]
            r[j] = np.float32(0.5) * v * (np.float32(1.0) + _erf(v * np.float32(0.7071067811865476)))
    elif act == 10:
        for j in range(n):
            v = r[j]
            u = np.float32(0.7978845608028654) * (v + np.float32(0.044715) * v * v * v)
            r[j] = np.float32(0.5) * v * (np.float32(1.0) + math.tanh(u))
    elif act == 11:
        for j in range(n):
            r[j] = _erf(r[j])
    elif act == 12:
        for j in range(n):
            v = r[j]
            # softplus without overflow: log1p(exp(-|v|)) + max(v, 0)
            r[j] = v * math.tanh(math.log1p(math.exp(-abs(v))) + max(v, np.float32(0.0)))


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def epilogue_2d(y, bias, bias_mode, z, has_z, act, alpha, beta):
    """y[i, j] = act(y[i, j] + bias[i or j] + z[i, j]) in place; bias_mode: 0 none, 1 per row, 2 per column."""
    rows, cols = y.shape
    for i in prange(rows):
        r = y[i]
        if bias_mode == 1:
            bi = bias[i]
            for j in range(cols):
                r[j] += bi
        elif bias_mode == 2:
            for j in range(cols):
                r[j] += bias[j]
        if has_z:
            zr = z[i]
            for j in range(cols):
                r[j] += zr[j]
        act_row(r, act, alpha, beta)


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def unary_2d(x, y, act, alpha, beta):
    """y = act(x) row by row (x and y may be the same array)."""
    for i in prange(x.shape[0]):
        r = y[i]
        r[:] = x[i]  # harmless when x is y (in place)
        act_row(r, act, alpha, beta)


def as_rows(a: np.ndarray, cols: int) -> np.ndarray:
    """A contiguous array viewed as (rows, cols) for the row-parallel kernels."""
    return a.reshape(-1, cols)


def row_split(size: int) -> int:
    """A column count for flattening ``size`` elements into rows that parallelize well (divides size)."""
    for c in (4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2):
        if size % c == 0 and size // c >= 2:
            return c
    return size if size else 1


def epilogue(y2d: np.ndarray, bias: np.ndarray | None, bias_mode: int, z2d: np.ndarray | None, act: int,
             alpha: float, beta: float) -> None:
    """Python entry: normalizes the optional arguments to typed empties (one compiled signature)."""
    epilogue_2d(y2d, _EMPTY1 if bias is None else bias, bias_mode if bias is not None else 0,
                _EMPTY2 if z2d is None else z2d, z2d is not None, act, alpha, beta)
