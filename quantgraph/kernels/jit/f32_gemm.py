"""TEMPLATE (not imported directly): the packed fp32 GEMM and im2col-conv drivers around one FMA microkernel family.

``kernels/fp32/gemm_f32_packed.py`` instantiates this file with ``cache.load_template("f32_gemm", params)`` once per
vector ISA (``ISA``, register tile ``MR x NR``, K block ``KC``; see ``gemm_f32_packed.FMA_ISAS``): the copy lives in
the kernel cache directory with the PARAMS block replaced by literal constants, so each ISA's Numba cache is its
own file and the constants fold away. Shapes are run-time arguments: one compiled copy serves every shape.

* Driver (:func:`_gemm_driver`): tasks = (chunk of ``mc`` rows) x (group of ``pg`` panels) under ``prange``;
  inside a task, K blocks of ``KC`` (the B micro-panel, ``KC * NR * 4`` bytes, stays in L1 while the row tiles
  stream A from L2), then panels, then row tiles (``MR`` rows, then the 8/4/2/1-row tails below ``MR``). Epilogue
  (per-column bias, residual Z, activation): for no activation, ReLU and clip it is applied by the microkernel to
  the accumulators on the last K block, before the store (``EPI_*`` flags), so C is written once; other
  activations (``eltwise_f32.act_row``) and the N-tail panel get it in a post-pass over the task's block while it
  is hot. Both do (acc + bias) + z, then the activation, in float32, so the results are the same bits either way.
  A task whose rows x K is at most ``PANEL_MAJOR_A`` floats (A sits in L2 anyway) takes its panels one by one
  instead, K blocks inside, so it reads B as one forward stream that the first row tile prefetches ``PF`` bytes ahead.
* :func:`_thin_driver`: B packed in ``THIN_NR``-column panels (``pack_b(thin=True)``), tasks of whole panels, every
  row of A per panel in ``THIN_MR``-row tiles that run the whole K with their accumulators in registers and prefetch
  B ``THIN_PF`` bytes ahead: the recurrent GEMMs of small batches, where streaming B from L3 sets the time.
* :func:`_conv_driver`: the same tasks over an NHWC convolution, each task gathering its rows' im2col block per K
  block right before the microkernels consume it.

Numerics: float32 accumulation with one FMA per product in k order, carried across K blocks through C. The task
split depends only on the shape (never the thread count), and neither the tile shape nor the vector width changes
any element's chain of FMAs, so results are bit-identical for any number of threads and on every ISA.
"""
import numpy as np
from numba import njit, prange

from quantgraph.kernels.fp32.eltwise_f32 import ACT_CODES, act_row
from quantgraph.kernels.intrinsics.fma_f32 import EPI_BIAS, EPI_CLIP, EPI_RELU, EPI_Z, tile_kernel

# --- PARAMS ---
ISA = "avx512"
LANES = 16  # floats per vector register
MR = 6  # rows of the main tile
NR = 64  # columns per packed panel / tile
KC = 128  # K block: the B micro-panel KC x NR stays in L1
PF = 2048  # bytes ahead in B the first row tile prefetches on the panel-major path (0: none)
THIN_MR = 12  # thin GEMMs (few rows, B packed in THIN_NR-column panels): rows of the main tile
THIN_NR = 16
THIN_PF = 4096  # bytes ahead in B every thin tile prefetches
ACT_DIGEST = ""  # sha256 of eltwise_f32.py: act_row is compiled into this module's cache, which cannot see it change
# --- END PARAMS ---

