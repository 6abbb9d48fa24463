"""Numba cell kernels for LSTM and GRU (fp32 and the int8 dynamic path): one fused gate update per time step.

The recurrence of a layer runs as, per step, one GEMM ``h @ R^T`` (packed fp32 GEMM, or the int8 GEMM on a
dynamically quantized ``h``) into a (batch, gates * hidden) buffer, then ONE call of a kernel here: the
activations, the cell update, and the writes of ``h`` (the next step's GEMM input), ``c`` and ``Y[t]``. Nothing
is allocated per step: every buffer is planned scratch handed in by ``bind_rnn.py``.

Numerics: float32. sigmoid and tanh are built from one vectorised ``exp`` of non-positive arguments
(``expf.exp_nonpos``, about 2 ulp): sigmoid(v) = 1 / (1 + e) (v >= 0) or e / (1 + e) with e = exp(-|v|);
tanh(v) = sign(v) (1 - e) / (1 + e) with e = exp(-2|v|), which loses relative accuracy only for |v| < ~1e-3, where
the absolute error stays below 1e-7. Gate order is ONNX's: LSTM i, o, f, c; GRU z, r, h.

Dynamic quantization (:func:`quantize_u8`) follows ONNX DynamicQuantizeLinear exactly (range widened to include 0,
scale = (max - min) / 255 in float32, zero point and values rounded half to even after a true division, no
fastmath), so it equals ``ir/ops/rnn_quant.dynamic_quantize_u8`` bit for bit; an all-zero tensor (the initial
state) gets scale 1 and zero point 0.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from quantgraph.kernels.fp32.expf import exp_nonpos
from quantgraph.kernels.intrinsics.scalar_f32 import fmax, fmin

_ONE = np.float32(1.0)
_TWO = np.float32(2.0)


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _sig(v):
    """sigmoid(v) from e = exp(-|v|) <= 1 (never overflows)."""
    e = exp_nonpos(-abs(v))
    d = _ONE / (_ONE + e)
    return d if v >= 0 else e * d


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _tanh(v):
    """tanh(v) from e = exp(-2|v|)."""
    e = exp_nonpos(-_TWO * abs(v))
    t = (_ONE - e) / (_ONE + e)
    return t if v >= 0 else -t


# NOTE: each row kernel is one loop over 1-D slices that writes at most two of them. LLVM vectorises a loop only
# after proving, with run-time pointer checks, that its arrays do not overlap, and gives up past a handful of
# checks: an earlier form (2-D indexing, the exp arguments staged in scratch, two arrays written per loop at several
# offsets) ran scalar, 4x slower (an LSTM step of B=12, H=1760: 113 -> 26 us on one core).
@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _lstm_row(g, cr, hr, hid):
    """One LSTM row: g (4H) pre-activations i, o, f, c -> cr, hr (H) updated in place."""
    gi, go, gf, gc = g[:hid], g[hid:2 * hid], g[2 * hid:3 * hid], g[3 * hid:4 * hid]
    for j in range(hid):
        cn = _sig(gf[j]) * cr[j] + _sig(gi[j]) * _tanh(gc[j])
        cr[j] = cn
        hr[j] = _sig(go[j]) * _tanh(cn)


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _gru_row(xw, rec, hr, zr, rhr, mode, hid):
    """One GRU row of a step part (see :func:`gru_cell`): xw, rec, hr, zr (z), rhr (r * h) the row's slices."""
    if mode == 1:
        xz, xr, xh = xw[:hid], xw[hid:2 * hid], xw[2 * hid:3 * hid]
        rz, rr, rh = rec[:hid], rec[hid:2 * hid], rec[2 * hid:3 * hid]
        for j in range(hid):
            z = _sig(xz[j] + rz[j])
            r = _sig(xr[j] + rr[j])
            hr[j] = (_ONE - z) * _tanh(xh[j] + r * rh[j]) + z * hr[j]
    elif mode == 2:
        rz, rr = rec[:hid], rec[hid:2 * hid]
        for j in range(hid):
            zr[j] = _sig(rz[j])
        for j in range(hid):
            rhr[j] = _sig(rr[j]) * hr[j]
    else:
        for j in range(hid):
            z = zr[j]
            hr[j] = (_ONE - z) * _tanh(rec[j]) + z * hr[j]


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _write_y(h, b, y, y_off, y_bstride, hid):
    base = y_off + b * y_bstride
    yr = y[base:base + hid]
    hr = h[b]
    for j in range(hid):
        yr[j] = hr[j]


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _dequant_row(acc, zp, col_sum, scale, w_scale, bias, base, has_base, out, b):
    """out[b] = float32(acc[b] - zp * col_sum) * (scale * w_scale) + bias (+ base[b])."""
    a = acc[b]
    o = out[b]
    zp32 = np.int32(zp)
    if has_base:
        x = base[b]
        for j in range(o.shape[0]):
            o[j] = np.float32(a[j] - zp32 * col_sum[j]) * (scale * w_scale[j]) + bias[j] + x[j]
    else:
        for j in range(o.shape[0]):
            o[j] = np.float32(a[j] - zp32 * col_sum[j]) * (scale * w_scale[j]) + bias[j]


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _lstm_b(gates, c, h, y, y_off, y_bstride, has_y, b):
    _lstm_row(gates[b], c[b], h[b], c.shape[1])
    if has_y:
        _write_y(h, b, y, y_off, y_bstride, c.shape[1])


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _gru_b(xw, rec, h, zbuf, rh, y, y_off, y_bstride, has_y, mode, b):
    _gru_row(xw[b], rec[b], h[b], zbuf[b], rh[b], mode, h.shape[1])
    if has_y:
        _write_y(h, b, y, y_off, y_bstride, h.shape[1])


