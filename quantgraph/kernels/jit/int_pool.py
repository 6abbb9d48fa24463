"""TEMPLATE (not imported directly): int8 pooling, elementwise and (de)quantization kernels (u8/s8 by signature).

Instantiated by ``cache.load_template("int_pool", {...})`` like ``int_gemm.py`` so its Numba cache lives in the
kernel cache directory. Requantization is ONNX ``QuantizeLinear``'s: ``q = rint(y / out_scale) + out_zp`` saturated
to [QLO, QHI] (run-time arguments), float32 division, round half to even, exactly as in ``reference.py``; a NaN
saturates to QLO (as ONNX's cast of NaN to int32 followed by clipping does).
"""
import numpy as np
from numba import njit, prange

# --- PARAMS ---
VERSION = 1
# --- END PARAMS ---


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _requant(y, oscale, ozp, qlo, qhi):
    q = np.rint(y / oscale) + ozp
    return qlo if not q >= qlo else (qhi if q > qhi else q)


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def max_pool(x, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, lowest, out):
    """out[b, y, x, c] = max over the valid taps (padding never wins; no valid tap gives ``lowest``)."""
    nb, hh, ww, cc = x.shape
    for t in prange(nb * oh):
        b = t // oh
        y = t - b * oh
        for xo in range(ow):
            for c in range(cc):
                out[b, y, xo, c] = lowest
            for ky in range(kh):
                iy = y * sh - pt + ky * dh
                if iy < 0 or iy >= hh:
                    continue
                for kx in range(kw):
                    ix = xo * sw - pl + kx * dw
                    if ix < 0 or ix >= ww:
                        continue
                    for c in range(cc):
                        v = x[b, iy, ix, c]
                        if v > out[b, y, xo, c]:
                            out[b, y, xo, c] = v


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def avg_pool(x, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, include_pad, xzp, xscale, oscale, ozp, qlo, qhi, out):
    """q = requant(float32(sum(x - xzp)) / float32(count) * xscale); count counts padding if include_pad."""
    nb, hh, ww, cc = x.shape
    for t in prange(nb * oh):
        b = t // oh
        y = t - b * oh
        acc = np.zeros(cc, np.int32)
        for xo in range(ow):
            acc[:] = 0
            count = 0
            for ky in range(kh):
                iy = y * sh - pt + ky * dh
                for kx in range(kw):
                    ix = xo * sw - pl + kx * dw
                    if iy < 0 or iy >= hh or ix < 0 or ix >= ww:
                        if include_pad:
                            count += 1
                        continue
                    count += 1
                    for c in range(cc):
                        acc[c] += np.int32(x[b, iy, ix, c]) - xzp
            fc = np.float32(max(count, 1))
            for c in range(cc):
                yv = np.float32(acc[c]) / fc * xscale
                out[b, y, xo, c] = _requant(yv, oscale, ozp, qlo, qhi)


BLOCK = 16384  # elements per parallel task of the flat elementwise kernels
ZERO32 = np.float32(0.0)


@njit(error_model="numpy", nogil=True, cache=True)
def _add_block(a, b, azp, ascale, bzp, bscale, relu, oscale, ozp, qlo, qhi, out, i0, i1):
    # NOTE: unsigned indices: no negative-index wraparound code, so LLVM vectorizes the loop (8x faster)
    for i in range(np.uint64(i0), np.uint64(i1)):
        y = np.float32(np.int32(a[i]) - azp) * ascale + np.float32(np.int32(b[i]) - bzp) * bscale
        if relu:
            y = y if y > ZERO32 else ZERO32
        out[i] = _requant(y, oscale, ozp, qlo, qhi)


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def add_requant(a, b, azp, ascale, bzp, bscale, relu, oscale, ozp, qlo, qhi, out):
    """out = requant(float32(a - azp) * ascale + float32(b - bzp) * bscale, optionally relu'd); flat arrays."""
    n = a.size
    for t in prange((n + BLOCK - 1) // BLOCK):
        i0 = t * BLOCK
        i1 = min(n, i0 + BLOCK)
        if relu:
            _add_block(a, b, azp, ascale, bzp, bscale, True, oscale, ozp, qlo, qhi, out, i0, i1)
        else:
            _add_block(a, b, azp, ascale, bzp, bscale, False, oscale, ozp, qlo, qhi, out, i0, i1)


@njit(error_model="numpy", nogil=True, cache=True)
def _quantize_run(x, s, z, qlo, qhi, out, i0, i1):
    for i in range(np.uint64(i0), np.uint64(i1)):
        out[i] = _requant(x[i], s, z, qlo, qhi)


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def quantize(x, scale, zp, qlo, qhi, out, cc, inner):
    """ONNX QuantizeLinear: out = saturate(rint(x / scale[c]) + zp[c]) on flat float32 ``x`` viewed as (outer, C,
    inner), one scale / zero point per C (C = 1: per tensor). Tasks: blocks of one (o, c) row."""
    nb = (inner + BLOCK - 1) // BLOCK
    rows = x.size // inner if inner else 0
    for t in prange(rows * nb):
        r = t // nb
        c = r % cc
        i0 = r * inner + (t - r * nb) * BLOCK
        i1 = min(r * inner + inner, i0 + BLOCK)
        _quantize_run(x, scale[c], np.float32(zp[c]), qlo, qhi, out, i0, i1)


@njit(error_model="numpy", nogil=True, cache=True)
def _dequantize_run(x, s, z, out, i0, i1):
    for i in range(np.uint64(i0), np.uint64(i1)):
        out[i] = np.float32(np.int32(x[i]) - z) * s


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def dequantize(x, scale, zp, out, cc, inner):
    """ONNX DequantizeLinear: out = float32(x - zp[c]) * scale[c] (float32 product of exact operands, i.e. the
    correctly rounded real value); flat arrays, layout as in ``quantize``."""
    nb = (inner + BLOCK - 1) // BLOCK
    rows = x.size // inner if inner else 0
    for t in prange(rows * nb):
        r = t // nb
        c = r % cc
        i0 = r * inner + (t - r * nb) * BLOCK
        i1 = min(r * inner + inner, i0 + BLOCK)
        _dequantize_run(x, scale[c], zp[c], out, i0, i1)


@njit(error_model="numpy", nogil=True, cache=True)
def requant_block(x, xzp, xscale, oscale, ozp, qlo, qhi, out, ocol0):
    """out[r, ocol0 + j] = requant(float32(x[r, j] - xzp) * xscale): one concat input, as 2-D [outer, inner]."""
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            y = np.float32(np.int32(x[r, j]) - xzp) * xscale
            out[r, ocol0 + j] = _requant(y, oscale, ozp, qlo, qhi)
