"""Calibration observer kernel: the histogram of a float32 tensor in one pass.

The numpy twin is ``HistogramObserver._bin_numpy`` in ``compiler/quantize/observers.py`` (used for other dtypes);
a test checks both give identical counts. numpy needs four passes with temporaries (scale, floor, shift,
bincount), about 9 ns per value on the out-of-cache activations of a ResNet-50 (17M values per image), more than
the network's own kernels; this kernel takes about 3.5. (numpy's SIMD min/max beats a numba loop, so min/max stay
in numpy.)
"""
from __future__ import annotations

import numpy as np
from numba import njit

_CHUNK = 4096


@njit(error_model="numpy", nogil=True, cache=True)
def histogram_f32(x: np.ndarray, scale: np.float32, offset: int, counts: np.ndarray) -> None:
    """``counts[floor(v * scale) - offset] += 1`` for every value of 1-D finite ``x``.

    ``scale`` is a power of two, so the product is exact and the bins are the numpy path's. Indices are clamped to
    the histogram (the caller's grid already covers every value; the clamp only guards memory). Bin indices of a
    chunk are computed in a loop that vectorizes, then counted into four interleaved sub-histograms so that runs
    of equal values (the zeros after a ReLU) do not serialize on one counter.
    """
    n = counts.shape[0]
    sub = np.zeros((4, n), np.int64)
    idx = np.empty(_CHUNK, np.int64)
    for start in range(0, x.shape[0], _CHUNK):
        stop = min(start + _CHUNK, x.shape[0])
        k = stop - start
        for i in range(k):
            b = np.int64(np.floor(x[start + i] * scale)) - offset
            idx[i] = min(max(b, 0), n - 1)
        m = k // 4 * 4
        for i in range(0, m, 4):
            sub[0, idx[i]] += 1
            sub[1, idx[i + 1]] += 1
            sub[2, idx[i + 2]] += 1
            sub[3, idx[i + 3]] += 1
        for i in range(m, k):
            sub[0, idx[i]] += 1
    for j in range(n):
        counts[j] += sub[0, j] + sub[1, j] + sub[2, j] + sub[3, j]
