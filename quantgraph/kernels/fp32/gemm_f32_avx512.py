"""Packed-weight fp32 GEMM for AVX-512: C[M,N] = epilogue(A[M,K] @ B[K,N]) with B packed once at lowering.

Layout and blocking (Goto-style, A not packed):

* B is packed by :func:`pack_b` into column panels of ``NR`` floats, ``[npan][K][NR]``, the last panel zero-padded
  in N. A is read in place (row-major, any row stride, unit column stride): im2col buffers and activations.
* Microkernel: an ``MR x NR`` register tile (``MR * NR/16`` zmm accumulators), emitted as LLVM IR by a Numba
  ``@intrinsic`` (:func:`tile_kernel`): per k, ``NR/16`` unaligned ``<16 x float>`` loads of the B row and one
  broadcast scalar of A per row, ``llvm.fma.v16f32``; the K loop is unrolled 4x. Shorter tiles (8, 4, 2, 1 rows)
  cover the M tail; the N tail goes through a small scratch tile.
* Driver (:func:`_gemm_driver`): tasks = (chunk of ``mc`` rows) x (group of ``pg`` panels) under ``prange``;
  inside a task, K blocks of ``KC`` (the B micro-panel, ``KC * NR * 4`` bytes, stays in L1 while the row tiles
  stream A from L2), then panels, then row tiles. Epilogue (per-column bias, residual Z, activation): for no
  activation, ReLU and clip it is applied by the microkernel to the accumulators on the last K block, before the
  store (``EPI_*`` flags), so C is written once; other activations (``eltwise_f32.act_row``) and the N-tail panel
  get it in a post-pass over the task's block while it is hot. Both do (acc + bias) + z, then the activation, in
  float32, so the results are the same bits either way.

Numerics: float32 accumulation with FMA, summed over K blocks in a fixed order. The task split depends only on the
shape (never the thread count), so results are bit-identical for any number of threads.

Dispatch: :func:`available` is True only when the host has avx512f and ``config.isa`` is unset or an AVX-512 rung;
``compiler/lower.py`` keeps numpy/OpenBLAS otherwise. Every argument is checked in :func:`bind` (at plan time),
which raises ``KernelError`` before any JIT code runs and returns a prebound step.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.kernels.fp32.eltwise_f32 import act_row

NAME = "gemm_f32_avx512"
LANES = 16          # floats per zmm
MR = 6              # rows of the main tile
NR = 64             # columns per packed panel / tile
KC = 128            # K block: the B micro-panel KC x NR (32 KiB) stays in L1
UNROLL = 4          # K steps per main-loop iteration
TAIL_ROWS = (8, 4, 2, 1)  # tiles for the M tail, largest first
_EMPTY1 = np.zeros(0, np.float32)
_EMPTY2 = np.zeros((0, 0), np.float32)
# epilogue flags of the microkernel (last K block only): applied to the accumulators before the store
EPI_BIAS, EPI_Z, EPI_RELU, EPI_CLIP = 1, 2, 4, 8


# -- the microkernel as LLVM IR ---------------------------------------------------------------------------------
def build_tile_function(module: ir.Module, mr: int, nr: int) -> ir.Function:
    """Emit (once per module) ``void tile(float* a, i64 lda, float* b, i64 kc, float* c, i64 ldc, i64 acc,
    float* bias, float* z, i64 ldz, i64 epi, float lo, float hi)``.

    ``c[r*ldc + j] (+)= sum_k a[r*lda + k] * b[k*nr + j]`` for r < mr, j < nr; with ``acc == 0`` C is overwritten,
    otherwise added to (K blocks after the first). Strides are in floats. Accumulators are allocas that SROA
    promotes to registers. ``epi`` (bit flags ``EPI_*``, nonzero only on the last K block) applies the epilogue
    to the accumulators before the store, in the post-pass order: ``+ bias[j]`` (one vector load per 16 columns),
    ``+ z[r*ldz + j]``, then ReLU (``maxnum`` with 0) or clip (``maxnum`` lo, ``minnum`` hi).
    """
    name = f"quantgraph.tile.f32.avx512.{mr}x{nr}.epi"
    found = module.globals.get(name)
    if found is not None:
        return found
    nv = nr // LANES
    f32, i64 = ir.FloatType(), ir.IntType(64)
    pf = f32.as_pointer()
    vty = ir.VectorType(f32, LANES)
    pv = vty.as_pointer()

    def intr(iname: str, nargs: int) -> ir.Function:
        f = module.globals.get(iname)
        if f is None:
            f = ir.Function(module, ir.FunctionType(vty, [vty] * nargs), iname)
        return f

    fma = intr("llvm.fma.v16f32", 3)
    vmax = intr("llvm.maxnum.v16f32", 2)
    vmin = intr("llvm.minnum.v16f32", 2)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pf, i64, pf, i64, pf, i64, i64, pf, pf, i64, i64,
                                                             f32, f32]), name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    a, lda, bp, kc, c, ldc, accflag, biasp, zp, ldz, epi, lo, hi = fn.args
    names = ("entry", "load_c", "zero_c", "start", "main", "rem_check", "rem", "done", "epi_bias", "epi_z_check",
             "epi_z", "epi_act_check", "epi_relu", "epi_clip_check", "epi_clip", "store")
    blk = {n: fn.append_basic_block(n) for n in names}
    b = ir.IRBuilder(blk["entry"])
    acc = [[b.alloca(vty) for _ in range(nv)] for _ in range(mr)]
    k_var = b.alloca(i64)
    arow = [b.gep(a, [b.mul(lda, ir.Constant(i64, r))]) for r in range(mr)]
    crow = [b.gep(c, [b.mul(ldc, ir.Constant(i64, r))]) for r in range(mr)]
    b.store(ir.Constant(i64, 0), k_var)
    b.cbranch(b.icmp_signed("!=", accflag, ir.Constant(i64, 0)), blk["load_c"], blk["zero_c"])

    b.position_at_end(blk["load_c"])
    for r in range(mr):
        for v in range(nv):
            b.store(b.load(b.bitcast(b.gep(crow[r], [ir.Constant(i64, v * LANES)]), pv), align=4), acc[r][v])
    b.branch(blk["start"])
    b.position_at_end(blk["zero_c"])
    for row in acc:
        for slot in row:
            b.store(ir.Constant(vty, None), slot)
    b.branch(blk["start"])

    b.position_at_end(blk["start"])
    kmain = b.and_(kc, ir.Constant(i64, -UNROLL))
    b.cbranch(b.icmp_signed(">", kmain, ir.Constant(i64, 0)), blk["main"], blk["rem_check"])

    def step(k: ir.Value) -> None:
        brow = b.gep(bp, [b.mul(k, ir.Constant(i64, nr))])
        bvec = [b.load(b.bitcast(b.gep(brow, [ir.Constant(i64, v * LANES)]), pv), align=4) for v in range(nv)]
        for r in range(mr):
            s = b.load(b.gep(arow[r], [k]), align=4)
            one = b.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
            splat = b.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                     ir.Constant(ir.VectorType(ir.IntType(32), LANES), None))
            for v in range(nv):
                b.store(b.call(fma, [splat, bvec[v], b.load(acc[r][v])]), acc[r][v])

    b.position_at_end(blk["main"])
    k = b.load(k_var)
    for u in range(UNROLL):
        step(b.add(k, ir.Constant(i64, u)))
    k1 = b.add(k, ir.Constant(i64, UNROLL))
    b.store(k1, k_var)
    b.cbranch(b.icmp_signed("<", k1, kmain), blk["main"], blk["rem_check"])

    b.position_at_end(blk["rem_check"])
    b.cbranch(b.icmp_signed("<", b.load(k_var), kc), blk["rem"], blk["done"])
    b.position_at_end(blk["rem"])
    k = b.load(k_var)
    step(k)
    k1 = b.add(k, ir.Constant(i64, 1))
    b.store(k1, k_var)
    b.cbranch(b.icmp_signed("<", k1, kc), blk["rem"], blk["done"])

    def has(flag: int) -> ir.Value:
        return b.icmp_signed("!=", b.and_(epi, ir.Constant(i64, flag)), ir.Constant(i64, 0))

    def update(f) -> None:
        for r in range(mr):
            for v in range(nv):
                b.store(f(r, v, b.load(acc[r][v])), acc[r][v])

    def vload(p: ir.Value, off: int) -> ir.Value:
        return b.load(b.bitcast(b.gep(p, [ir.Constant(i64, off)]), pv), align=4)

    def splat(s: ir.Value) -> ir.Value:
        one = b.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
        return b.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                ir.Constant(ir.VectorType(ir.IntType(32), LANES), None))

    b.position_at_end(blk["done"])
    b.cbranch(has(EPI_BIAS), blk["epi_bias"], blk["epi_z_check"])
    b.position_at_end(blk["epi_bias"])
    bvec = [vload(biasp, v * LANES) for v in range(nv)]
    update(lambda r, v, x: b.fadd(x, bvec[v]))
    b.branch(blk["epi_z_check"])
    b.position_at_end(blk["epi_z_check"])
    b.cbranch(has(EPI_Z), blk["epi_z"], blk["epi_act_check"])
    b.position_at_end(blk["epi_z"])
    zrow = [b.gep(zp, [b.mul(ldz, ir.Constant(i64, r))]) for r in range(mr)]
    update(lambda r, v, x: b.fadd(x, vload(zrow[r], v * LANES)))
    b.branch(blk["epi_act_check"])
    b.position_at_end(blk["epi_act_check"])
    b.cbranch(has(EPI_RELU), blk["epi_relu"], blk["epi_clip_check"])
    b.position_at_end(blk["epi_relu"])
    zero = ir.Constant(vty, None)
    update(lambda r, v, x: b.call(vmax, [x, zero]))
    b.branch(blk["store"])
    b.position_at_end(blk["epi_clip_check"])
    b.cbranch(has(EPI_CLIP), blk["epi_clip"], blk["store"])
    b.position_at_end(blk["epi_clip"])
    vlo, vhi = splat(lo), splat(hi)
    update(lambda r, v, x: b.call(vmin, [b.call(vmax, [x, vlo]), vhi]))
    b.branch(blk["store"])

    b.position_at_end(blk["store"])
    for r in range(mr):
        for v in range(nv):
            b.store(b.load(acc[r][v]), b.bitcast(b.gep(crow[r], [ir.Constant(i64, v * LANES)]), pv), align=4)
    b.ret_void()
    return fn


@functools.lru_cache(maxsize=None)
def tile_kernel(mr: int, nr: int = NR):
    """Numba intrinsic ``tile(a, a_off, lda, b, b_off, kc, c, c_off, ldc, acc, bias, bias_off, z, z_off, ldz, epi,
    lo, hi)`` for one (MR, NR).

    ``a``, ``b``, ``c``, ``bias``, ``z`` are float32 arrays of any rank/layout; offsets and strides are in elements
    from each array's data pointer. ``bias`` / ``z`` are read only when ``epi`` has ``EPI_BIAS`` / ``EPI_Z``. The
    caller guarantees every address touched is inside its array.
    """
    if nr % LANES or mr < 1:
        raise ValueError(f"no fp32 microkernel for {mr}x{nr}")

    @intrinsic
    def tile(typingctx, a, a_off, lda, b, b_off, kc, c, c_off, ldc, acc, bias, bias_off, z, z_off, ldz, epi, lo,
             hi):
        arrays = (a, b, c, bias, z)
        ints = (a_off, lda, b_off, kc, c_off, ldc, acc, bias_off, z_off, ldz, epi)
        if not all(isinstance(t, types.Array) and t.dtype == types.float32 for t in arrays) \
                or not all(isinstance(t, types.Integer) for t in ints) \
                or not all(isinstance(t, types.Float) for t in (lo, hi)):
            return None
        sig = types.void(a, a_off, lda, b, b_off, kc, c, c_off, ldc, acc, bias, bias_off, z, z_off, ldz, epi, lo, hi)

        def codegen(context, builder, signature, args):
            pf = ir.FloatType().as_pointer()

            def as64(idx: int) -> ir.Value:
                return context.cast(builder, args[idx], signature.args[idx], types.int64)

            def as32f(idx: int) -> ir.Value:
                return context.cast(builder, args[idx], signature.args[idx], types.float32)

            def ptr(idx: int, off_idx: int) -> ir.Value:
                arr = context.make_array(signature.args[idx])(context, builder, args[idx])
                return builder.gep(builder.bitcast(arr.data, pf), [as64(off_idx)])

            fn = build_tile_function(builder.module, mr, nr)
            builder.call(fn, [ptr(0, 1), as64(2), ptr(3, 4), as64(5), ptr(6, 7), as64(8), as64(9),
                              ptr(10, 11), ptr(12, 13), as64(14), as64(15), as32f(16), as32f(17)])
            return context.get_dummy_value()

        return sig, codegen

    tile.__name__ = f"tile_f32_avx512_{mr}x{nr}"
    return tile


# -- the driver (one compiled family for (MR, NR); shapes are run-time arguments) ---------------------------------
_T_MAIN = tile_kernel(MR, NR)
_T8 = tile_kernel(8, NR)
_T4 = tile_kernel(4, NR)
_T2 = tile_kernel(2, NR)
_T1 = tile_kernel(1, NR)


@njit(nogil=True, cache=True, inline="always")
def _rows(a, a_off, lda, rows, bp, b_off, kc, c, c_off, ldc, accf, bias, col0, z, z_off, ldz, epi, lo, hi):
    """``rows`` rows of A times one B micro-panel into C: main tiles, then the 8/4/2/1 tail; ``epi`` != 0 applies
    the in-register epilogue (bias[col0:], z rows from ``z_off``)."""
    r = 0
    while r + MR <= rows:
        _T_MAIN(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z,
                z_off + r * ldz, ldz, epi, lo, hi)
        r += MR
    if MR > 8 and r + 8 <= rows:
        _T8(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)
        r += 8
    if r + 4 <= rows:
        _T4(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)
        r += 4
    if r + 2 <= rows:
        _T2(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)
        r += 2
    if r < rows:
        _T1(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf, bias, col0, z, z_off + r * ldz,
            ldz, epi, lo, hi)


@njit(nogil=True, cache=True, inline="always")
def _epi_flags(has_bias, has_z, act):
    """Microkernel epilogue flags for the last K block, or -1 when the activation needs the post-pass (then the
    whole epilogue runs there, as before)."""
    f = (EPI_BIAS if has_bias else 0) | (EPI_Z if has_z else 0)
    if act == 0:
        return f
    if act == 1:
        return f | EPI_RELU
    if act == 3:
        return f | EPI_CLIP
    return -1


@njit(nogil=True, cache=True, inline="always")
def _chunk(ci, nmc, m):
    """Rows [r0, r1) of M chunk ``ci`` of ``nmc``: whole MR tiles dealt out as evenly as possible."""
    nt = (m + MR - 1) // MR
    r0 = (ci * nt // nmc) * MR
    r1 = min(((ci + 1) * nt // nmc) * MR, m)
    return r0, r1


@njit(nogil=True, cache=True, inline="always")
def _finish(out, r0, rows, p0, p1, n, tail, bias, has_bias, z, has_z, act, alpha, beta, fused):
    """Copy the N-tail panel out of ``tail`` and run the epilogue over the task's block; with ``fused`` the full
    panels already had it in the microkernel, so only the tail panel's columns get it here."""
    c0 = p0 * NR
    c1 = min(p1 * NR, n)
    has_tail = c1 - c0 < p1 * NR - c0
    if has_tail:  # copy the valid columns of the tail panel
        tc = (p1 - 1) * NR
        for i in range(rows):
            for j in range(n - tc):
                out[r0 + i, tc + j] = tail[i * NR + j]
    if fused:
        if not has_tail:
            return
        c0 = (p1 - 1) * NR
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


