"""The scalar float32 intrinsics (``fmin``/``fmax`` reductions, ``as_f32``) against numpy, and the exp built on them."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from quantgraph.kernels.fp32.expf import exp_nonpos
from quantgraph.kernels.intrinsics.scalar_f32 import as_f32, fmax, fmin


@njit(fastmath=True)
def _range(x):
    lo = x[0]
    hi = x[0]
    for j in range(1, x.shape[0]):
        lo = fmin(lo, x[j])
        hi = fmax(hi, x[j])
    return lo, hi


@pytest.mark.parametrize("n", [1, 7, 16, 33, 1000, 4099])
def test_min_max_reductions_are_exact(n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * rng.choice([1e-30, 1.0, 1e30], n)).astype(np.float32)
    x[rng.integers(n)] = np.float32(np.finfo(np.float32).max)  # extremes anywhere, including the vector tail
    lo, hi = _range(x)
    assert lo == x.min() and hi == x.max()


def test_min_max_refuse_float64():
    @njit
    def bad(a, b):
        return fmin(a, b)

    with pytest.raises(TypingError):
        bad(1.0, 2.0)


def test_as_f32_is_a_bitcast():
    @njit
    def run(bits, out):
        for j in range(bits.shape[0]):
            out[j] = as_f32(bits[j])

    bits = np.array([0, 1, 127 << 23, (254 << 23) | 0x7FFFFF, -(1 << 31), 0x3F800001], np.int32)
    out = np.empty(bits.size, np.float32)
    run(bits, out)
    np.testing.assert_array_equal(out.view(np.int32), bits)


def test_scalar_exp_matches_float64_exp():
    @njit(fastmath=True)
    def run(x, y):
        for j in range(x.shape[0]):
            y[j] = exp_nonpos(x[j])

    x = np.concatenate([np.linspace(-87, 0, 30001), [-1e-30, 0.0, -87.29, -87.31, -1e4]]).astype(np.float32)
    y = np.empty_like(x)
    run(x, y)
    want = np.exp(x.astype(np.float64))
    normal = x >= np.float32(-87.3)
    assert np.max(np.abs(y[normal] - want[normal]) / want[normal]) < 3e-7
    assert np.all(y[~normal] == 0.0)
