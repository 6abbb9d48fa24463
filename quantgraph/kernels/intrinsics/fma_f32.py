"""The packed fp32 GEMM microkernel as LLVM IR, one generator for every vector width (AVX-512 zmm, AVX2 ymm).

:func:`tile_kernel` is a Numba ``@intrinsic`` whose codegen emits an ``MR x NR`` register tile (``MR * NR/lanes``
vector accumulators) as one internal ``alwaysinline`` function per (isa, rows, columns) in the calling module: per k,
``NR/lanes`` unaligned vector loads of the packed B row and one broadcast scalar of A per row into
``llvm.fma.v<lanes>f32``, the K loop unrolled ``UNROLL`` times; on the last K block an optional epilogue (bias,
residual, ReLU or clip) runs on the accumulators before the store. The ISA only sets the vector type (``LANES``),
so the intrinsic names (``llvm.fma.v16f32`` / ``llvm.fma.v8f32``) and the function names differ per ISA while the
arithmetic (one FMA per product, in k order) is the same: every ISA gives the same bits. ``prefetch`` variants issue,
per k, ``llvm.prefetch`` (into L1) of the B row that many bytes ahead.
"""
from __future__ import annotations

import functools

from llvmlite import ir

# float32 lanes of one vector register per ISA (the kernel-name suffix: gemm_f32_avx512, gemm_f32_avx2)
LANES = {"avx512": 16, "avx2": 8}
UNROLL = 4  # K steps per main-loop iteration
# epilogue flags of the microkernel (last K block only): applied to the accumulators before the store
EPI_BIAS, EPI_Z, EPI_RELU, EPI_CLIP = 1, 2, 4, 8