@njit(nogil=True, cache=True, parallel=True)
def _gemm_driver(a, bp, k, n, out, bias, has_bias, z, has_z, act, alpha, beta, mc, pg, nmc):
    """out[:m, :n] = act(a @ B + bias + z); ``bp`` is B packed ``[npan][k][NR]``; tasks (nmc row chunks of at most
    ``mc`` rows) x (pg panels)."""
    m = a.shape[0]
    lda = a.strides[0] // 4
    ldo = out.strides[0] // 4
    ldz = z.strides[0] // 4
    efl = _epi_flags(has_bias, has_z, act)
    fused = efl >= 0
    if not fused:
        efl = 0
    lo = np.float32(alpha)
    hi = np.float32(beta)
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
        for k0 in range(0, k, KC):
            kc = min(KC, k - k0)
            accf = 1 if k0 > 0 else 0
            epi = efl if k0 + kc == k else 0
            for p in range(p0, p1):
                col0 = p * NR
                b_off = p * k * NR + k0 * NR
                if col0 + NR <= n:
                    _rows(a, r0 * lda + k0, lda, rows, bp, b_off, kc, out, r0 * ldo + col0, ldo, accf,
                          bias, col0, z, r0 * ldz + col0, ldz, epi, lo, hi)
                else:
                    _rows(a, r0 * lda + k0, lda, rows, bp, b_off, kc, tail, 0, NR, accf, bias, 0, z, 0, 0, 0, lo, hi)
        _finish(out, r0, rows, p0, p1, n, tail, bias, has_bias, z, has_z, act, alpha, beta, fused)