# NOTE: each cell has a serial and a parallel (over batch rows) twin, written out: numba's disk cache keys a
# function by its source location, so one function compiled both ways would share (and clobber) one cache entry.
@njit(error_model="numpy", fastmath=True, cache=True)
def lstm_cell(gates, c, h, y, y_off, y_bstride, has_y):
    """One LSTM step: ``gates`` (B, 4H) pre-activations (i, o, f, c) -> c, h (B, H) updated in place, and
    ``y[y_off + b * y_bstride + j] = h[b, j]`` when ``has_y``."""
    for b in range(c.shape[0]):
        _lstm_b(gates, c, h, y, y_off, y_bstride, has_y, b)


@njit(error_model="numpy", fastmath=True, cache=True, parallel=True)
def lstm_cell_par(gates, c, h, y, y_off, y_bstride, has_y):
    """:func:`lstm_cell`, batch rows in parallel."""
    for b in prange(c.shape[0]):
        _lstm_b(gates, c, h, y, y_off, y_bstride, has_y, b)


@njit(error_model="numpy", fastmath=True, cache=True)
def gru_cell(xw, rec, h, zbuf, rh, y, y_off, y_bstride, has_y, mode):
    """GRU step parts, gates z, r, h; ``xw`` (B, 3H) is the input projection with the biases folded as
    ``bind_rnn`` sets them up, ``rec`` the recurrent GEMM result.

    mode 1 (linear_before_reset=1): ``rec`` (B, 3H) = h R^T + (0, 0, Rb_h) -> h updated, Y written.
    mode 2 (linear_before_reset=0, first half): ``rec`` (B, 2H) = xw_zr + h R_zr^T (the GEMM added xw) -> z into
    ``zbuf``, r * h into ``rh`` (the input of the second GEMM).
    mode 3 (second half): ``rec`` (B, H) = xw_h + (r h) R_h^T -> h = (1 - z) tanh(rec) + z h, Y written.
    """
    for b in range(h.shape[0]):
        _gru_b(xw, rec, h, zbuf, rh, y, y_off, y_bstride, has_y, mode, b)


@njit(error_model="numpy", fastmath=True, cache=True, parallel=True)
def gru_cell_par(xw, rec, h, zbuf, rh, y, y_off, y_bstride, has_y, mode):
    """:func:`gru_cell`, batch rows in parallel."""
    for b in prange(h.shape[0]):
        _gru_b(xw, rec, h, zbuf, rh, y, y_off, y_bstride, has_y, mode, b)


@njit(error_model="numpy", fastmath=True, cache=True)
def gru_cell_q(acc, zp, col_sum, scale, w_scale, bias, base, has_base, xw, rec, h, zbuf, rh, y, y_off, y_bstride,
               has_y, mode):
    """:func:`gru_cell` on int8 sums, fused: ``rec`` = float32(acc - zp * col_sum) * (scale * w_scale) + bias
    (+ base)."""
    for b in range(h.shape[0]):
        _dequant_row(acc, zp, col_sum, scale, w_scale, bias, base, has_base, rec, b)
        _gru_b(xw, rec, h, zbuf, rh, y, y_off, y_bstride, has_y, mode, b)


