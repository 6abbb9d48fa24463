"""AMX (``tdpbusd`` on tile registers) block kernel, emitted as LLVM IR with fixed tile numbers.

One call computes a ``rows x 32`` block (``rows`` = 32 or 16) of ``A[rows, K] @ B`` for one packed ``k4n32`` panel
and writes it through the fused epilogue (``epilogue_ir.py``):

* tiles: C in tmm0..3 (16 rows x 16 int32 each: rows 0-15 / 16-31 x columns 0-15 / 16-31), A in tmm4/5 (16 rows x
  64 bytes), B in tmm6/7 (16 K-groups x 16 columns x 4 bytes). The packed panel already stores, per K-group, 32
  columns x 4 bytes = 128 bytes, so a B tile is a strided load (stride 128) of one half of 16 consecutive groups.
* K is consumed 64 bytes (16 groups) per step, so the caller must guarantee ``kg % 16 == 0``; other shapes use the
  VNNI microkernel. ``tdpbusd`` sums u8*s8 products into int32 with wraparound, exactly like ``vpdpbusd``.
* The tile configuration (palette 1, every tile 16 rows x 64 bytes) is loaded at the start of each call: tile
  state is per thread, so every Numba worker configures its own; ``tilerelease`` at the end returns to INIT.
* The OS must grant the AMX state to the process first (``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)``, see
  ``target.py``); without it ``tileloadd`` faults, so the ``amx`` rung is only offered after that call succeeds.
"""
from __future__ import annotations

import functools

from llvmlite import ir

from quantgraph.kernels.intrinsics import epilogue_ir
from quantgraph.kernels.intrinsics.epilogue_ir import FusedEpilogue

NR = 32
_DECLS = {  # name -> operand types ("i8" immediates are tile numbers)
    "llvm.x86.ldtilecfg": ("p8",),
    "llvm.x86.tilerelease": (),
    "llvm.x86.tilezero": ("i8",),
    "llvm.x86.tileloadd64": ("i8", "p8", "i64"),
    "llvm.x86.tdpbusd": ("i8", "i8", "i8"),
    "llvm.x86.tilestored64": ("i8", "p8", "i64"),
}


def _fn(module: ir.Module, name: str) -> ir.Function:
    found = module.globals.get(name)
    if found is not None:
        return found
    tys = {"i8": ir.IntType(8), "p8": ir.IntType(8).as_pointer(), "i64": ir.IntType(64)}
    return ir.Function(module, ir.FunctionType(ir.VoidType(), [tys[t] for t in _DECLS[name]]), name)


def build_block_function(module: ir.Module, rows: int, fused: FusedEpilogue) -> ir.Function:
    """Emit ``void amx_block(i8* a, i64 lda, i8* b, i64 kg, <epilogue_ir.PARAM_NAMES>)`` for ``rows`` rows."""
    name = f"quantgraph.amx.{rows}x{NR}.{fused.tag}"
    found = module.globals.get(name)
    if found is not None:
        return found
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    p8 = i8.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [p8, i64, p8, i64, *epilogue_ir.param_types()]), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    a, lda, bp, kg = fn.args[:4]
    entry, loop, done = fn.append_basic_block("entry"), fn.append_basic_block("loop"), fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    t = lambda k: ir.Constant(i8, k)
    c64 = lambda k: ir.Constant(i64, k)
    cfg = b.alloca(ir.ArrayType(i8, 64))
    cfgp = b.bitcast(cfg, p8)
    b.store(ir.Constant(ir.ArrayType(i8, 64), _tile_config()), cfg)
    b.call(_fn(module, "llvm.x86.ldtilecfg"), [cfgp])
    n_a = rows // 16
    for k in range(2 * n_a):
        b.call(_fn(module, "llvm.x86.tilezero"), [t(k)])
    ksteps = b.lshr(kg, c64(4))
    b.cbranch(b.icmp_signed(">", ksteps, c64(0)), loop, done)

    b.position_at_end(loop)
    s = b.phi(i64)
    s.add_incoming(c64(0), entry)
    load = _fn(module, "llvm.x86.tileloadd64")
    for i in range(n_a):
        b.call(load, [t(4 + i), b.gep(a, [b.add(b.mul(lda, c64(16 * i)), b.mul(s, c64(64)))]), lda])
    for j in range(2):
        b.call(load, [t(6 + j), b.gep(bp, [b.add(b.mul(s, c64(16 * NR * 4)), c64(64 * j))]), c64(NR * 4)])
    for i in range(n_a):
        for j in range(2):
            b.call(_fn(module, "llvm.x86.tdpbusd"), [t(2 * i + j), t(4 + i), t(6 + j)])
    s1 = b.add(s, c64(1))
    s.add_incoming(s1, loop)
    b.cbranch(b.icmp_signed("<", s1, ksteps), loop, done)

    b.position_at_end(done)
    scratch = b.alloca(ir.ArrayType(i32, rows * NR))
    sp = b.bitcast(scratch, p8)
    store = _fn(module, "llvm.x86.tilestored64")
    for i in range(n_a):
        for j in range(2):
            b.call(store, [t(2 * i + j), b.gep(sp, [c64(i * 16 * NR * 4 + j * 64)]), c64(NR * 4)])
    b.call(_fn(module, "llvm.x86.tilerelease"), [])
    vty = ir.VectorType(i32, 16)
    accs = [[b.load(b.bitcast(b.gep(sp, [c64(r * NR * 4 + v * 64)]), vty.as_pointer()), align=1) for v in range(2)]
            for r in range(rows)]
    epilogue_ir.emit(b, fused, accs, 16, dict(zip(epilogue_ir.PARAM_NAMES, fn.args[4:])))
    b.ret_void()
    return fn


def _tile_config() -> bytearray:
    """Palette 1; tiles 0..7 are 16 rows x 64 bytes (colsb at bytes 16.., rows at bytes 48..)."""
    cfg = bytearray(64)
    cfg[0] = 1
    for k in range(8):
        cfg[16 + 2 * k] = 64
        cfg[48 + k] = 16
    return cfg


@functools.lru_cache(maxsize=None)
def amx_block_kernel(rows: int, has_bias: bool, has_res: bool, act: str):
    """Numba intrinsic with the signature of ``x86.tile_epilogue_kernel`` for a ``rows x 32`` AMX block."""
    from numba import types
    from numba.extending import intrinsic

    from quantgraph.kernels.intrinsics.x86 import epilogue_call_args

    @intrinsic
    def block(typingctx, a, a_off, lda, b, b_off, kg, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp,
              lo, hi, oinv, ozp, out, out_off, ldo):
        arrays = (a, b, bias32, scale, biasf, res, out)
        if not all(isinstance(t, types.Array) for t in arrays):
            return None
        sig = types.void(a, a_off, lda, b, b_off, kg, bias32, scale, biasf, ch_off, res, res_off, ldr, rscale, rzp,
                         lo, hi, oinv, ozp, out, out_off, ldo)
        fused = FusedEpilogue(str(out.dtype), has_bias, str(res.dtype) if has_res else "none", act)

        def codegen(context, builder, signature, args):
            fn = build_block_function(builder.module, rows, fused)
            builder.call(fn, epilogue_call_args(context, builder, signature, args))
            return context.get_dummy_value()

        return sig, codegen

    block.__name__ = f"amx_block_{rows}"
    return block