@njit(nogil=True, cache=True, inline="always")
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


@njit(nogil=True, cache=True, parallel=True)
def _conv_driver(x, bp, k, n, out, bias, has_bias, z, has_z, act, alpha, beta, mc, pg, nmc,
                 oh, ow, kw, sh, sw, dh, dw, pt, pl, xf, kh):
    """NHWC conv (group 1) as one parallel region: out (N*oh*ow, n) = act(im2col(x) @ B + bias + z). Each task
    builds its rows' im2col block for one K block (mc x KC floats, stays in L1/L2) right before the microkernels
    consume it; same tasks, K-block order and tiles as :func:`_gemm_driver`, so the results are identical."""
    m = out.shape[0]
    cg = x.shape[3]
    ohw = oh * ow
    ldo = out.strides[0] // 4
    ldz = z.strides[0] // 4
    efl = _epi_flags(has_bias, has_z, act)
    fused = efl >= 0
    if not fused:
        efl = 0
    lo = np.float32(alpha)
    hi = np.float32(beta)
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
                          bias, col0, z, r0 * ldz + col0, ldz, epi, lo, hi)
                else:
                    _rows(buf, 0, KC, rows, bp, b_off, kc, tail, 0, NR, accf, bias, 0, z, 0, 0, 0, lo, hi)
        _finish(out, r0, rows, p0, p1, n, tail, bias, has_bias, z, has_z, act, alpha, beta, fused)