_T_MAIN = tile_kernel(ISA, MR, NR)
_T_PF = tile_kernel(ISA, MR, NR, PF)
# thin GEMMs: every tile runs the whole K with its accumulators in registers and prefetches the B stream
_TT_MAIN = tile_kernel(ISA, THIN_MR, THIN_NR, THIN_PF)
_TT8 = tile_kernel(ISA, 8, THIN_NR, THIN_PF)
_TT4 = tile_kernel(ISA, 4, THIN_NR, THIN_PF)
_TT2 = tile_kernel(ISA, 2, THIN_NR, THIN_PF)
_TT1 = tile_kernel(ISA, 1, THIN_NR, THIN_PF)
# M tail: shorter tiles, largest first (only those below MR are ever called; the MR > t tests fold away)
_T8 = tile_kernel(ISA, 8, NR)
_T4 = tile_kernel(ISA, 4, NR)
_T2 = tile_kernel(ISA, 2, NR)
_T1 = tile_kernel(ISA, 1, NR)


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _rows(a, a_off, lda, rows, bp, b_off, kc, c, c_off, ldc, accf, bias, col0, z, z_off, ldz, epi, lo, hi, pf):
    """``rows`` rows of A times one B micro-panel into C: main tiles, then the 8/4/2/1 tail; ``epi`` != 0 applies
    the in-register epilogue (bias[col0:], z rows from ``z_off``); with ``pf`` the first main tile prefetches B
    ``PF`` bytes ahead (the panel-major order reads B as one stream)."""
    r = 0
    if PF and pf and MR <= rows:
        _T_PF(a, a_off, lda, bp, b_off, kc, c, c_off, ldc, accf, bias, col0, z, z_off, ldz, epi, lo, hi)
        r = MR
    while r + MR <= rows:
        _T_MAIN(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z,
                z_off + r * ldz, ldz, epi, lo, hi)
        r += MR
    if MR > 8 and r + 8 <= rows:
        _T8(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)
        r += 8
    if MR > 4 and r + 4 <= rows:
        _T4(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)
        r += 4
    if MR > 2 and r + 2 <= rows:
        _T2(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)
        r += 2
    if r < rows:
        _T1(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)