@njit(error_model="numpy", fastmath=True, cache=True, parallel=True)
def gru_cell_q_par(acc, zp, col_sum, scale, w_scale, bias, base, has_base, xw, rec, h, zbuf, rh, y, y_off,
                   y_bstride, has_y, mode):
    """:func:`gru_cell_q`, batch rows in parallel."""
    for b in prange(h.shape[0]):
        _dequant_row(acc, zp, col_sum, scale, w_scale, bias, base, has_base, rec, b)
        _gru_b(xw, rec, h, zbuf, rh, y, y_off, y_bstride, has_y, mode, b)


#: rows x hidden from which a step's cell runs its batch rows in parallel (below, a parallel region costs more)
PARALLEL_MIN = 16384
CELLS = {"lstm": (lstm_cell, lstm_cell_par), "gru": (gru_cell, gru_cell_par), "gru_q": (gru_cell_q, gru_cell_q_par)}


def cell(name: str, rows: int, hidden: int):
    """The cell kernel ``name`` (lstm, gru, gru_q), the parallel twin when there is enough work."""
    return CELLS[name][rows > 1 and rows * hidden >= PARALLEL_MIN]


# -- small layers: a whole chunk of steps in one call ----------------------------------------------------------
# NOTE: when R fits in L2 (hidden <= ~300) a step is a few microseconds of work, less than a parallel GEMM launch
# plus two Python-level calls, so these run the chunk's steps in one serial call: the recurrent product as plain
# vectorised loops over a dense R^T (K, N), then the same cell rows. int8: R^T holds the int8 values as float32 and
# h is quantized per step (quantize_u8); every partial sum is an integer below 255 * 127 * K < 2^24 (K <= 518,
# which bind_rnn checks), so float32 FMAs give exactly the int32 sums of the int8 GEMM.
@njit(error_model="numpy", fastmath=True, cache=True)
def _rec_small(a, rt, quant, hq, col_sum, w_scale, rbias, base, has_base, out):
    """out = base + a @ rt + rbias (fp32), or base + dequant((q(a) - zp) @ rt) + rbias (int8, exact sums)."""
    nb, k = a.shape
    n = rt.shape[1]
    scale = np.float32(1.0)
    zp = 0
    if quant:
        scale, zp = quantize_u8(a, hq)
    for b in range(nb):
        for j in range(n):
            out[b, j] = np.float32(0.0)
    for kk in range(k):
        r = rt[kk]
        for b in range(nb):
            hv = np.float32(hq[b, kk]) if quant else a[b, kk]
            for j in range(n):
                out[b, j] += hv * r[j]
    for b in range(nb):
        for j in range(n):
            v = out[b, j]
            if quant:
                v = (v - np.float32(zp) * col_sum[j]) * (scale * w_scale[j])
            v += rbias[j]
            out[b, j] = v + base[b, j] if has_base else v


@njit(error_model="numpy", fastmath=True, cache=True)
def lstm_small(xw, nsteps, reverse, rt, quant, hq, col_sum, w_scale, zero, h, c, y, y_off0, y_step, y_bstride,
               has_y, gates):
    """``nsteps`` LSTM steps (slots of ``xw``, (nsteps * B, 4H), in order or reversed) in one call; step slot s
    writes Y at ``y_off0 + s * y_step``. ``quant``: R^T holds int8 values, h is quantized per step."""
    nb = h.shape[0]
    for i in range(nsteps):
        s = nsteps - 1 - i if reverse else i
        _rec_small(h, rt, quant, hq, col_sum, w_scale, zero, xw[s * nb:(s + 1) * nb], True, gates)
        lstm_cell(gates, c, h, y, y_off0 + s * y_step, y_bstride, has_y)


@njit(error_model="numpy", fastmath=True, cache=True)
def gru_small(xw, nsteps, reverse, rt1, rt2, lbr, quant, hq, cs1, ws1, cs2, ws2, rbias, zero, h, zbuf, rh, y,
              y_off0, y_step, y_bstride, has_y, gates, g1, g2):
    """:func:`lstm_small` for GRU: linear_before_reset=1 one product (rt1, all gates, + rbias = (0, 0, Rb_h)) into
    ``gates``, else two (rt1: z and r from h into ``g1`` (B, 2H), rt2: h's gate from r * h into ``g2`` (B, H))."""
    nb, hid = h.shape
    for i in range(nsteps):
        s = nsteps - 1 - i if reverse else i
        xs = xw[s * nb:(s + 1) * nb]
        off = y_off0 + s * y_step
        if lbr:
            _rec_small(h, rt1, quant, hq, cs1, ws1, rbias, xs, False, gates)
            gru_cell(xs, gates, h, zbuf, rh, y, off, y_bstride, has_y, 1)
        else:
            _rec_small(h, rt1, quant, hq, cs1, ws1, zero, xs[:, :2 * hid], True, g1)
            gru_cell(xs, g1, h, zbuf, rh, y, off, y_bstride, False, 2)
            _rec_small(rh, rt2, quant, hq, cs2, ws2, zero, xs[:, 2 * hid:], True, g2)
            gru_cell(xs, g2, h, zbuf, rh, y, off, y_bstride, has_y, 3)


