"""AMX (``tdpbusd`` on tile registers) strip kernel, emitted as LLVM IR with fixed tile numbers.

One call multiplies a block of ``rows`` (<= 32) rows of A by ``npan`` packed column panels (32 columns each) over
``nk`` K-steps of 64 bytes, with the tile configuration loaded once for the whole strip:

* tiles: C in tmm0..3 (rows 0-15 / 16-31 x columns 0-15 / 16-31), A in tmm4/5, B in tmm6/7. The ``rmode`` 16
  variant uses only tmm0/1 (C), tmm4 (A) and tmm6/7 (B). ``rows`` is written into the configuration at run time,
  so tails cost no padding: the A tiles read and the C tiles write only the valid rows.
* A is row-major, ``lda`` bytes between rows (64-byte aligned rows are ~1.7x faster: a misaligned tile row spans
  two cache lines, so callers copy A into aligned buffers). B uses the ``amx`` layout of ``packing.py``: per panel
  and K-step, two contiguous 1 KiB tiles (16 K-groups x 16 columns x 4 bytes), panels ``pstride`` bytes apart.
* K may be split across calls: ``first`` starts from zero, otherwise C is reloaded from ``cbuf`` (int32, 32 x 32
  per panel, row stride 128 bytes). When ``fuse`` is set the sums go through the fused epilogue
  (``epilogue_ir.py``) straight to the output (the caller guarantees full rows and full panels); otherwise they are
  stored to ``cbuf`` (the caller finishes them). The epilogue of panel p runs a few rows per K-step inside panel
  p+1's K loop (two C buffers), so the vector units work while the tile unit multiplies.
* B tiles are loaded with the T1 hint (``tileloaddt1``): B streams through once per strip, and keeping it out of L1
  leaves room for A, which every panel re-reads (measured: 10-20% faster on thin GEMMs).
* Measured limit: ``tileloadd`` moves about one 64-byte line per 2.5 cycles whatever the source (L1 or L2), so a
  2x2 tile block (64 lines per 4 products) reaches about 40% of the ``tdpbusd`` peak, and thin A (one row block,
  16 B lines per product) is bound by the B stream.
* Loads and products are interleaved (A0 B0 C00 B1 C01 A1 C10 C11): tile registers are not renamed, so a load
  into a tile must wait for the products that read it; this order gives each load the most time.
* ``tdpbusd`` sums u8*s8 products into int32 with wraparound, exactly like ``vpdpbusd``: results are bit-identical
  to the VNNI rung. The OS must grant the AMX state first (``target.amx_permitted``).
"""
from __future__ import annotations

import functools

from llvmlite import ir

from quantgraph.kernels.intrinsics import epilogue_ir
from quantgraph.kernels.intrinsics.epilogue_ir import FusedEpilogue

NR = 32
KSTEP = 64  # bytes of K per tdpbusd
PANEL_STEP = 2 * 16 * 64  # bytes of one packed panel per K-step (two B tiles)
_DECLS = {  # name -> operand types ("i8" immediates are tile numbers)
    "llvm.x86.ldtilecfg": ("p8",),
    "llvm.x86.tilerelease": (),
    "llvm.x86.tilezero": ("i8",),
    "llvm.x86.tileloadd64": ("i8", "p8", "i64"),
    "llvm.x86.tileloaddt164": ("i8", "p8", "i64"),
    "llvm.x86.tdpbusd": ("i8", "i8", "i8"),
    "llvm.x86.tilestored64": ("i8", "p8", "i64"),
}
_ITEM = {"int32": 4, "float32": 4, "uint8": 1, "int8": 1, "none": 0}


def _fn(module: ir.Module, name: str) -> ir.Function:
    found = module.globals.get(name)
    if found is not None:
        return found
    tys = {"i8": ir.IntType(8), "p8": ir.IntType(8).as_pointer(), "i64": ir.IntType(64)}
    return ir.Function(module, ir.FunctionType(ir.VoidType(), [tys[t] for t in _DECLS[name]]), name)


def tile_config(rows_a: int = 16, rows_b: int = 16) -> bytearray:
    """Palette 1; every tile 64 bytes wide; C/A tiles of the two row halves get ``rows_a``/``rows_b`` rows."""
    cfg = bytearray(64)
    cfg[0] = 1
    for k in range(8):
        cfg[16 + 2 * k] = 64
        cfg[48 + k] = 16
    for k in (2, 3, 5):
        cfg[48 + k] = rows_b
        if rows_b == 0:  # NOTE: an unused tile must be fully unconfigured (0 rows and 0 bytes), else #GP
            cfg[16 + 2 * k] = 0
    for k in (0, 1, 4):
        cfg[48 + k] = rows_a
    return cfg


