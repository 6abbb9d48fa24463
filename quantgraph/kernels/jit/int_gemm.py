"""TEMPLATE (not imported directly): GEMM, im2col-conv and depthwise-conv drivers around one microkernel.

``cache.load_template("int_gemm", params)`` copies this file into the kernel cache directory with the PARAMS block
replaced by literal constants, and imports the copy; Numba then caches the compiled code next to it. The constants
are compile-time globals, so the branches on them fold away and each copy is one (isa, kind, epilogue kind) family.
Shapes are run-time arguments: one compiled copy serves every shape.

Parallelism: ``prange`` over output tasks (row chunk x panel group for GEMM, row chunks for conv). Every output
element is computed by exactly one tile with the full K sum in a fixed order, so results do not depend on the thread
count or the task split.
"""
import numpy as np
from numba import njit, prange

from quantgraph.kernels.intrinsics.amx import PANEL_STEP
from quantgraph.kernels.intrinsics.x86 import KIND_GROUP, NR
from quantgraph.kernels.microkernels import amx_strip, fused_microkernel, microkernel

# --- PARAMS ---
ISA = "portable"
KIND = "u8s8"
OUT = 0  # 0 int32, 1 float32, 2 uint8, 3 int8
HAS_BIAS = False
RES = 0  # 0 none, 1 int residual, 2 float32 residual
ACT = 0  # 0 none, 1 relu, 2 clip
# --- END PARAMS ---

G = KIND_GROUP[KIND]
_T8 = microkernel(ISA, KIND, 8)
_T4 = microkernel(ISA, KIND, 4)
_T2 = microkernel(ISA, KIND, 2)
_T1 = microkernel(ISA, KIND, 1)
# Full-width tiles go through the fused (in-register) epilogue; the N-tail tile through _epilogue below.
_E8 = fused_microkernel(ISA, KIND, 8, HAS_BIAS, RES != 0, ACT)
_E4 = fused_microkernel(ISA, KIND, 4, HAS_BIAS, RES != 0, ACT)
_E2 = fused_microkernel(ISA, KIND, 2, HAS_BIAS, RES != 0, ACT)
_E1 = fused_microkernel(ISA, KIND, 1, HAS_BIAS, RES != 0, ACT)
_S32 = amx_strip(ISA, KIND, 32, HAS_BIAS, RES != 0, ACT)
_S16 = amx_strip(ISA, KIND, 16, HAS_BIAS, RES != 0, ACT)
USE_AMX = ISA == "amx" and KIND == "u8s8"
KC = 16  # AMX K-steps (64 bytes) per chunk: 32 rows x 1 KiB of A stay in L1 while a block of panels streams
ZERO = np.float32(0.0)
ZERO64 = np.float64(0.0)
QMIN = np.float64(-128.0) if OUT == 3 else np.float64(0.0)
QMAX = np.float64(127.0) if OUT == 3 else np.float64(255.0)


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _store(v, c, orow, oc, ep, out):
    """out[orow, oc] = the epilogue of the int32 sum ``v`` (bias_s32 included) of channel ``c``; see epilogue.py."""
    bias32, scale, biasf, res, rscale, rzp, lo, hi, oinv, ozp = ep
    if OUT == 0:
        out[orow, oc] = v
    elif OUT == 1:
        y = np.float32(v) * scale[c]
        if HAS_BIAS:
            y = y + biasf[c]
        if RES == 1:
            y = y + np.float32(np.int32(res[orow, oc]) - rzp) * rscale
        elif RES == 2:
            y = y + res[orow, oc]
        if ACT == 1:
            y = y if y > ZERO else ZERO
        elif ACT == 2:
            y = lo if y < lo else (hi if y > hi else y)
        out[orow, oc] = y
    else:
        # requantize in float64: scale/biasf hold the multiplier and the bias in output units
        t = np.float64(v) * np.float64(scale[c])
        if HAS_BIAS:
            t = t + np.float64(biasf[c])
        if RES == 1:
            t = t + np.float64(np.int32(res[orow, oc]) - rzp) * np.float64(rscale)
        elif RES == 2:
            t = t + np.float64(res[orow, oc]) * np.float64(oinv)
        if ACT == 1:
            t = t if t > ZERO64 else ZERO64
        elif ACT == 2:
            t = np.float64(lo) if t < np.float64(lo) else (np.float64(hi) if t > np.float64(hi) else t)
        q = np.rint(t + np.float64(ozp))
        q = QMIN if q < QMIN else (QMAX if q > QMAX else q)
        out[orow, oc] = q