# the activation table's ``in_register`` rows, which the microkernel applies to its accumulators
_NONE, _RELU, _CLIP = ACT_CODES["none"], ACT_CODES["relu"], ACT_CODES["clip"]


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _epi_flags(has_bias, has_z, act):
    """Microkernel epilogue flags for the last K block, or -1 when the activation needs the post-pass (then the
    whole epilogue runs there, as before)."""
    f = (EPI_BIAS if has_bias else 0) | (EPI_Z if has_z else 0)
    if act == _NONE:
        return f
    if act == _RELU:
        return f | EPI_RELU
    if act == _CLIP:
        return f | EPI_CLIP
    return -1


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _chunk(ci, nmc, m):
    """Rows [r0, r1) of M chunk ``ci`` of ``nmc``: whole MR tiles dealt out as evenly as possible."""
    nt = (m + MR - 1) // MR
    r0 = (ci * nt // nmc) * MR
    r1 = min(((ci + 1) * nt // nmc) * MR, m)
    return r0, r1


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _finish(out, r0, rows, p0, p1, n, tail, bias, has_bias, z, has_z, act, alpha, beta, fused, nr):
    """Copy the N-tail panel out of ``tail`` and run the epilogue over the task's block; with ``fused`` the full
    panels already had it in the microkernel, so only the tail panel's columns get it here. ``nr``: panel width."""
    c0 = p0 * nr
    c1 = min(p1 * nr, n)
    has_tail = c1 - c0 < p1 * nr - c0
    if has_tail:  # copy the valid columns of the tail panel
        tc = (p1 - 1) * nr
        for i in range(rows):
            for j in range(n - tc):
                out[r0 + i, tc + j] = tail[i * nr + j]
    if fused:
        if not has_tail:
            return
        c0 = (p1 - 1) * nr
    if has_bias or has_z or act != 0:
        for i in range(rows):
            row = out[r0 + i, c0:c1]
            if has_bias:
                for j in range(c1 - c0):
                    row[j] += bias[c0 + j]
            if has_z:
                for j in range(c1 - c0):
                    row[j] += z[r0 + i, c0 + j]
            act_row(row, act, alpha, beta)


#: rows x K (floats) up to which a task runs panel-major: A (at most 256 KB) stays in L2 while B streams
PANEL_MAJOR_A = 65536


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _panel_block(a, r0, lda, rows, bp, k, n, p, k0, out, ldo, tail, bias, z, ldz, efl, lo, hi, pf):
    """The task's rows times K block ``k0`` of panel ``p`` (the N-tail panel into ``tail``)."""
    kc = min(KC, k - k0)
    accf = 1 if k0 > 0 else 0
    epi = efl if k0 + kc == k else 0
    col0 = p * NR
    b_off = p * k * NR + k0 * NR
    if col0 + NR <= n:
        _rows(a, r0 * lda + k0, lda, rows, bp, b_off, kc, out, r0 * ldo + col0, ldo, accf, bias, col0, z,
              r0 * ldz + col0, ldz, epi, lo, hi, pf)
    else:
        _rows(a, r0 * lda + k0, lda, rows, bp, b_off, kc, tail, 0, NR, accf, bias, 0, z, 0, 0, 0, lo, hi, pf)


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _setup(out, z, has_bias, has_z, act, alpha, beta):
    """(ldo, ldz, microkernel epilogue flags, whether they carry the whole epilogue, lo, hi) of a driver call."""
    efl = _epi_flags(has_bias, has_z, act)
    fused = efl >= 0
    return out.strides[0] // 4, z.strides[0] // 4, efl if fused else 0, fused, np.float32(alpha), np.float32(beta)


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def _gemm_driver(a, bp, k, n, out, bias, has_bias, z, has_z, act, alpha, beta, mc, pg, nmc):
    """out[:m, :n] = act(a @ B + bias + z); ``bp`` is B packed ``[npan][k][NR]``; tasks (nmc row chunks of at most
    ``mc`` rows) x (pg panels)."""
    m = a.shape[0]
    lda = a.strides[0] // 4
    ldo, ldz, efl, fused, lo, hi = _setup(out, z, has_bias, has_z, act, alpha, beta)
    npan = (n + NR - 1) // NR
    npg = (npan + pg - 1) // pg
    for t in prange(nmc * npg):
        ci = t // npg
        p0 = (t - ci * npg) * pg
        p1 = min(p0 + pg, npan)
        r0, r1 = _chunk(ci, nmc, m)
        rows = r1 - r0
        # N-tail panel: computed into a scratch tile block (ldc = NR), copied out after the last K block
        tail = np.zeros(mc * NR, np.float32)
        if rows * k <= PANEL_MAJOR_A:
            # few rows: A stays in L2 anyway, so take the panels one by one (K blocks inside): the task reads its B
            # as one contiguous stream (the layout is [panel][K][NR]), which the prefetch keeps ahead of
            for p in range(p0, p1):
                for k0 in range(0, k, KC):
                    _panel_block(a, r0, lda, rows, bp, k, n, p, k0, out, ldo, tail, bias, z, ldz, efl, lo, hi, True)
        else:
            for k0 in range(0, k, KC):
                for p in range(p0, p1):
                    _panel_block(a, r0, lda, rows, bp, k, n, p, k0, out, ldo, tail, bias, z, ldz, efl, lo, hi, False)
        _finish(out, r0, rows, p0, p1, n, tail, bias, has_bias, z, has_z, act, alpha, beta, fused, NR)


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _thin_rows(a, lda, rows, bp, b_off, k, c, c_off, ldc, bias, col0, z, z_off, ldz, epi, lo, hi):
    """All ``rows`` rows of A times one whole thin panel (K x THIN_NR) into C: main tiles, then the 8/4/2/1 tail."""
    r = 0
    while r + THIN_MR <= rows:
        _TT_MAIN(a, r * lda, lda, bp, b_off, k, c, c_off + r * ldc, ldc, 0, bias, col0, z, z_off + r * ldz, ldz, epi,
                 lo, hi)
        r += THIN_MR
    if THIN_MR > 8 and r + 8 <= rows:
        _TT8(a, r * lda, lda, bp, b_off, k, c, c_off + r * ldc, ldc, 0, bias, col0, z, z_off + r * ldz, ldz, epi, lo,
             hi)
        r += 8
    if THIN_MR > 4 and r + 4 <= rows:
        _TT4(a, r * lda, lda, bp, b_off, k, c, c_off + r * ldc, ldc, 0, bias, col0, z, z_off + r * ldz, ldz, epi, lo,
             hi)
        r += 4
    if THIN_MR > 2 and r + 2 <= rows:
        _TT2(a, r * lda, lda, bp, b_off, k, c, c_off + r * ldc, ldc, 0, bias, col0, z, z_off + r * ldz, ldz, epi, lo,
             hi)
        r += 2
    if r < rows:
        _TT1(a, r * lda, lda, bp, b_off, k, c, c_off + r * ldc, ldc, 0, bias, col0, z, z_off + r * ldz, ldz, epi, lo,
             hi)


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def _thin_driver(a, bp, k, n, out, bias, has_bias, z, has_z, act, alpha, beta, pg):
    """out = act(a @ B + bias + z) for few rows, ``bp`` packed ``[npan][k][THIN_NR]``: tasks of ``pg`` panels, each
    panel once, all rows and the whole K per tile call, so B streams once from L3/memory, in order."""
    m = a.shape[0]
    lda = a.strides[0] // 4
    ldo, ldz, efl, fused, lo, hi = _setup(out, z, has_bias, has_z, act, alpha, beta)
    npan = (n + THIN_NR - 1) // THIN_NR
    npg = (npan + pg - 1) // pg
    for t in prange(npg):
        p0 = t * pg
        p1 = min(p0 + pg, npan)
        tail = np.zeros(m * THIN_NR, np.float32)
        for p in range(p0, p1):
            col0 = p * THIN_NR
            if col0 + THIN_NR <= n:
                _thin_rows(a, lda, m, bp, p * k * THIN_NR, k, out, col0, ldo, bias, col0, z, col0, ldz, efl, lo, hi)
            else:
                _thin_rows(a, lda, m, bp, p * k * THIN_NR, k, tail, 0, THIN_NR, bias, 0, z, 0, 0, 0, lo, hi)
        _finish(out, 0, m, p0, p1, n, tail, bias, has_bias, z, has_z, act, alpha, beta, fused, THIN_NR)


@njit(error_model="numpy", nogil=True, cache=True, inline="always")
def _im2col_block(x, xf, buf, rows, rimg, riy, rix, k0, kc, cg, kh, kw, dh, dw, seg_c, seg_n, seg_dy, seg_dx,
                  run_src, run_n):
    """buf[i*KC + j] = im2col(x)[row i, k0 + j] for an NHWC batch ``x`` (N, H, W, cg); row i reads image
    ``rimg[i]`` at window origin (``riy[i]``, ``rix[i]``); the column order is (ki, kj, c) as
    ``conv_f32.pack_conv``; zeros where the window reads padding. The K block is cut once into per-tap segments;
    with ``xf`` (x flattened, C-contiguous; empty otherwise) rows whose window is inside the image copy merged runs
    of segments that are contiguous in x (a whole window row when the conv has few channels)."""
    h = x.shape[1]
    w = x.shape[2]
    tap = k0 // cg
    c = k0 - tap * cg
    ki = tap // kw
    kj = tap - ki * kw
    nseg = 0
    kk = 0
    while kk < kc:
        ln = min(cg - c, kc - kk)
        seg_c[nseg] = c
        seg_n[nseg] = ln
        seg_dy[nseg] = ki * dh
        seg_dx[nseg] = kj * dw
        nseg += 1
        kk += ln
        c = 0
        kj += 1
        if kj == kw:
            kj = 0
            ki += 1
    nrun = 0
    if xf.size > 0:
        for sgi in range(nseg):
            src = (seg_dy[sgi] * w + seg_dx[sgi]) * cg + seg_c[sgi]
            if nrun > 0 and run_src[nrun - 1] + run_n[nrun - 1] == src:
                run_n[nrun - 1] += seg_n[sgi]
            else:
                run_src[nrun] = src
                run_n[nrun] = seg_n[sgi]
                nrun += 1
    ylast = (kh - 1) * dh
    xlast = (kw - 1) * dw
    for i in range(rows):
        img = rimg[i]
        iy0 = riy[i]
        ix0 = rix[i]
        dst = i * KC
        if nrun > 0 and iy0 >= 0 and iy0 + ylast < h and ix0 >= 0 and ix0 + xlast < w:
            base = ((img * h + iy0) * w + ix0) * cg
            for q in range(nrun):
                ln = run_n[q]
                src = base + run_src[q]
                if ln >= LANES:
                    buf[dst:dst + ln] = xf[src:src + ln]
                else:
                    for j in range(ln):
                        buf[dst + j] = xf[src + j]
                dst += ln
            continue
        for sgi in range(nseg):
            ln = seg_n[sgi]
            iy = iy0 + seg_dy[sgi]
            ix = ix0 + seg_dx[sgi]
            if 0 <= iy < h and 0 <= ix < w:
                c = seg_c[sgi]
                if ln >= LANES:  # a slice copy vectorizes; short runs (few channels) go scalar
                    buf[dst:dst + ln] = x[img, iy, ix, c:c + ln]
                else:
                    for j in range(ln):
                        buf[dst + j] = x[img, iy, ix, c + j]
            else:
                for j in range(ln):
                    buf[dst + j] = np.float32(0.0)
            dst += ln


@njit(error_model="numpy", nogil=True, cache=True, parallel=True)
def _conv_driver(x, bp, k, n, out, bias, has_bias, z, has_z, act, alpha, beta, mc, pg, nmc,
                 oh, ow, kw, sh, sw, dh, dw, pt, pl, xf, kh):
    """NHWC conv (group 1) as one parallel region: out (N*oh*ow, n) = act(im2col(x) @ B + bias + z). Each task
    builds its rows' im2col block for one K block (mc x KC floats, stays in L1/L2) right before the microkernels
    consume it; same tasks, K-block order and tiles as :func:`_gemm_driver`, so the results are identical."""
    m = out.shape[0]
    cg = x.shape[3]
    ohw = oh * ow
    ldo, ldz, efl, fused, lo, hi = _setup(out, z, has_bias, has_z, act, alpha, beta)
    npan = (n + NR - 1) // NR
    npg = (npan + pg - 1) // pg
    for t in prange(nmc * npg):
        ci = t // npg
        p0 = (t - ci * npg) * pg
        p1 = min(p0 + pg, npan)
        r0, r1 = _chunk(ci, nmc, m)
        rows = r1 - r0
        tail = np.zeros(mc * NR, np.float32)
        buf = np.empty(mc * KC, np.float32)
        rimg = np.empty(rows, np.int64)
        riy = np.empty(rows, np.int64)
        rix = np.empty(rows, np.int64)
        for i in range(rows):
            r = r0 + i
            img = r // ohw
            pix = r - img * ohw
            oy = pix // ow
            rimg[i] = img
            riy[i] = oy * sh - pt
            rix[i] = (pix - oy * ow) * sw - pl
        seg_c = np.empty(KC, np.int64)
        seg_n = np.empty(KC, np.int64)
        seg_dy = np.empty(KC, np.int64)
        seg_dx = np.empty(KC, np.int64)
        run_src = np.empty(KC, np.int64)
        run_n = np.empty(KC, np.int64)
        for k0 in range(0, k, KC):
            kc = min(KC, k - k0)
            accf = 1 if k0 > 0 else 0
            _im2col_block(x, xf, buf, rows, rimg, riy, rix, k0, kc, cg, kh, kw, dh, dw, seg_c, seg_n, seg_dy, seg_dx,
                          run_src, run_n)
            epi = efl if k0 + kc == k else 0
            for p in range(p0, p1):
                col0 = p * NR
                b_off = p * k * NR + k0 * NR
                if col0 + NR <= n:
                    _rows(buf, 0, KC, rows, bp, b_off, kc, out, r0 * ldo + col0, ldo, accf,
                          bias, col0, z, r0 * ldz + col0, ldz, epi, lo, hi, False)
                else:
                    _rows(buf, 0, KC, rows, bp, b_off, kc, tail, 0, NR, accf, bias, 0, z, 0, 0, 0, lo, hi, False)
        _finish(out, r0, rows, p0, p1, n, tail, bias, has_bias, z, has_z, act, alpha, beta, fused, NR)