STRIP_EXTRA = ("pstride", "npan", "rows", "first", "fuse", "cbuf")


def build_strip_function(module: ir.Module, rmode: int, fused: FusedEpilogue) -> ir.Function:
    """Emit ``void strip(a, lda, b, nk, <epilogue params>, pstride, npan, rows, first, fuse, cbuf)``."""
    name = f"quantgraph.amx.strip{rmode}.{fused.tag}"
    found = module.globals.get(name)
    if found is not None:
        return found
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    p8 = i8.as_pointer()
    params = [p8, i64, p8, i64, *epilogue_ir.param_types(), i64, i64, i64, i64, i64, p8]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), params), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    a, lda, b0, nk = fn.args[:4]
    ep = dict(zip(epilogue_ir.PARAM_NAMES, fn.args[4:4 + len(epilogue_ir.PARAM_NAMES)]))
    pstride, npan, rows, first, fuse, cbuf0 = fn.args[4 + len(epilogue_ir.PARAM_NAMES):]
    names = ("entry", "panel", "zero", "reload", "loop", "latch", "tail", "epi", "store", "next", "last", "done")
    blocks = {k: fn.append_basic_block(k) for k in names}
    b = ir.IRBuilder(blocks["entry"])
    t = lambda k: ir.Constant(i8, k)
    c64 = lambda k: ir.Constant(i64, k)
    n_a = rmode // 16
    ctiles = [(i, j) for i in range(n_a) for j in range(2)]

    # configuration: template, then the run-time row counts of the C and A tiles
    cfg = b.alloca(ir.ArrayType(i8, 64), name="cfg")
    cfg.align = 64
    b.store(ir.Constant(ir.ArrayType(i8, 64), tile_config(16, 16 if n_a == 2 else 0)), cfg)
    cfgp = b.bitcast(cfg, p8)
    rows_lo = rows if n_a == 1 else b.select(b.icmp_signed(">", rows, c64(16)), c64(16), rows)
    for k in (0, 1, 4):
        b.store(b.trunc(rows_lo, i8), b.gep(cfgp, [c64(48 + k)]))
    if n_a == 2:
        rows_hi = b.sub(rows, c64(16))
        for k in (2, 3, 5):
            b.store(b.trunc(rows_hi, i8), b.gep(cfgp, [c64(48 + k)]))
    b.call(_fn(module, "llvm.x86.ldtilecfg"), [cfgp])
    # two C buffers: panel p's sums wait in one while panel p+1 computes (see _emit_epilogue_rows)
    scratch = b.alloca(ir.ArrayType(i32, 2 * rmode * NR), name="acc")
    scratch.align = 64
    sp = b.bitcast(scratch, p8)
    spc = lambda panel: b.gep(sp, [b.mul(b.and_(panel, c64(1)), c64(rmode * NR * 4))])
    per_step = b.udiv(b.add(c64(rmode - 1), nk), nk)  # epilogue rows of the previous panel per K-step (nk >= 1)
    fuse_on = b.icmp_signed("!=", fuse, c64(0))
    b.branch(blocks["panel"])

    # per panel: C = 0 or reload from cbuf
    b.position_at_end(blocks["panel"])
    p = b.phi(i64, name="p")
    p.add_incoming(c64(0), blocks["entry"])
    bp = b.gep(b0, [b.mul(p, pstride)])
    cbuf = b.gep(cbuf0, [b.mul(p, c64(NR * NR * 4))])
    prev_pending = b.and_(fuse_on, b.icmp_signed(">", p, c64(0)))
    q = b.sub(p, c64(1))  # the previous panel, whose epilogue runs during this one's K loop
    qacc, qcol = spc(q), b.mul(q, c64(NR))
    b.cbranch(b.icmp_signed("!=", first, c64(0)), blocks["zero"], blocks["reload"])
    b.position_at_end(blocks["zero"])
    for i, j in ctiles:
        b.call(_fn(module, "llvm.x86.tilezero"), [t(2 * i + j)])
    b.branch(blocks["loop"])
    b.position_at_end(blocks["reload"])
    for i, j in ctiles:
        b.call(_fn(module, "llvm.x86.tileloadd64"), [t(2 * i + j), b.gep(cbuf, [c64(i * 16 * NR * 4 + j * 64)]),
                                                     c64(NR * 4)])
    b.branch(blocks["loop"])

    b.position_at_end(blocks["loop"])
    s = b.phi(i64, name="s")
    s.add_incoming(c64(0), blocks["zero"])
    s.add_incoming(c64(0), blocks["reload"])
    ab = b.gep(a, [b.mul(s, c64(KSTEP))])
    bb = b.gep(bp, [b.mul(s, c64(PANEL_STEP))])
    load, dot = _fn(module, "llvm.x86.tileloadd64"), _fn(module, "llvm.x86.tdpbusd")
    # B is streamed (read once per strip): the T1 hint keeps it from evicting A, which every panel re-reads
    load_stream = _fn(module, "llvm.x86.tileloaddt164")
    load_a = lambda i: b.call(load, [t(4 + i), b.gep(ab, [b.mul(lda, c64(16 * i))]), lda])
    load_b = lambda j: b.call(load_stream, [t(6 + j), b.gep(bb, [c64(1024 * j)]), c64(64)])
    mul = lambda i, j: b.call(dot, [t(2 * i + j), t(4 + i), t(6 + j)])
    load_a(0), load_b(0), mul(0, 0), load_b(1), mul(0, 1)
    if n_a == 2:
        load_a(1), mul(1, 0), mul(1, 1)
    # while the tile unit works on this K-step, the vector units finish a few rows of the previous panel
    r0 = b.mul(s, per_step)
    r1 = b.add(r0, per_step)
    r1 = b.select(b.icmp_signed(">", r1, c64(rmode)), c64(rmode), r1)
    _emit_epilogue_rows(b, fused, ep, qacc, qcol, r0, r1, b.and_(prev_pending, b.icmp_signed("<", r0, r1)),
                        blocks["latch"])

    b.position_at_end(blocks["latch"])
    s1 = b.add(s, c64(1))
    s.add_incoming(s1, blocks["latch"])
    b.cbranch(b.icmp_signed("<", s1, nk), blocks["loop"], blocks["tail"])

    b.position_at_end(blocks["tail"])
    b.cbranch(fuse_on, blocks["epi"], blocks["store"])

    b.position_at_end(blocks["store"])
    store = _fn(module, "llvm.x86.tilestored64")
    for i, j in ctiles:
        b.call(store, [t(2 * i + j), b.gep(cbuf, [c64(i * 16 * NR * 4 + j * 64)]), c64(NR * 4)])
    b.branch(blocks["next"])

    b.position_at_end(blocks["epi"])
    cur = spc(p)
    for i, j in ctiles:
        b.call(store, [t(2 * i + j), b.gep(cur, [c64(i * 16 * NR * 4 + j * 64)]), c64(NR * 4)])
    b.branch(blocks["next"])

    b.position_at_end(blocks["next"])
    p1 = b.add(p, c64(1))
    p.add_incoming(p1, blocks["next"])
    b.cbranch(b.icmp_signed("<", p1, npan), blocks["panel"], blocks["last"])

    b.position_at_end(blocks["last"])  # the last panel's epilogue has no next panel to hide behind
    q = b.sub(npan, c64(1))
    _emit_epilogue_rows(b, fused, ep, spc(q), b.mul(q, c64(NR)), c64(0), c64(rmode), fuse_on, blocks["done"])
    b.position_at_end(blocks["done"])
    b.call(_fn(module, "llvm.x86.tilerelease"), [])
    b.ret_void()
    return fn