# -- Python API -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackedB:
    """B[K, N] packed for this kernel: ``data`` is float32 ``[ceil(N/nr)][K][nr]``, zero-padded in N."""

    data: np.ndarray
    k: int
    n: int
    nr: int = NR
    layout: str = "f32_kn_panels"

    @property
    def panels(self) -> int:
        return (self.n + self.nr - 1) // self.nr


def pack_b(b: np.ndarray) -> PackedB:
    """Pack a constant B[K, N] once (lowering time) into ``[npan][K][NR]`` panels."""
    b = np.asarray(b)
    if b.ndim != 2:
        raise KernelError(f"{NAME}: B has shape {b.shape}; expected 2-D (K, N)")
    k, n = b.shape
    npan = (n + NR - 1) // NR
    buf = np.zeros((k, npan * NR), np.float32)
    buf[:, :n] = b
    data = np.ascontiguousarray(buf.reshape(k, npan, NR).transpose(1, 0, 2)).reshape(-1)
    return PackedB(data, k, n)


def available() -> bool:
    """True when this kernel may run: the host has avx512f and no non-AVX-512 ISA is forced (``config.isa``)."""
    from quantgraph.kernels import target

    forced = (config.get().isa or "").strip().lower()
    if forced:
        isa = target.ISAS.get(forced)
        if isa is None or "avx512f" not in isa.requires:
            return False
    return target.has("avx512f")