def build_tile_function(module: ir.Module, isa: str, mr: int, nr: int, prefetch: int = 0) -> ir.Function:
    """Emit (once per module) ``void tile(float* a, i64 lda, float* b, i64 kc, float* c, i64 ldc, i64 acc,
    float* bias, float* z, i64 ldz, i64 epi, float lo, float hi)``.

    ``c[r*ldc + j] (+)= sum_k a[r*lda + k] * b[k*nr + j]`` for r < mr, j < nr; with ``acc == 0`` C is overwritten,
    otherwise added to (K blocks after the first). Strides are in floats. Accumulators are allocas that SROA
    promotes to registers. ``epi`` (bit flags ``EPI_*``, nonzero only on the last K block) applies the epilogue
    to the accumulators before the store, in the post-pass order: ``+ bias[j]`` (one vector load per vector of
    columns), ``+ z[r*ldz + j]``, then ReLU (``maxnum`` with 0) or clip (``maxnum`` lo, ``minnum`` hi).
    """
    name = f"quantgraph.tile.f32.{isa}.{mr}x{nr}" + (f".pf{prefetch}" if prefetch else "") + ".epi"
    found = module.globals.get(name)
    if found is not None:
        return found
    lanes = LANES[isa]
    nv = nr // lanes
    f32, i64 = ir.FloatType(), ir.IntType(64)
    pf = f32.as_pointer()
    vty = ir.VectorType(f32, lanes)
    pv = vty.as_pointer()

    def intr(iname: str, nargs: int) -> ir.Function:
        f = module.globals.get(iname)
        if f is None:
            f = ir.Function(module, ir.FunctionType(vty, [vty] * nargs), iname)
        return f

    fma = intr(f"llvm.fma.v{lanes}f32", 3)
    vmax = intr(f"llvm.maxnum.v{lanes}f32", 2)
    vmin = intr(f"llvm.minnum.v{lanes}f32", 2)
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

    def vload(p: ir.Value, off: int) -> ir.Value:
        return b.load(b.bitcast(b.gep(p, [ir.Constant(i64, off)]), pv), align=4)

    def splat(s: ir.Value) -> ir.Value:
        one = b.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
        return b.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                ir.Constant(ir.VectorType(ir.IntType(32), lanes), None))

    b.store(ir.Constant(i64, 0), k_var)
    b.cbranch(b.icmp_signed("!=", accflag, ir.Constant(i64, 0)), blk["load_c"], blk["zero_c"])

    b.position_at_end(blk["load_c"])
    for r in range(mr):
        for v in range(nv):
            b.store(vload(crow[r], v * lanes), acc[r][v])
    b.branch(blk["start"])
    b.position_at_end(blk["zero_c"])
    for row in acc:
        for slot in row:
            b.store(ir.Constant(vty, None), slot)
    b.branch(blk["start"])

    b.position_at_end(blk["start"])
    kmain = b.and_(kc, ir.Constant(i64, -UNROLL))
    b.cbranch(b.icmp_signed(">", kmain, ir.Constant(i64, 0)), blk["main"], blk["rem_check"])

    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    pfn = None
    if prefetch:
        pfn = module.globals.get("llvm.prefetch.p0i8")
        if pfn is None:
            pfn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")

    def step(k: ir.Value) -> None:
        brow = b.gep(bp, [b.mul(k, ir.Constant(i64, nr))])
        bvec = [vload(brow, v * lanes) for v in range(nv)]
        if pfn is not None:
            for line in range(0, nr * 4, 64):
                addr = b.bitcast(b.gep(brow, [ir.Constant(i64, (prefetch + line) // 4)]), i8p)
                b.call(pfn, [addr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        for r in range(mr):
            s = splat(b.load(b.gep(arow[r], [k]), align=4))
            for v in range(nv):
                b.store(b.call(fma, [s, bvec[v], b.load(acc[r][v])]), acc[r][v])

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

    b.position_at_end(blk["done"])
    b.cbranch(has(EPI_BIAS), blk["epi_bias"], blk["epi_z_check"])
    b.position_at_end(blk["epi_bias"])
    bvec = [vload(biasp, v * lanes) for v in range(nv)]
    update(lambda r, v, x: b.fadd(x, bvec[v]))
    b.branch(blk["epi_z_check"])
    b.position_at_end(blk["epi_z_check"])
    b.cbranch(has(EPI_Z), blk["epi_z"], blk["epi_act_check"])
    b.position_at_end(blk["epi_z"])
    zrow = [b.gep(zp, [b.mul(ldz, ir.Constant(i64, r))]) for r in range(mr)]
    update(lambda r, v, x: b.fadd(x, vload(zrow[r], v * lanes)))
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
            b.store(b.load(acc[r][v]), b.bitcast(b.gep(crow[r], [ir.Constant(i64, v * lanes)]), pv), align=4)
    b.ret_void()
    return fn


@functools.lru_cache(maxsize=None)
def tile_kernel(isa: str, mr: int, nr: int, prefetch: int = 0):
    """Numba intrinsic ``tile(a, a_off, lda, b, b_off, kc, c, c_off, ldc, acc, bias, bias_off, z, z_off, ldz, epi,
    lo, hi)`` for one (isa, MR, NR); ``prefetch`` > 0: bytes ahead of each B row to prefetch.

    ``a``, ``b``, ``c``, ``bias``, ``z`` are float32 arrays of any rank/layout; offsets and strides are in elements
    from each array's data pointer. ``bias`` / ``z`` are read only when ``epi`` has ``EPI_BIAS`` / ``EPI_Z``. The
    caller guarantees every address touched is inside its array.
    """
    from numba import types
    from numba.extending import intrinsic

    if isa not in LANES or nr % LANES[isa] or mr < 1 or prefetch < 0:
        raise ValueError(f"no fp32 microkernel for isa {isa!r}, {mr}x{nr}, prefetch {prefetch}")

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

            fn = build_tile_function(builder.module, isa, mr, nr, prefetch)
            builder.call(fn, [ptr(0, 1), as64(2), ptr(3, 4), as64(5), ptr(6, 7), as64(8), as64(9),
                              ptr(10, 11), ptr(12, 13), as64(14), as64(15), as32f(16), as32f(17)])
            return context.get_dummy_value()

        return sig, codegen

    tile.__name__ = f"tile_f32_{isa}_{mr}x{nr}" + (f"_pf{prefetch}" if prefetch else "")
    return tile


def fma_peak_loop(lanes: int, chains: int = 12):
    """Intrinsic ``peak(n) -> int64``: n iterations of ``chains`` independent ``llvm.fma.v<lanes>f32`` (for
    measuring the FMA peak: ``chains * lanes * 2`` flops per iteration); the accumulators' sum is returned (as an
    integer, like ``x86.vnni_peak_loop``) so LLVM cannot drop the loop."""
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def peak(typingctx, n):
        if not isinstance(n, types.Integer):
            return None
        sig = types.int64(n)

        def codegen(context, builder, signature, args):
            f32, i64 = ir.FloatType(), ir.IntType(64)
            vty = ir.VectorType(f32, lanes)
            fname = f"llvm.fma.v{lanes}f32"
            fma = builder.module.globals.get(fname)
            if fma is None:
                fma = ir.Function(builder.module, ir.FunctionType(vty, [vty] * 3), fname)
            count = context.cast(builder, args[0], signature.args[0], types.int64)
            pre = builder.block
            loop = builder.append_basic_block("fpeak.loop")
            done = builder.append_basic_block("fpeak.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            i = builder.phi(i64)
            accs = [builder.phi(vty) for _ in range(chains)]
            x = ir.Constant(vty, [0.999] * lanes)
            y = ir.Constant(vty, [1e-3] * lanes)
            new = [builder.call(fma, [acc, x, y]) for acc in accs]
            i1 = builder.add(i, ir.Constant(i64, 1))
            i.add_incoming(ir.Constant(i64, 0), pre)
            i.add_incoming(i1, loop)
            for k, (acc, nv) in enumerate(zip(accs, new)):
                # NOTE: no chain may start at 1.0, the fixed point of acc * 0.999 + 0.001: LLVM folds it away
                acc.add_incoming(ir.Constant(vty, [float(k + 2)] * lanes), pre)
                acc.add_incoming(nv, loop)
            builder.cbranch(builder.icmp_signed("<", i1, count), loop, done)
            builder.position_at_end(done)
            total = new[0]
            for nv in new[1:]:
                total = builder.fadd(total, nv)
            return builder.fptosi(builder.extract_element(total, ir.Constant(ir.IntType(32), 0)), i64)

        return sig, codegen

    return peak