def _emit_epilogue_rows(b: ir.IRBuilder, fused: FusedEpilogue, ep: dict, acc: ir.Value, col: ir.Value, r0: ir.Value,
                        r1: ir.Value, cond: ir.Value, exit_block: ir.Block) -> None:
    """If ``cond``: rows [r0, r1) of the int32 sums at ``acc`` (32 per row, 128 bytes apart), for output columns
    ``col``.., through the fused epilogue; then branch to ``exit_block``. Leaves ``b`` unpositioned."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    c64 = lambda k: ir.Constant(i64, k)
    pre = b.block
    body = b.function.append_basic_block("epirow")
    b.cbranch(cond, body, exit_block)
    b.position_at_end(body)
    r = b.phi(i64, name="r")
    r.add_incoming(r0, pre)
    row = b.gep(acc, [b.mul(r, c64(NR * 4))])
    vty = ir.VectorType(i32, 16)
    accs = [[b.load(b.bitcast(b.gep(row, [c64(v * 64)]), vty.as_pointer()), align=64) for v in range(2)]]
    moved = dict(ep)
    for key in ("bias32", "scale", "biasf"):
        moved[key] = b.gep(ep[key], [b.mul(col, c64(4))])
    if _ITEM[fused.residual]:
        moved["res"] = b.gep(ep["res"], [b.add(b.mul(col, c64(_ITEM[fused.residual])), b.mul(r, ep["ldr"]))])
    moved["out"] = b.gep(ep["out"], [b.add(b.mul(col, c64(_ITEM[fused.out])), b.mul(r, ep["ldo"]))])
    epilogue_ir.emit(b, fused, accs, 16, moved)
    rn = b.add(r, c64(1))
    r.add_incoming(rn, b.block)
    b.cbranch(b.icmp_signed("<", rn, r1), body, exit_block)


@functools.lru_cache(maxsize=None)
def amx_strip_kernel(rmode: int, has_bias: bool, has_res: bool, act: str):
    """Numba intrinsic for :func:`build_strip_function`.

    ``strip(a, a_off, lda, b, b_off, nk, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp, lo, hi,
    oinv, ozp, out, out_off, ldo, pstride, npan, rows, first, fuse, cbuf)``: the first 22 arguments are those of
    ``x86.tile_epilogue_kernel`` (offsets and leading dimensions in elements; ``nk`` in 64-byte K-steps), then the
    panel stride in bytes, the panel count, the valid rows, the first-K-chunk and fuse flags and the int32 buffer.
    """
    from numba import types
    from numba.extending import intrinsic

    from quantgraph.kernels.intrinsics.x86 import epilogue_call_args

    @intrinsic
    def strip(typingctx, a, a_off, lda, b, b_off, nk, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp,
              lo, hi, oinv, ozp, out, out_off, ldo, pstride, npan, rows, first, fuse, cbuf):
        arrays = (a, b, bias32, scale, biasf, res, out, cbuf)
        if not all(isinstance(t, types.Array) for t in arrays):
            return None
        sig = types.void(a, a_off, lda, b, b_off, nk, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp,
                         lo, hi, oinv, ozp, out, out_off, ldo, pstride, npan, rows, first, fuse, cbuf)
        fused = FusedEpilogue(str(out.dtype), has_bias, str(res.dtype) if has_res else "none", act)

        def codegen(context, builder, signature, args):
            fn = build_strip_function(builder.module, rmode, fused)
            head = epilogue_call_args(context, builder, signature, args[:22])
            tail = [context.cast(builder, args[k], signature.args[k], types.int64) for k in range(22, 27)]
            cb = context.make_array(signature.args[27])(context, builder, args[27])
            builder.call(fn, head + tail + [builder.bitcast(cb.data, ir.IntType(8).as_pointer())])
            return context.get_dummy_value()

        return sig, codegen

    strip.__name__ = f"amx_strip_{rmode}"
    return strip


@functools.lru_cache(maxsize=None)
def amx_peak_loop():
    """Intrinsic ``peak(n) -> int64``: n iterations of 4 independent ``tdpbusd`` on resident tiles (peak)."""
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def peak(typingctx, n):
        if not isinstance(n, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            module = builder.module
            i8, i64 = ir.IntType(8), ir.IntType(64)
            t = lambda k: ir.Constant(i8, k)
            cfg = builder.alloca(ir.ArrayType(i8, 64))
            builder.store(ir.Constant(ir.ArrayType(i8, 64), tile_config()), cfg)
            builder.call(_fn(module, "llvm.x86.ldtilecfg"), [builder.bitcast(cfg, i8.as_pointer())])
            for k in range(8):
                builder.call(_fn(module, "llvm.x86.tilezero"), [t(k)])
            count = context.cast(builder, args[0], signature.args[0], types.int64)
            pre = builder.block
            loop = builder.append_basic_block("amxpeak.loop")
            done = builder.append_basic_block("amxpeak.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            i = builder.phi(i64)
            for c in range(4):
                builder.call(_fn(module, "llvm.x86.tdpbusd"), [t(c), t(4 + c // 2), t(6 + c % 2)])
            i1 = builder.add(i, ir.Constant(i64, 1))
            i.add_incoming(ir.Constant(i64, 0), pre)
            i.add_incoming(i1, loop)
            builder.cbranch(builder.icmp_signed("<", i1, count), loop, done)
            builder.position_at_end(done)
            builder.call(_fn(module, "llvm.x86.tilerelease"), [])
            return i1

        return types.int64(n), codegen

    return peak
