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
  stream A from L2), then panels, then row tiles. After the last K block the fused epilogue (per-column bias,
  residual Z, activation; ``eltwise_f32.act_row``) runs over the task's block while it is hot.

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


# -- the microkernel as LLVM IR ---------------------------------------------------------------------------------
def build_tile_function(module: ir.Module, mr: int, nr: int) -> ir.Function:
    """Emit (once per module) ``void tile(float* a, i64 lda, float* b, i64 kc, float* c, i64 ldc, i64 acc)``.

    ``c[r*ldc + j] (+)= sum_k a[r*lda + k] * b[k*nr + j]`` for r < mr, j < nr; with ``acc == 0`` C is overwritten,
    otherwise added to (K blocks after the first). Strides are in floats. Accumulators are allocas that SROA
    promotes to registers.
    """
    name = f"quantgraph.tile.f32.avx512.{mr}x{nr}"
    found = module.globals.get(name)
    if found is not None:
        return found
    nv = nr // LANES
    f32, i64 = ir.FloatType(), ir.IntType(64)
    pf = f32.as_pointer()
    vty = ir.VectorType(f32, LANES)
    pv = vty.as_pointer()
    fma = module.globals.get("llvm.fma.v16f32")
    if fma is None:
        fma = ir.Function(module, ir.FunctionType(vty, [vty, vty, vty]), "llvm.fma.v16f32")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pf, i64, pf, i64, pf, i64, i64]), name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    a, lda, bp, kc, c, ldc, accflag = fn.args
    names = ("entry", "load_c", "zero_c", "start", "main", "rem_check", "rem", "done")
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

    b.position_at_end(blk["done"])
    for r in range(mr):
        for v in range(nv):
            b.store(b.load(acc[r][v]), b.bitcast(b.gep(crow[r], [ir.Constant(i64, v * LANES)]), pv), align=4)
    b.ret_void()
    return fn


@functools.lru_cache(maxsize=None)
def tile_kernel(mr: int, nr: int = NR):
    """Numba intrinsic ``tile(a, a_off, lda, b, b_off, kc, c, c_off, ldc, acc)`` for one (MR, NR).

    ``a``, ``b``, ``c`` are float32 arrays of any rank/layout; offsets and strides are in elements from each
    array's data pointer. The caller guarantees every address touched is inside its array.
    """
    if nr % LANES or mr < 1:
        raise ValueError(f"no fp32 microkernel for {mr}x{nr}")

    @intrinsic
    def tile(typingctx, a, a_off, lda, b, b_off, kc, c, c_off, ldc, acc):
        arrays = (a, b, c)
        ints = (a_off, lda, b_off, kc, c_off, ldc, acc)
        if not all(isinstance(t, types.Array) and t.dtype == types.float32 for t in arrays) \
                or not all(isinstance(t, types.Integer) for t in ints):
            return None
        sig = types.void(a, a_off, lda, b, b_off, kc, c, c_off, ldc, acc)

        def codegen(context, builder, signature, args):
            pf = ir.FloatType().as_pointer()

            def as64(idx: int) -> ir.Value:
                return context.cast(builder, args[idx], signature.args[idx], types.int64)

            def ptr(idx: int, off_idx: int) -> ir.Value:
                arr = context.make_array(signature.args[idx])(context, builder, args[idx])
                return builder.gep(builder.bitcast(arr.data, pf), [as64(off_idx)])

            fn = build_tile_function(builder.module, mr, nr)
            builder.call(fn, [ptr(0, 1), as64(2), ptr(3, 4), as64(5), ptr(6, 7), as64(8), as64(9)])
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
def _rows(a, a_off, lda, rows, bp, b_off, kc, c, c_off, ldc, accf):
    """``rows`` rows of A times one B micro-panel into C: main tiles, then the 8/4/2/1 tail."""
    r = 0
    while r + MR <= rows:
        _T_MAIN(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf)
        r += MR
    if MR > 8 and r + 8 <= rows:
        _T8(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf)
        r += 8
    if r + 4 <= rows:
        _T4(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf)
        r += 4
    if r + 2 <= rows:
        _T2(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf)
        r += 2
    if r < rows:
        _T1(a, a_off + r * lda, lda, bp, b_off, kc, c, c_off + r * ldc, ldc, accf)


@njit(nogil=True, cache=True, parallel=True)
def _gemm_driver(a, bp, k, n, out, bias, has_bias, z, has_z, act, alpha, beta, mc, pg):
    """out[:m, :n] = act(a @ B + bias + z); ``bp`` is B packed ``[npan][k][NR]``; tasks (mc rows) x (pg panels)."""
    m = a.shape[0]
    lda = a.strides[0] // 4
    ldo = out.strides[0] // 4
    npan = (n + NR - 1) // NR
    nmc = (m + mc - 1) // mc
    npg = (npan + pg - 1) // pg
    for t in prange(nmc * npg):
        ci = t // npg
        p0 = (t - ci * npg) * pg
        p1 = min(p0 + pg, npan)
        r0 = ci * mc
        rows = min(mc, m - r0)
        # N-tail panel: computed into a scratch tile block (ldc = NR), copied out after the last K block
        tail = np.zeros(mc * NR, np.float32)
        for k0 in range(0, k, KC):
            kc = min(KC, k - k0)
            accf = 1 if k0 > 0 else 0
            for p in range(p0, p1):
                col0 = p * NR
                b_off = p * k * NR + k0 * NR
                if col0 + NR <= n:
                    _rows(a, r0 * lda + k0, lda, rows, bp, b_off, kc, out, r0 * ldo + col0, ldo, accf)
                else:
                    _rows(a, r0 * lda + k0, lda, rows, bp, b_off, kc, tail, 0, NR, accf)
        c0 = p0 * NR
        c1 = min(p1 * NR, n)
        if c1 - c0 < p1 * NR - c0:  # copy the valid columns of the tail panel
            tc = (p1 - 1) * NR
            for i in range(rows):
                for j in range(n - tc):
                    out[r0 + i, tc + j] = tail[i * NR + j]
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


def blocking(m: int, n: int, k: int) -> tuple[int, int]:
    """(rows per task, panels per task): up to 16*MR rows (the A block, mc x KC floats, stays in L2), and the
    panels split until there are >= 8 tasks, so short-M GEMMs still use every core.

    NOTE: the split never changes results: each row's accumulators and each panel's K-block order are the same
    whichever task computes them, so any thread count gives bit-identical output.
    """
    npan = (n + NR - 1) // NR
    mc = min(max(MR, -(-m // MR) * MR), 16 * MR)
    nmc = (m + mc - 1) // mc
    pg = npan
    while nmc * ((npan + pg - 1) // pg) < 8 and pg > 1:
        pg = (pg + 1) // 2
    return mc, pg


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
    mc, pg = blocking(m, packed.n, k)
    args = (a, packed.data, k, packed.n, out, _EMPTY1 if bias is None else bias, bias is not None,
            _EMPTY2 if z is None else z, z is not None, int(act), float(alpha), float(beta), mc, pg)
    if m == 0:
        return (_nothing, ())
    if k == 0:
        return (_zero_then, (out, args))
    return (_gemm_driver, args)


def _nothing() -> None:
    """M == 0: no rows to compute."""


def _zero_then(out: np.ndarray, args: tuple) -> None:
    """K == 0: the product is zero; the epilogue still applies."""
    out[...] = 0.0
    a, bp, _, n, out_, bias, hb, z, hz, act, alpha, beta, _, _ = args
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
