"""A vectorisable float32 exp for rows of non-positive arguments (softmax logits after the max, -|x| of sigmoid).

This numba build has no SVML, so ``math.exp`` in a loop is a scalar libm call (~4 ns/element, the largest cost of
a softmax or a sigmoid). :func:`exp_nonpos` is a Cephes-style expf (range reduction by ln 2, degree-6
polynomial, 2^n built in the exponent bits) with no calls, so the loops that use it vectorise; it is accurate to
about 2 ulp for x <= 0 and gives exactly 0 below -87.3 (where expf is denormal or 0: denormal operands would make a
following GEMM ~10x slower, and every caller adds the result to something >= 1 or scales by it, far below float32
resolution).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from quantgraph.kernels.intrinsics.scalar_f32 import as_f32

_LOG2E = np.float32(1.44269504088896341)
_C1 = np.float32(0.693359375)            # ln 2 split into an exact high part ...
_C2 = np.float32(-2.12194440e-4)         # ... and the remainder
LOWEST = np.float32(-87.3)               # exp(LOWEST) is still a normal float32


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def exp_nonpos(x):
    """exp(x) of a float32 x <= 0 (no calls: vectorises inside the caller's loop)."""
    v = max(x, LOWEST)
    k = np.floor(v * _LOG2E + np.float32(0.5))
    r = v - k * _C1 - k * _C2
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    two_n = as_f32(np.int32((np.int32(k) + np.int32(127)) << np.int32(23)))
    return (p * r * r + r + np.float32(1.0)) * two_n if x >= LOWEST else np.float32(0.0)


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def exp_nonpos_row(x, n):
    """x[:n] = exp(x[:n]) for x <= 0, in place."""
    for j in range(n):
        x[j] = exp_nonpos(x[j])