@njit(error_model="numpy", nogil=True, cache=True)
def _epilogue(acc, mr, row0, col0, ncols, ep, out, ocol0):
    """acc[r*NR + j] (r < mr, j < ncols) -> out[row0 + r, ocol0 + col0 + j]; see epilogue.py for the order."""
    bias32 = ep[0]
    # NOTE: unsigned indices: Numba emits no negative-index wraparound for them, so LLVM vectorizes the row
    # loop; slicing instead would cost atomic refcount operations per tile.
    nr = np.uint64(NR)
    c0 = np.uint64(col0)
    oc0 = np.uint64(ocol0) + c0
    for r in range(np.uint64(mr)):
        orow = np.uint64(row0) + r
        for j in range(np.uint64(ncols)):
            c = c0 + j
            _store(np.int32(acc[r * nr + j] + bias32[c]), c, orow, oc0 + j, ep, out)


@njit(error_model="numpy", nogil=True, cache=True)
def _epilogue_rows(acc, mr, row0, col0, ncols, ep, bias32, b_off, rowadd, r_off, out):
    """Like ``_epilogue`` (ocol0 = 0) with the int32 bias read at bias32[b_off + c] and rowadd[r_off + r] added to
    row r (the batched GEMM's per-item bias and B-zero-point row term)."""
    nr = np.uint64(NR)
    c0 = np.uint64(col0)
    bo = np.uint64(b_off) + c0
    for r in range(np.uint64(mr)):
        orow = np.uint64(row0) + r
        extra = rowadd[np.uint64(r_off) + r]
        for j in range(np.uint64(ncols)):
            _store(np.int32(acc[r * nr + j] + bias32[bo + j] + extra), c0 + j, orow, c0 + j, ep, out)