# -- int8 dynamic path ------------------------------------------------------------------------------------------
#: LLVM fast-math flags that let min/max reductions vectorise but keep every division a true IEEE division (no
#: ``arcp``: x / s -> x * (1 / s) changes the rounding) and no FMA contraction, so results stay bit-exact
EXACT_DIV = {"nnan", "ninf", "nsz", "reassoc"}


@njit(error_model="numpy", fastmath=EXACT_DIV, cache=True)
def quantize_u8(x, q):
    """ONNX DynamicQuantizeLinear of 2-D float32 ``x`` into u8 ``q`` (same shape); returns (scale, zero_point).
    NOTE: only the :data:`EXACT_DIV` fast-math flags, set explicitly (numba lets a callee without the option inherit
    a fastmath caller's, and the small layers' loop calls this): the division and the half-to-even rounding must
    match the numpy reference bit for bit."""
    lo = np.float32(0.0)
    hi = np.float32(0.0)
    rows, cols = x.shape
    for i in range(rows):
        xr = x[i]
        for j in range(cols):
            lo = fmin(lo, xr[j])
            hi = fmax(hi, xr[j])
    scale = np.float32((hi - lo) / np.float32(255.0))
    if not scale > 0:
        for i in range(rows):
            for j in range(cols):
                q[i, j] = 0
        return np.float32(1.0), 0
    zp = int(min(max(np.rint(-lo / scale), 0.0), 255.0))
    for i in range(rows):
        xr = x[i]
        qr = q[i]
        for j in range(cols):
            v = np.rint(xr[j] / scale) + zp
            qr[j] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))
    return scale, zp


@njit(error_model="numpy", fastmath=EXACT_DIV, cache=True)
def range_of(x):
    """(min(0, x.min()), max(0, x.max())) of a float32 array as float32: the DynamicQuantizeLinear range."""
    lo = np.float32(0.0)
    hi = np.float32(0.0)
    xf = x.ravel()  # NOTE: a view when x is contiguous (the planned input is); indexed, as iterating does not vectorise
    for j in range(xf.shape[0]):
        lo = fmin(lo, xf[j])
        hi = fmax(hi, xf[j])
    return lo, hi


@njit(error_model="numpy", fastmath=EXACT_DIV, cache=True, parallel=True)
def quantize_rows_u8(x, layout, t0, t1, scale, zp, q):
    """Rows of time steps [t0, t1) of X (3-D, layout 0 (seq, batch, I) or 1 (batch, seq, I)) quantized with a
    given (scale, zero point) into ``q`` ((t1 - t0) * batch, I), step-major. Same rounding as :func:`quantize_u8`."""
    nb = x.shape[0] if layout else x.shape[1]
    feat = x.shape[2]
    for s in prange(t1 - t0):
        t = t0 + s
        for b in range(nb):
            row = x[b, t] if layout else x[t, b]
            r = s * nb + b
            for j in range(feat):
                v = np.rint(row[j] / scale) + zp
                q[r, j] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


@njit(error_model="numpy", fastmath=EXACT_DIV, cache=True)
def dequant_params(scale, zp, col_sum, w_scale, b32, factor):
    """The int8 GEMM epilogue's per-column terms for an input quantized with (scale, zp): ``b32 = -zp * col_sum``
    (int32) and ``factor = scale * w_scale`` (float32), so it writes float32(acc + b32) * factor (+ bias, residual):
    the exact int32 sums of (q - zp) @ W_q, dequantized."""
    zp32 = np.int32(zp)
    for j in range(b32.shape[0]):
        b32[j] = -zp32 * col_sum[j]
        factor[j] = scale * w_scale[j]


@njit(error_model="numpy", fastmath=EXACT_DIV, cache=True)
def quantize_u8_params(x, q, col_sum, w_scale, b32, factor):
    """:func:`quantize_u8` of ``x`` into ``q``, then :func:`dequant_params` for it: one call per recurrent step."""
    scale, zp = quantize_u8(x, q)
    dequant_params(scale, zp, col_sum, w_scale, b32, factor)
    return scale, zp