def blocking(m: int, n: int, k: int) -> tuple[int, int, int]:
    """(max rows per task, panels per task, row chunks): M is cut into ``nmc`` chunks of whole MR tiles, as even as
    possible, of at most 16*MR rows (the A block, mc x KC floats, stays in L2); a small odd chunk count is made even
    (prange deals tasks out in contiguous halves on two cores). The panels are split until there are >= 8 tasks, so
    short-M GEMMs still use every core.

    NOTE: the split never changes results: each row's accumulators and each panel's K-block order are the same
    whichever task computes them, so any thread count gives bit-identical output.
    """
    npan = (n + NR - 1) // NR
    ntile = -(-m // MR)
    nmc = -(-ntile // 16)
    if 1 < nmc < 16 and nmc % 2 and nmc < ntile:
        nmc += 1
    nmc = max(1, min(nmc, ntile))
    mc = -(-ntile // nmc) * MR
    pg = npan
    while nmc * ((npan + pg - 1) // pg) < 8 and pg > 1:
        pg = (pg + 1) // 2
    return mc, pg, nmc


def _fail(msg: str, node: str | None, op: str | None) -> KernelError:
    return KernelError(f"{msg}", node=node, op=op)


def bind(a: np.ndarray, packed: Any, out: np.ndarray, bias: np.ndarray | None = None, z: np.ndarray | None = None,
         act: int = 0, alpha: float = 0.0, beta: float = 0.0, *, node: str | None = None,
         op: str | None = None) -> tuple[Callable[..., Any], tuple]:
    """Check every argument and return the prebound step ``(fn, args)`` computing ``out = act(a @ B + bias + z)``.

    Raises:
        KernelError: wrong dtype/rank, B not packed by :func:`pack_b`, mismatched shapes, non-unit column stride.
    """
    if not isinstance(packed, PackedB):
        raise _fail(f"kernel '{NAME}': B is {type(packed).__name__}, not pre-packed; pack it with pack_b() "
                    f"(layout 'f32_kn_panels')", node, op)
    if packed.nr != NR or packed.data.dtype != np.float32 or packed.data.size != packed.panels * packed.k * NR:
        raise _fail(f"kernel '{NAME}': packed B has layout nr={packed.nr}, {packed.data.size} {packed.data.dtype}; "
                    f"expected nr={NR}, {packed.panels * packed.k * NR} float32", node, op)
    for name, arr in (("A", a), ("out", out), ("Z", z)):
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
            what = f"{arr.dtype} {arr.ndim}-D" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise _fail(f"kernel '{NAME}': {name} is {what}; expected a 2-D float32 array", node, op)
        if arr.size and (arr.shape[1] > 1 and arr.strides[1] != 4 or arr.strides[0] % 4):
            raise _fail(f"kernel '{NAME}': {name} has strides {arr.strides}; expected unit column stride", node, op)
    m, k = a.shape
    if k != packed.k:
        raise _fail(f"kernel '{NAME}': A is {a.shape} but packed B has K={packed.k}", node, op)
    if out.shape != (m, packed.n):
        raise _fail(f"kernel '{NAME}': out is {out.shape}; expected {(m, packed.n)}", node, op)
    if z is not None and z.shape != out.shape:
        raise _fail(f"kernel '{NAME}': Z is {z.shape}; expected {out.shape}", node, op)
    if not out.flags.writeable:
        raise _fail(f"kernel '{NAME}': out is read-only", node, op)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.float32 or bias.size != packed.n:
            raise _fail(f"kernel '{NAME}': bias is {bias.dtype} of {bias.size} values; expected {packed.n} float32",
                        node, op)
        bias = np.ascontiguousarray(bias.reshape(-1))
    mc, pg, nmc = blocking(m, packed.n, k)
    args = (a, packed.data, k, packed.n, out, _EMPTY1 if bias is None else bias, bias is not None,
            _EMPTY2 if z is None else z, z is not None, int(act), float(alpha), float(beta), mc, pg, nmc)
    if m == 0:
        return (_nothing, ())
    if k == 0:
        return (_zero_then, (out, args))
    return (_gemm_driver, args)


def conv_fusable(m: int, n: int, k: int, cg: int) -> bool:
    """Whether :func:`bind_conv` (im2col inside the GEMM tasks) beats a separate parallel im2col: the gathered
    runs are long enough to copy as vectors (>= 16 channels, or a window of >= 9 taps whose rows merge into one
    run, e.g. the 7x7 stem on 3 channels), and each row block is gathered once (the panels are not split over
    tasks, which happens only for short M, where the separate im2col is cheap anyway). Measured on ResNet-50."""
    mc, pg, nmc = blocking(m, n, k)
    return (cg >= LANES or k // cg >= 9) and pg >= (n + NR - 1) // NR


def bind_conv(x: np.ndarray, packed: Any, out: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None,
              act: int, alpha: float, beta: float, oh: int, ow: int, kh: int, kw: int,
              geo: tuple[int, int, int, int, int, int], *, node: str | None = None,
              op: str | None = None) -> tuple[Callable[..., Any], tuple]:
    """Prebound step for a group-1 NHWC conv with im2col fused into the GEMM tasks (:func:`_conv_driver`):
    ``out (N*oh*ow, M) = act(im2col(x) @ B + bias + z)``, x (N, H, W, C), B packed from (kh*kw*C, M);
    ``geo`` = (sh, sw, dh, dw, pt, pl). Arguments are checked as in :func:`bind`."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise _fail(f"kernel '{NAME}': conv input must be a 4-D float32 NHWC array", node, op)
    if x.shape[3] > 1 and x.strides[3] != 4:
        raise _fail(f"kernel '{NAME}': conv input has strides {x.strides}; expected unit channel stride", node, op)
    n_img = x.shape[0]
    k = kh * kw * x.shape[3]
    # reuse bind's checks with a stand-in A of the im2col shape (never read)
    fake_a = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (n_img * oh * ow, k), (0, 4))
    fn, args = bind(fake_a, packed, out, bias, z, act, alpha, beta, node=node, op=op)
    if fn is not _gemm_driver:  # M == 0 or K == 0: nothing to gather
        return fn, args
    xf = x.reshape(-1) if x.flags.c_contiguous else _EMPTY1
    return (_conv_driver, (x,) + args[1:] + (oh, ow, kw) + tuple(int(v) for v in geo) + (xf, kh))


def _nothing() -> None:
    """M == 0: no rows to compute."""


def _zero_then(out: np.ndarray, args: tuple) -> None:
    """K == 0: the product is zero; the epilogue still applies."""
    out[...] = 0.0
    a, bp, _, n, out_, bias, hb, z, hz, act, alpha, beta = args[:12]
    if hb:
        out_ += bias
    if hz:
        out_ += z
    if act:
        from quantgraph.kernels.fp32.eltwise_f32 import epilogue

        epilogue(out_, None, 0, None, act, alpha, beta)


def gemm(a: np.ndarray, packed: PackedB, out: np.ndarray | None = None, bias: np.ndarray | None = None,
         z: np.ndarray | None = None, act: int = 0, alpha: float = 0.0, beta: float = 0.0) -> np.ndarray:
    """``act(a @ B + bias + z)`` into ``out`` (allocated when None); see :func:`bind` for the checks."""
    if out is None:
        out = np.empty((a.shape[0] if isinstance(a, np.ndarray) and a.ndim == 2 else 0, packed.n
                        if isinstance(packed, PackedB) else 0), np.float32)
    fn, args = bind(a, packed, out, bias, z, act, alpha, beta)
    fn(*args)
    return out


def unpack_b(packed: PackedB) -> np.ndarray:
    """The dense B[K, N] back from its panels (slow twin / fallback paths)."""
    d = packed.data.reshape(packed.panels, packed.k, packed.nr).transpose(1, 0, 2).reshape(packed.k, -1)
    return np.ascontiguousarray(d[:, :packed.n])