@njit(error_model="numpy", nogil=True, cache=True)
def _row_block(a, a_off, lda, rows, bp, panel, kg, n, scratch, ep, out, row0, ocol0):
    """Rows [0, rows) of A (starting at element a_off) times one packed panel, through the epilogue."""
    b_off = panel * kg * NR * G
    col0 = panel * NR
    ncols = min(NR, n - col0)
    r = 0
    if ncols == NR and ISA != "portable":
        bias32, scale, biasf, res, rscale, rzp, lo, hi, oinv, ozp = ep
        ldr = res.shape[1]
        ldo = out.shape[1]
        oc = ocol0 + col0
        while r + 8 <= rows:
            _E8(a, a_off + r * lda, lda, bp, b_off, kg, bias32, scale, biasf, col0, res, (row0 + r) * ldr + oc, ldr,
                rscale, rzp, lo, hi, oinv, ozp, out, (row0 + r) * ldo + oc, ldo)
            r += 8
        if r + 4 <= rows:
            _E4(a, a_off + r * lda, lda, bp, b_off, kg, bias32, scale, biasf, col0, res, (row0 + r) * ldr + oc, ldr,
                rscale, rzp, lo, hi, oinv, ozp, out, (row0 + r) * ldo + oc, ldo)
            r += 4
        if r + 2 <= rows:
            _E2(a, a_off + r * lda, lda, bp, b_off, kg, bias32, scale, biasf, col0, res, (row0 + r) * ldr + oc, ldr,
                rscale, rzp, lo, hi, oinv, ozp, out, (row0 + r) * ldo + oc, ldo)
            r += 2
        if r < rows:
            _E1(a, a_off + r * lda, lda, bp, b_off, kg, bias32, scale, biasf, col0, res, (row0 + r) * ldr + oc, ldr,
                rscale, rzp, lo, hi, oinv, ozp, out, (row0 + r) * ldo + oc, ldo)
        return
    while r + 8 <= rows:
        _T8(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
        _epilogue(scratch, 8, row0 + r, col0, ncols, ep, out, ocol0)
        r += 8
    if r + 4 <= rows:
        _T4(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
        _epilogue(scratch, 4, row0 + r, col0, ncols, ep, out, ocol0)
        r += 4
    if r + 2 <= rows:
        _T2(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
        _epilogue(scratch, 2, row0 + r, col0, ncols, ep, out, ocol0)
        r += 2
    if r < rows:
        _T1(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
        _epilogue(scratch, 1, row0 + r, col0, ncols, ep, out, ocol0)


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def gemm(a, lda, m, bp, kg, n, ep, out, ocol0, mc, pg):
    """out[:m, ocol0:ocol0+n] = epilogue(A[m, K] @ B); ``a`` is A flattened (row stride lda >= kg*G).

    Task = (chunk of ``mc`` rows, group of ``pg`` column panels); inside, panels outer and rows inner, so the
    row chunk of A stays in L1/L2 while the panels stream, and each task writes whole cache lines of the output.
    """
    npan = (n + NR - 1) // NR
    nmc = (m + mc - 1) // mc
    npg = (npan + pg - 1) // pg
    for t in prange(nmc * npg):
        ci = t // npg
        p0 = (t - ci * npg) * pg
        r0 = ci * mc
        rows = min(mc, m - r0)
        scratch = np.empty(8 * NR, np.int32)
        for panel in range(p0, min(p0 + pg, npan)):
            _row_block(a, r0 * lda, lda, rows, bp, panel, kg, n, scratch, ep, out, r0, ocol0)


@njit(error_model="numpy", nogil=True, cache=True)
def _pack_item(b, b_off, ldb, k, n, xorv, kg, bp32, p_off, colsum):
    """B item [k, n] (u8 bytes at b[b_off + row*ldb + col]) -> s8 ``k4n32`` panels of ``b ^ xorv`` (K and N
    zero-padded) written as 4-byte groups into bp32 (the packed buffer viewed as uint32) from group ``p_off``, and
    colsum[col] = sum over K of the s8 values.

    NOTE: unsigned indices and contiguous runs of B's rows, so LLVM vectorizes the gathers and the sums.
    """
    un, unr = np.uint64(n), np.uint64(NR)
    ukg = np.uint64(kg)
    npan = (un + unr - np.uint64(1)) // unr
    xv = np.uint8(xorv)
    x32 = np.uint32(xorv)
    for col in range(un):
        colsum[col] = 0
    for kk in range(np.uint64(k)):
        src = np.uint64(b_off) + kk * np.uint64(ldb)
        for col in range(un):
            colsum[col] += np.int32(np.int8(b[src + col] ^ xv))
    for g in range(ukg):
        rows = min(np.uint64(G), np.uint64(k) - g * np.uint64(G))
        s0 = np.uint64(b_off) + g * np.uint64(G) * np.uint64(ldb)
        s1 = s0 + np.uint64(ldb)
        s2 = s1 + np.uint64(ldb)
        s3 = s2 + np.uint64(ldb)
        for p in range(npan):
            c0 = p * unr
            nc = min(unr, un - c0)
            dst = np.uint64(p_off) + (p * ukg + g) * unr
            if rows == G:
                for j in range(nc):
                    c = c0 + j
                    bp32[dst + j] = ((np.uint32(b[s0 + c]) ^ x32) | ((np.uint32(b[s1 + c]) ^ x32) << np.uint32(8))
                                     | ((np.uint32(b[s2 + c]) ^ x32) << np.uint32(16))
                                     | ((np.uint32(b[s3 + c]) ^ x32) << np.uint32(24)))
            else:  # the K tail: missing rows are zero
                for j in range(nc):
                    c = c0 + j
                    w = np.uint32(0)
                    for t in range(rows):
                        w |= (np.uint32(b[s0 + t * np.uint64(ldb) + c]) ^ x32) << np.uint32(8 * t)
                    bp32[dst + j] = w
            for j in range(nc, unr):  # the N tail: zero columns
                bp32[dst + j] = 0


@njit(error_model="numpy", nogil=True, cache=True)
def _row_terms(a, a_off, lda, rows, kp, crow, rowadd):
    """rowadd[r] = crow * (sum of the kp u8 values of row r of A), in wrapping int32."""
    ukp = np.uint64(kp)
    for r in range(np.uint64(rows)):
        src = np.uint64(a_off) + r * np.uint64(lda)
        s = np.int32(0)  # NOTE: exact: kp * 255 < 2**31 for any K a tensor can have here
        for c in range(ukp):
            s += np.int32(a[src + c])
        rowadd[r] = np.int32(np.int64(s) * np.int64(crow))


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def bmm(a, lda, a_stride, pairs, m, b, ldb, b_stride, k, n, xorv, crow, za_u, ubias, bp, bp32, kg, bias32, out,
        ep, mc):
    """Batched GEMM with a run-time B: out rows [i*m, (i+1)*m) = epilogue(A_{pairs[2i]} @ B_{pairs[2i+1]}).

    ``a``: prepared A (u8, s8 shifted), item j at j*a_stride, rows ``lda`` apart, K zero-padded to kg*G. ``b``: B
    as u8 bytes, item j at j*b_stride, rows ``ldb`` apart; the s8 value ``b ^ xorv`` is B minus ``c`` (``crow``),
    so (a - za)(b - zb) sums to A_u @ B_s8 - za_u*colsum + crow*rowsum(A_u) - crow*k*za_u. Phase 1 packs every B
    item into ``bp`` (int8) with its int32 bias bias32[j*n:] = ubias - za_u*colsum - crow*k*za_u; phase 2 runs tasks
    of ``mc`` rows of one output item through the tiles and ``_epilogue_rows`` (crow*rowsum as the row term).
    ``out`` (and the residual in ``ep``) is 2-D: (items*m, n). int32 arithmetic wraps, as the reference's does.
    """
    nb = bias32.size // n
    npan = (n + NR - 1) // NR
    bsize = npan * kg * NR * G
    const = np.int64(crow) * np.int64(k) * np.int64(za_u)
    for j in prange(nb):
        colsum = np.empty(n, np.int32)
        _pack_item(b, j * b_stride, ldb, k, n, xorv, kg, bp32, j * (bsize // G), colsum)
        for col in range(n):
            bias32[j * n + col] = np.int32(np.int64(ubias[col]) - np.int64(za_u) * np.int64(colsum[col]) - const)
    items = pairs.size // 2
    nmc = (m + mc - 1) // mc
    kp = kg * G
    for t in prange(items * nmc):
        i = t // nmc
        r0 = (t - i * nmc) * mc
        rows = min(mc, m - r0)
        a_off = pairs[2 * i] * a_stride + r0 * lda
        bi = pairs[2 * i + 1]
        rowadd = np.zeros(rows, np.int32)
        if crow != 0:
            _row_terms(a, a_off, lda, rows, kp, crow, rowadd)
        scratch = np.empty(8 * NR, np.int32)
        orow = i * m + r0
        for panel in range(npan):
            b_off = bi * bsize + panel * kg * NR * G
            col0 = panel * NR
            ncols = min(NR, n - col0)
            r = 0
            while r + 8 <= rows:
                _T8(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
                _epilogue_rows(scratch, 8, orow + r, col0, ncols, ep, bias32, bi * n, rowadd, r, out)
                r += 8
            if r + 4 <= rows:
                _T4(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
                _epilogue_rows(scratch, 4, orow + r, col0, ncols, ep, bias32, bi * n, rowadd, r, out)
                r += 4
            if r + 2 <= rows:
                _T2(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
                _epilogue_rows(scratch, 2, orow + r, col0, ncols, ep, bias32, bi * n, rowadd, r, out)
                r += 2
            if r < rows:
                _T1(a, a_off + r * lda, lda, bp, b_off, kg, scratch, 0, NR)
                _epilogue_rows(scratch, 1, orow + r, col0, ncols, ep, bias32, bi * n, rowadd, r, out)


@njit(error_model="numpy", nogil=True, cache=True)
def _amx_strip(a, a_off, lda, rr, bp, ks, k0, nk, ep, out, row0, ocol0, q0, q1, first, fuse, cbuf):
    """One AMX strip call: rows [0, rr) x panels [q0, q1) x K-steps [k0, k0 + nk)."""
    bias32, scale, biasf, res, rscale, rzp, lo, hi, oinv, ozp = ep
    ldr = res.shape[1]
    ldo = out.shape[1]
    oc = ocol0 + q0 * NR
    b_off = q0 * ks * PANEL_STEP + k0 * PANEL_STEP
    args = (a, a_off + k0 * 64, lda, bp, b_off, nk, bias32, scale, biasf, q0 * NR, res, row0 * ldr + oc, ldr,
            rscale, rzp, lo, hi, oinv, ozp, out, row0 * ldo + oc, ldo, ks * PANEL_STEP, q1 - q0, rr, first, fuse,
            cbuf)
    if rr > 16:
        _S32(*args)
    else:
        _S16(*args)


@njit(error_model="numpy", nogil=True, cache=True)
def _amx_rows(a, a_off, lda, rows, bp, ks, n, p0, p1, pblk, ep, out, row0, ocol0, cbuf, ctail):
    """AMX: rows [0, rows) of A (from element ``a_off``, ``lda`` bytes apart) times panels [p0, p1).

    Blocks of ``pblk`` panels (about 1 MiB of B, L2-resident) outer, 32-row blocks inner, K in chunks of ``KC`` steps
    (partial sums parked in ``cbuf``). Full 32- or 16-row blocks of full panels take the fused epilogue on the last
    chunk; ragged row blocks and the N-tail panel finish here through the Numba epilogue.
    """
    nfull = min(p1, n // NR)
    kc = ks if rows <= 32 else KC  # thin A: B streams from memory anyway; read each panel in one contiguous run
    for n0 in range(p0, p1, pblk):
        n1 = min(n0 + pblk, p1)
        f1 = max(n0, min(n1, nfull))  # panels [n0, f1) are full, [f1, n1) is the ragged tail (at most one)
        for r in range(0, rows, 32):
            rr = min(32, rows - r)
            whole = rr == 32 or rr == 16
            for k0 in range(0, ks, kc):
                nk = min(kc, ks - k0)
                first = 1 if k0 == 0 else 0
                fuse = 1 if (whole and k0 + nk >= ks) else 0
                if f1 > n0:
                    _amx_strip(a, a_off + r * lda, lda, rr, bp, ks, k0, nk, ep, out, row0 + r, ocol0, n0, f1,
                               first, fuse, cbuf)
                if n1 > f1:
                    _amx_strip(a, a_off + r * lda, lda, rr, bp, ks, k0, nk, ep, out, row0 + r, ocol0, f1, n1,
                               first, 0, ctail)
            if not whole:
                for q in range(n0, f1):
                    o = (q - n0) * NR * NR
                    _epilogue(cbuf[o:o + NR * NR], rr, row0 + r, q * NR, NR, ep, out, ocol0)
            if n1 > f1:
                _epilogue(ctail, rr, row0 + r, f1 * NR, n - f1 * NR, ep, out, ocol0)


@njit(error_model="numpy", nogil=True, cache=True)
def _aligned_u8(nbytes):
    """An uninitialized u8 buffer whose data starts on a 64-byte boundary (tile rows must not straddle lines)."""
    raw = np.empty(nbytes + 64, np.uint8)
    start = (64 - (raw.ctypes.data & 63)) & 63
    return raw[start:start + nbytes]


@njit(error_model="numpy", nogil=True, cache=True)
def _copy_rows(a, lda, k, r0, rows, kp, xorv, buf):
    """Rows [r0, r0 + rows) of A (``lda`` bytes apart, K = k) into buf[rows, kp]: bytes xor ``xorv``, K padded
    with zeros (their packed weights are zero too)."""
    uk = np.uint64(k)
    for i in range(rows):
        src = np.uint64((r0 + i) * lda)
        dst = np.uint64(i * kp)
        for c in range(uk):
            buf[dst + c] = a[src + c] ^ xorv
        for c in range(uk, np.uint64(kp)):
            buf[dst + c] = 0


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def gemm_amx(a, lda, m, k, bp, ks, n, ep, out, ocol0, mt, pg, pblk, xorv, copy):
    """AMX GEMM: ``a`` is A (u8, s8 viewed as u8 with ``xorv = 0x80``) flattened, ``lda`` bytes per row, ``bp`` the
    ``amx`` layout (K padded to ``ks`` steps of 64 bytes).

    Task = (``mt`` rows, ``pg`` panels); see ``gemm_int8.amx_tasks`` for the split. A is read in place when it needs
    no shift or padding and its rows are 64-byte aligned; otherwise (or when ``copy`` forces it) each task copies
    its rows into its own aligned buffer: in parallel, and into the cache of the core that reads them.
    """
    npan = (n + NR - 1) // NR
    nmt = (m + mt - 1) // mt
    npg = (npan + pg - 1) // pg
    kp = ks * 64
    aligned = copy < 0 or ((a.ctypes.data & 63) == 0 and (lda & 63) == 0)
    in_place = copy <= 0 and xorv == 0 and lda == kp and aligned
    for t in prange(nmt * npg):
        ci = t // npg
        p0 = (t - ci * npg) * pg
        r0 = ci * mt
        rows = min(mt, m - r0)
        cbuf = np.empty(pblk * NR * NR, np.int32)
        ctail = np.empty(NR * NR, np.int32)
        if in_place:
            _amx_rows(a, r0 * lda, lda, rows, bp, ks, n, p0, min(p0 + pg, npan), pblk, ep, out, r0, ocol0, cbuf,
                      ctail)
        else:
            buf = _aligned_u8(rows * kp)
            _copy_rows(a, lda, k, r0, rows, kp, xorv, buf)
            _amx_rows(buf, 0, kp, rows, bp, ks, n, p0, min(p0 + pg, npan), pblk, ep, out, r0, ocol0, cbuf, ctail)


@njit(error_model="numpy", nogil=True, cache=True)
def _im2col_rows(xf, hh, ww, cc, xpad, xorv, cin0, cg, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, r0, rows, kp, buf):
    """Patches of output pixels [r0, r0 + rows) into buf[rows, kp] (u8), K order (ky, kx, c).

    NOTE: unsigned offsets so Numba emits no wraparound code and LLVM turns each run of ``cg`` bytes into a
    vector copy (the run is contiguous in NHWC).
    """
    ucg = np.uint64(cg)
    for i in range(rows):
        mm = r0 + i
        b = mm // (oh * ow)
        rem = mm - b * oh * ow
        y = rem // ow
        xo = rem - y * ow
        base = np.uint64(i * kp)
        ix0 = xo * sw - pw
        whole_row = dw == 1 and ix0 >= 0 and ix0 + kw <= ww  # the kw taps are one contiguous run of kw*cg bytes
        for ky in range(kh):
            iy = y * sh - ph + ky * dh
            if whole_row and cg == cc and iy >= 0 and iy < hh:
                o = base + np.uint64(ky * kw * cg)
                src = np.uint64(((b * hh + iy) * ww + ix0) * cc)
                for c in range(np.uint64(kw * cg)):
                    buf[o + c] = xf[src + c] ^ xorv
                continue
            for kx in range(kw):
                ix = ix0 + kx * dw
                o = base + np.uint64((ky * kw + kx) * cg)
                if iy >= 0 and iy < hh and ix >= 0 and ix < ww:
                    src = np.uint64(((b * hh + iy) * ww + ix) * cc + cin0)
                    for c in range(ucg):
                        buf[o + c] = xf[src + c] ^ xorv
                else:
                    for c in range(ucg):
                        buf[o + c] = xpad


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def conv_im2col(xf, nb, hh, ww, cc, xpad, xorv, cin0, cg, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, bp, kg, n, ep,
                out, ocol0, mc, pblk):
    """NHWC conv of one channel group: im2col ``mc`` output pixels at a time into a per-task buffer, then GEMM.

    ``xf`` is the u8 NHWC input flattened (s8 inputs arrive viewed as u8 with ``xorv = 0x80``); padding taps read
    ``xpad``, the u8 zero point, so the packed bias compensation covers them. K order is (ky, kx, c), matching
    packing; the K padding columns of the buffer stay zero (their packed weights are zero too).
    """
    m = nb * oh * ow
    kp = kg * G
    npan = (n + NR - 1) // NR
    nmc = (m + mc - 1) // mc
    for t in prange(nmc):
        r0 = t * mc
        rows = min(mc, m - r0)
        if USE_AMX:
            # NOTE: 64-byte aligned rows (kp is a multiple of 64 in the amx layout): see intrinsics/amx.py
            buf = _aligned_u8(rows * kp)
            buf[:] = 0
        else:
            buf = np.zeros(rows * kp, np.uint8)
        _im2col_rows(xf, hh, ww, cc, xpad, xorv, cin0, cg, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, r0, rows, kp,
                     buf)
        if USE_AMX:
            cbuf = np.empty(pblk * NR * NR, np.int32)
            ctail = np.empty(NR * NR, np.int32)
            _amx_rows(buf, 0, kp, rows, bp, kp // 64, n, 0, npan, pblk, ep, out, r0, ocol0, cbuf, ctail)
        else:
            scratch = np.empty(8 * NR, np.int32)
            for panel in range(npan):
                _row_block(buf, 0, kp, rows, bp, panel, kg, n, scratch, ep, out, r0, ocol0)


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def conv_depthwise(x, xpad, xorv, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, ep, out):
    """NHWC depthwise conv (one filter per channel), ``w`` int8 [kh, kw, C], int32 sums in fixed tap order."""
    nb, hh, ww, cc = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    ucc = np.uint64(cc)
    for t in prange(nb * oh):
        b = t // oh
        y = t - b * oh
        # NOTE: one int32 row of all channels per output pixel, taps outermost: the channel loop is contiguous in
        # x, w and acc (unsigned indices: no wraparound checks), so LLVM vectorizes it. int32 sums wrap exactly as
        # the GEMM paths' do.
        acc = np.empty(cc, np.int32)
        for xo in range(ow):
            row = t * ow + xo
            for c in range(ucc):
                acc[c] = 0
            for ky in range(kh):
                iy = y * sh - ph + ky * dh
                for kx in range(kw):
                    ix = xo * sw - pw + kx * dw
                    if iy >= 0 and iy < hh and ix >= 0 and ix < ww:
                        for c in range(ucc):
                            acc[c] += np.int32(x[b, iy, ix, c] ^ xorv) * np.int32(w[ky, kx, c])
                    else:
                        for c in range(ucc):
                            acc[c] += np.int32(xpad) * np.int32(w[ky, kx, c])
            _epilogue(acc, 1, row, 0, cc, ep, out, 0)
