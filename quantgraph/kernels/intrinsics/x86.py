"""Every ``llvm.x86.*`` declaration the kernels use, in one table, and the Numba intrinsics built on them.

The main product is :func:`tile_kernel`: a Numba ``@intrinsic`` whose codegen emits a whole register-blocked
microkernel as LLVM IR (one internal ``alwaysinline`` function per (isa, kind, rows) in the calling module):

    C[r, j] = sum_g sum_t A[r, G*g + t] * B[g, j, t]      r < MR, j < NR = 32, g < kg, t < G

* ``kind="u8s8"``:  A u8, B s8, G = 4 (``vpdpbusd``); ``kind="s16s16"``: A, B s16, G = 2 (``vpdpwssd``).
* A is read in place, one 4-byte group per row broadcast to every lane; B is one packed column panel laid out as
  ``[kg][NR][G]`` (see ``packing.py``); C is int32 and is overwritten (not accumulated).
* All loads and stores are unaligned (``align 1``): numpy buffers carry no alignment guarantee.
* :func:`tile_epilogue_kernel` is the same tile followed by the fused epilogue of ``epilogue_ir.py``, storing the
  final u8/s8/f32/s32 values straight into the output (used for every full-width tile).

Exactness of the non-VNNI rungs: ``vpmaddubsw`` adds two u8*s8 products into a *saturating* s16 (255*127*2 > 32767).
We split every activation byte as ``a = lo + 128*hi`` with ``lo = a & 0x7f`` and ``hi = a >> 7``: ``lo*b`` pairs stay
within +-32512 and ``hi*b`` pairs within +-256, so neither ``vpmaddubsw`` can saturate; ``vpmaddwd`` by 1 and by 128
widens them to s32. The result is bit-identical to ``vpdpbusd`` (all int32 sums wrap mod 2**32 on every rung).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from llvmlite import ir

from quantgraph.kernels.intrinsics import epilogue_ir
from quantgraph.kernels.intrinsics.epilogue_ir import FusedEpilogue

# NOTE: LLVM 22 (llvm-project #155194) changed the VNNI multiplicand operands from <N x i32> to byte/word vectors;
# old declarations are auto-upgraded by the IR parser but not by llvmlite's in-memory builder, so we declare the
# form the installed LLVM expects. tests/kernels/test_intrinsics.py runs every entry on the host.
NR = 32  # output columns per packed panel / microkernel tile
GROUP_BYTES = 4  # bytes of A broadcast per row per step


def _llvm_major() -> int:
    import llvmlite.binding as llvm

    return int(llvm.llvm_version_info[0])


@dataclass(frozen=True)
class Decl:
    """An LLVM intrinsic: name, return type and operand types written as ``(elem_bits, lanes)`` pairs."""

    name: str
    ret: tuple[int, int]
    args: tuple[tuple[int, int], ...]

    def function(self, module: ir.Module) -> ir.Function:
        vec = lambda t: ir.VectorType(ir.IntType(t[0]), t[1])
        fnty = ir.FunctionType(vec(self.ret), [vec(a) for a in self.args])
        existing = module.globals.get(self.name)
        if existing is not None:
            return existing
        return ir.Function(module, fnty, self.name)


def _vnni(width_bits: int, elem: int) -> tuple[tuple[int, int], tuple[int, int]]:
    lanes32 = width_bits // 32
    if _llvm_major() >= 22:
        return (32, lanes32), (elem, width_bits // elem)
    return (32, lanes32), (32, lanes32)


@functools.lru_cache(maxsize=None)
def decls() -> dict[str, Decl]:
    """The table: short name -> declaration, for the installed LLVM."""
    table: dict[str, Decl] = {}
    for bits, suffix in ((512, "512"), (256, "256")):
        acc, b8 = _vnni(bits, 8)
        _, w16 = _vnni(bits, 16)
        table[f"vpdpbusd.{suffix}"] = Decl(f"llvm.x86.avx512.vpdpbusd.{suffix}", acc, (acc, b8, b8))
        table[f"vpdpwssd.{suffix}"] = Decl(f"llvm.x86.avx512.vpdpwssd.{suffix}", acc, (acc, w16, w16))
    table["pmaddubsw.512"] = Decl("llvm.x86.avx512.pmaddubs.w.512", (16, 32), ((8, 64), (8, 64)))
    table["pmaddwd.512"] = Decl("llvm.x86.avx512.pmaddw.d.512", (32, 16), ((16, 32), (16, 32)))
    table["pmaddubsw.256"] = Decl("llvm.x86.avx2.pmadd.ub.sw", (16, 16), ((8, 32), (8, 32)))
    table["pmaddwd.256"] = Decl("llvm.x86.avx2.pmadd.wd", (32, 8), ((16, 16), (16, 16)))
    return table


# isa -> (lanes of int32 per vector, dot method for u8s8, dot method for s16s16)
ISA_DOT: dict[str, tuple[int, str, str]] = {
    "avx512vnni": (16, "vpdpbusd", "vpdpwssd"),
    "avxvnni": (8, "vpdpbusd", "vpdpwssd"),
    "avx512bw": (16, "maddubs_split", "pmaddwd"),
    "avx2": (8, "maddubs_split", "pmaddwd"),
}
KIND_GROUP = {"u8s8": 4, "s16s16": 2}  # elements of A per 4-byte group


def _splat(b: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    vty = ir.VectorType(scalar.type, lanes)
    v = b.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return b.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), lanes), None))


def _as(b: ir.IRBuilder, v: ir.Value, elem_bits: int) -> ir.Value:
    lanes = v.type.count * v.type.element.width // elem_bits
    ty = ir.VectorType(ir.IntType(elem_bits), lanes)
    return v if v.type == ty else b.bitcast(v, ty)


def _call(b: ir.IRBuilder, key: str, *vals: ir.Value) -> ir.Value:
    d = decls()[key]
    fn = d.function(b.module)
    args = [_as(b, v, bits) for v, (bits, _) in zip(vals, d.args)]
    return b.call(fn, args)


def _dot(b: ir.IRBuilder, method: str, lanes: int, acc: ir.Value, a32: ir.Value, bvec: ir.Value) -> ir.Value:
    """acc + dot(broadcast(a32), bvec) per int32 lane, exactly (wrapping mod 2**32)."""
    sfx = "512" if lanes == 16 else "256"
    i32 = ir.IntType(32)
    if method in ("vpdpbusd", "vpdpwssd"):
        return _call(b, f"{method}.{sfx}", acc, _splat(b, a32, lanes), bvec)
    if method == "pmaddwd":
        return b.add(acc, _call(b, f"pmaddwd.{sfx}", _splat(b, a32, lanes), bvec))
    assert method == "maddubs_split", method
    lo = _splat(b, b.and_(a32, ir.Constant(i32, 0x7F7F7F7F)), lanes)
    hi = _splat(b, b.and_(b.lshr(a32, ir.Constant(i32, 7)), ir.Constant(i32, 0x01010101)), lanes)
    ones = ir.Constant(ir.VectorType(ir.IntType(16), 2 * lanes), [1] * (2 * lanes))
    w128 = ir.Constant(ir.VectorType(ir.IntType(16), 2 * lanes), [128] * (2 * lanes))
    s_lo = _call(b, f"pmaddwd.{sfx}", _call(b, f"pmaddubsw.{sfx}", lo, bvec), ones)
    s_hi = _call(b, f"pmaddwd.{sfx}", _call(b, f"pmaddubsw.{sfx}", hi, bvec), w128)
    return b.add(acc, b.add(s_lo, s_hi))


UNROLL = 4  # K groups per main-loop iteration (the remainder loop does one)


def build_tile_function(module: ir.Module, isa: str, kind: str, mr: int,
                        fused: FusedEpilogue | None = None) -> ir.Function:
    """Emit (once per module) ``void tile(i8* a, i64 lda_bytes, i8* b, i64 kg, i8* c, i64 ldc_bytes)``.

    With ``fused``, the tail parameters are ``epilogue_ir.PARAM_NAMES`` instead of (c, ldc) and the tile is
    written through the fused epilogue. Accumulators live in allocas that LLVM's SROA promotes to registers; the
    K loop is unrolled ``UNROLL`` times with a one-group remainder loop.
    """
    name = f"quantgraph.tile.{isa}.{kind}.{mr}x{NR}" + (f".{fused.tag}" if fused else "")
    found = module.globals.get(name)
    if found is not None:
        return found
    lanes, dot_u8, dot_s16 = ISA_DOT[isa]
    method = dot_u8 if kind == "u8s8" else dot_s16
    nv = NR // lanes
    vbytes = lanes * 4
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    p8 = i8.as_pointer()
    vty = ir.VectorType(i32, lanes)
    tail = epilogue_ir.param_types() if fused else [p8, i64]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [p8, i64, p8, i64, *tail]), name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    a, lda, bp, kg = fn.args[:4]
    blocks = {n: fn.append_basic_block(n) for n in ("entry", "main", "rem_check", "rem", "done")}
    b = ir.IRBuilder(blocks["entry"])
    acc = [[b.alloca(vty) for _ in range(nv)] for _ in range(mr)]
    g_var = b.alloca(i64)
    for row in acc:
        for slot in row:
            b.store(ir.Constant(vty, None), slot)
    b.store(ir.Constant(i64, 0), g_var)
    kmain = b.and_(kg, ir.Constant(i64, -UNROLL))
    b.cbranch(b.icmp_signed(">", kmain, ir.Constant(i64, 0)), blocks["main"], blocks["rem_check"])

    def step(g: ir.Value) -> None:
        bbase = b.mul(g, ir.Constant(i64, nv * vbytes))
        bvecs = [b.load(b.bitcast(b.gep(bp, [b.add(bbase, ir.Constant(i64, v * vbytes))]), vty.as_pointer()),
                        align=1) for v in range(nv)]
        acol = b.mul(g, ir.Constant(i64, GROUP_BYTES))
        for r in range(mr):
            rowoff = b.add(b.mul(lda, ir.Constant(i64, r)), acol)
            a32 = b.load(b.bitcast(b.gep(a, [rowoff]), i32.as_pointer()), align=1)
            for v in range(nv):
                b.store(_dot(b, method, lanes, b.load(acc[r][v]), a32, bvecs[v]), acc[r][v])

    b.position_at_end(blocks["main"])
    g = b.load(g_var)
    for u in range(UNROLL):
        step(b.add(g, ir.Constant(i64, u)))
    g1 = b.add(g, ir.Constant(i64, UNROLL))
    b.store(g1, g_var)
    b.cbranch(b.icmp_signed("<", g1, kmain), blocks["main"], blocks["rem_check"])

    b.position_at_end(blocks["rem_check"])
    b.cbranch(b.icmp_signed("<", b.load(g_var), kg), blocks["rem"], blocks["done"])
    b.position_at_end(blocks["rem"])
    g = b.load(g_var)
    step(g)
    g1 = b.add(g, ir.Constant(i64, 1))
    b.store(g1, g_var)
    b.cbranch(b.icmp_signed("<", g1, kg), blocks["rem"], blocks["done"])

    b.position_at_end(blocks["done"])
    if fused is not None:
        epilogue_ir.emit(b, fused, [[b.load(slot) for slot in row] for row in acc], lanes,
                         dict(zip(epilogue_ir.PARAM_NAMES, fn.args[4:])))
        b.ret_void()
        return fn
    c, ldc = fn.args[4:]
    # NOTE: stored as 256-bit halves: the epilogue reading them back is vectorized with ymm (LLVM prefers 256-bit
    # vectors on these cores), and a ymm load from the upper half of a zmm store cannot be store-forwarded.
    hty = ir.VectorType(i32, 8)
    for r in range(mr):
        for v in range(nv):
            val = b.load(acc[r][v])
            for h in range(lanes // 8):
                half = val if lanes == 8 else b.shuffle_vector(
                    val, ir.Constant(vty, ir.Undefined), ir.Constant(hty, list(range(8 * h, 8 * h + 8))))
                off = b.add(b.mul(ldc, ir.Constant(i64, r)), ir.Constant(i64, v * vbytes + 32 * h))
                b.store(half, b.bitcast(b.gep(c, [off]), hty.as_pointer()), align=1)
    b.ret_void()
    return fn


@functools.lru_cache(maxsize=None)
def tile_kernel(isa: str, kind: str, mr: int):
    """Numba intrinsic ``tile(a, a_off, lda, b, b_off, kg, c, c_off, ldc)`` for one (isa, kind, MR).

    Offsets and leading dimensions are in elements of the respective array; ``a`` and ``b`` hold ``kind``'s
    element types, ``c`` is int32. The caller guarantees every address touched is inside its array.
    """
    from numba import types
    from numba.extending import intrinsic

    if isa not in ISA_DOT or kind not in KIND_GROUP:
        raise ValueError(f"no microkernel for isa={isa!r} kind={kind!r}")

    @intrinsic
    def tile(typingctx, a, a_off, lda, b, b_off, kg, c, c_off, ldc):
        arrays = (a, b, c)
        ints = (a_off, lda, b_off, kg, c_off, ldc)
        if not all(isinstance(t, types.Array) for t in arrays) or not all(isinstance(t, types.Integer) for t in ints):
            return None
        sig = types.void(a, a_off, lda, b, b_off, kg, c, c_off, ldc)

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            p8 = ir.IntType(8).as_pointer()

            def base(idx: int, off_idx: int) -> ir.Value:
                aty = signature.args[idx]
                arr = context.make_array(aty)(context, builder, args[idx])
                item = context.get_abi_sizeof(context.get_data_type(aty.dtype))
                off = builder.mul(context.cast(builder, args[off_idx], signature.args[off_idx], types.int64),
                                  ir.Constant(i64, item))
                return builder.gep(builder.bitcast(arr.data, p8), [off]), item

            def as64(idx: int) -> ir.Value:
                return context.cast(builder, args[idx], signature.args[idx], types.int64)

            pa, ia = base(0, 1)
            pb, _ = base(3, 4)
            pc, ic = base(6, 7)
            fn = build_tile_function(builder.module, isa, kind, mr)
            builder.call(fn, [pa, builder.mul(as64(2), ir.Constant(i64, ia)), pb, as64(5), pc,
                              builder.mul(as64(8), ir.Constant(i64, ic))])
            return context.get_dummy_value()

        return sig, codegen

    tile.__name__ = f"tile_{isa}_{kind}_{mr}"
    return tile


def epilogue_call_args(context, builder, signature, args) -> list:
    """Lower the Numba arguments of a fused tile/block intrinsic to the IR function's parameters.

    Numba side: ``(a, a_off, lda, b, b_off, kg, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp, lo,
    hi, oinv, ozp, out, out_off, ldo)`` (offsets and leading dimensions in elements); IR side: byte pointers and
    byte strides followed by the scalars, in ``epilogue_ir.PARAM_NAMES`` order.
    """
    from numba import types

    i64 = ir.IntType(64)
    p8 = ir.IntType(8).as_pointer()
    tys = signature.args

    def cast(idx: int, ty) -> ir.Value:
        return context.cast(builder, args[idx], tys[idx], ty)

    def item(idx: int) -> int:
        return context.get_abi_sizeof(context.get_data_type(tys[idx].dtype))

    def ptr(idx: int, off_idx: int) -> ir.Value:
        arr = context.make_array(tys[idx])(context, builder, args[idx])
        off = builder.mul(cast(off_idx, types.int64), ir.Constant(i64, item(idx)))
        return builder.gep(builder.bitcast(arr.data, p8), [off])

    def stride(idx: int, ld_idx: int) -> ir.Value:
        return builder.mul(cast(ld_idx, types.int64), ir.Constant(i64, item(idx)))

    return [ptr(0, 1), stride(0, 2), ptr(3, 4), cast(5, types.int64),
            ptr(6, 9), ptr(7, 9), ptr(8, 9), ptr(10, 11), stride(10, 12),
            cast(13, types.float32), cast(14, types.int32), cast(15, types.float32),
            cast(16, types.float32), cast(17, types.float32), cast(18, types.float32),
            ptr(19, 20), stride(19, 21)]


@functools.lru_cache(maxsize=None)
def tile_epilogue_kernel(isa: str, kind: str, mr: int, has_bias: bool, has_res: bool, act: str):
    """Numba intrinsic: a full-width tile plus the fused epilogue, written straight into the output.

    ``tile(a, a_off, lda, b, b_off, kg, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp, lo, hi,
    oinv, ozp, out, out_off, ldo)``: per-channel arrays are read at ``ch_off``; the residual and the output are
    addressed by element offset and leading dimension (elements). The output and residual dtypes come from the
    argument types; ``res`` is not touched unless ``has_res``. Every column of the tile must be valid.
    """
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def tile(typingctx, a, a_off, lda, b, b_off, kg, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp,
             lo, hi, oinv, ozp, out, out_off, ldo):
        arrays = (a, b, bias32, scale, biasf, res, out)
        if not all(isinstance(t, types.Array) for t in arrays):
            return None
        sig = types.void(a, a_off, lda, b, b_off, kg, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp,
                         lo, hi, oinv, ozp, out, out_off, ldo)
        residual = str(res.dtype) if has_res else "none"
        fused = FusedEpilogue(str(out.dtype), has_bias, residual, act)

        def codegen(context, builder, signature, args):
            fn = build_tile_function(builder.module, isa, kind, mr, fused)
            builder.call(fn, epilogue_call_args(context, builder, signature, args))
            return context.get_dummy_value()

        return sig, codegen

    tile.__name__ = f"tile_epi_{isa}_{kind}_{mr}"
    return tile


@functools.lru_cache(maxsize=None)
def dot_probe(isa: str, kind: str):
    """Intrinsic ``probe(acc_i32[lanes], a_i32, b_i32[lanes]) -> None`` applying one dot step in place (tests)."""
    from numba import types
    from numba.extending import intrinsic

    lanes, dot_u8, dot_s16 = ISA_DOT[isa]
    method = dot_u8 if kind == "u8s8" else dot_s16

    @intrinsic
    def probe(typingctx, acc, a32, bvec):
        sig = types.void(acc, a32, bvec)

        def codegen(context, builder, signature, args):
            vty = ir.VectorType(ir.IntType(32), lanes)
            pacc = builder.bitcast(context.make_array(signature.args[0])(context, builder, args[0]).data,
                                   vty.as_pointer())
            pb = builder.bitcast(context.make_array(signature.args[2])(context, builder, args[2]).data,
                                 vty.as_pointer())
            a = context.cast(builder, args[1], signature.args[1], types.int32)
            res = _dot(builder, method, lanes, builder.load(pacc, align=1), a, builder.load(pb, align=1))
            builder.store(res, pacc, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return probe


@functools.lru_cache(maxsize=None)
def vnni_peak_loop(lanes: int = 16, chains: int = 12):
    """Intrinsic ``peak(n) -> int64``: n iterations of ``chains`` independent vpdpbusd (peak measurement).

    Each iteration does ``chains * lanes * 4 * 2`` int8 ops; the sum of the accumulators is returned so LLVM
    cannot drop the loop.
    """
    from numba import types
    from numba.extending import intrinsic

    key = "vpdpbusd.512" if lanes == 16 else "vpdpbusd.256"

    @intrinsic
    def peak(typingctx, n):
        if not isinstance(n, types.Integer):
            return None
        sig = types.int64(n)

        def codegen(context, builder, signature, args):
            i32, i64 = ir.IntType(32), ir.IntType(64)
            vty = ir.VectorType(i32, lanes)
            count = context.cast(builder, args[0], signature.args[0], types.int64)
            pre = builder.block
            loop = builder.append_basic_block("peak.loop")
            done = builder.append_basic_block("peak.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            i = builder.phi(i64)
            accs = [builder.phi(vty) for _ in range(chains)]
            x = ir.Constant(vty, [0x01010101] * lanes)
            y = ir.Constant(vty, [0x01FF0102] * lanes)
            new = [_call(builder, key, acc, x, y) for acc in accs]
            i1 = builder.add(i, ir.Constant(i64, 1))
            i.add_incoming(ir.Constant(i64, 0), pre)
            i.add_incoming(i1, loop)
            for k, (acc, nv) in enumerate(zip(accs, new)):
                acc.add_incoming(ir.Constant(vty, [k] * lanes), pre)
                acc.add_incoming(nv, loop)
            builder.cbranch(builder.icmp_signed("<", i1, count), loop, done)
            builder.position_at_end(done)
            total = new[0]
            for nv in new[1:]:
                total = builder.add(total, nv)
            s = builder.extract_element(total, ir.Constant(i32, 0))
            return builder.sext(s, i64)

        return sig, codegen

    return peak
