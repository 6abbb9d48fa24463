"""The fused epilogue as LLVM IR, applied to a microkernel tile while its accumulators are still in registers.

Semantics are exactly those of ``kernels/epilogue.py`` (and of the Numba epilogue in ``jit/int_gemm.py``, used for
the N-tail tile): the same float32 (dequantize) or float64 (requantize) operations in the same order, ``fcmp``
predicates matching Numba's lowering of ``y > 0`` / ``y < lo``, ``llvm.rint`` for round-half-to-even and no fast-math
flags (so no FMA contraction), so the results are bit-identical. For u8/s8 outputs the per-channel factor and bias
arrays hold the requantization multiplier and the bias in output units (float32), widened to float64 here.

Fast requantization (u8/s8 output without bias or residual, activation none/relu, the common case): each vector is
first requantized in float32, ``T = float32(v) * mult (+ relu) + zp`` and ``rint(T)``. Rounding in float32 moves T
by at most ``|t| 2^-23 + |T| 2^-24``, under 2.2e-4 while ``|T| < 1024`` (beyond that the output saturates either
way), so wherever T is more than ``2^-11`` away from a half-integer its rounding equals the float64 one. Only a vector
with a lane nearer than that (about 1.5% of vectors) takes the float64 path, so results stay bit-identical to
``kernels/epilogue.py`` at about the float32 cost.
Only full-width tiles (all ``NR`` columns valid) come here, so every load and store is an in-bounds unaligned vector.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

OUTS = ("int32", "float32", "uint8", "int8")
RESIDUALS = ("none", "uint8", "int8", "float32")
ACTS = ("none", "relu", "clip")
_ITEM = {"int32": 4, "float32": 4, "uint8": 1, "int8": 1, "none": 1}


@dataclass(frozen=True)
class FusedEpilogue:
    """Compile-time shape of the fused epilogue: output dtype, bias present, residual dtype, activation."""

    out: str
    has_bias: bool
    residual: str
    act: str

    @property
    def tag(self) -> str:
        return f"{self.out}.{int(self.has_bias)}.{self.residual}.{self.act}"


# Extra tile-function parameters, after (a, lda, b, kg): per-channel pointers, residual, scalars, output.
PARAM_NAMES = ("bias32", "scale", "biasf", "res", "ldr", "rscale", "rzp", "lo", "hi", "oinv", "ozp", "out", "ldo")


def param_types() -> list[ir.Type]:
    p8, i64, i32, f32 = ir.IntType(8).as_pointer(), ir.IntType(64), ir.IntType(32), ir.FloatType()
    return [p8, p8, p8, p8, i64, f32, i32, f32, f32, f32, f32, p8, i64]


def _vec_ptr(b: ir.IRBuilder, base: ir.Value, byte_off: ir.Value, vty: ir.Type) -> ir.Value:
    return b.bitcast(b.gep(base, [byte_off]), vty.as_pointer())


def _splat(b: ir.IRBuilder, x: ir.Value, lanes: int) -> ir.Value:
    vty = ir.VectorType(x.type, lanes)
    v = b.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return b.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), lanes), None))


FAST_MARGIN = 2.0 ** -11  # distance to a half-integer below which a float32 result is re-done in float64
FAST_LIMIT = 1024.0       # |T| from which the output saturates whatever the rounding


def _vector_fn(b: ir.IRBuilder, name: str, vty: ir.VectorType) -> ir.Function:
    full = f"llvm.{name}.v{vty.count}f{'64' if isinstance(vty.element, ir.DoubleType) else '32'}"
    return b.module.globals.get(full) or ir.Function(b.module, ir.FunctionType(vty, [vty]), full)


def _fast_requant(b: ir.IRBuilder, fe: FusedEpilogue, val: ir.Value, scale: ir.Value, ozp: ir.Value, lanes: int,
                  slow) -> ir.Value:  # noqa: ANN001 - slow: () -> <lanes x i8>
    """The <lanes x i8> requantized ``val`` via float32, falling back to ``slow()`` (float64) near ties."""
    f32 = ir.FloatType()
    vf, vi = ir.VectorType(f32, lanes), ir.VectorType(ir.IntType(32), lanes)
    splat = lambda x: ir.Constant(vf, [x] * lanes)  # noqa: E731
    y = b.fmul(b.sitofp(val, vf), scale)
    if fe.act == "relu":
        y = b.select(b.fcmp_ordered(">", y, splat(0.0)), y, splat(0.0))
    t = b.fadd(y, ozp)
    r = b.call(_vector_fn(b, "rint", vf), [t])
    fabs = _vector_fn(b, "fabs", vf)
    near = b.fcmp_ordered("<", b.fsub(splat(0.5), b.call(fabs, [b.fsub(t, r)])), splat(FAST_MARGIN))
    unsure = b.and_(near, b.fcmp_ordered("<", b.call(fabs, [t]), splat(FAST_LIMIT)))
    any_unsure = b.icmp_unsigned("!=", b.bitcast(unsure, ir.IntType(lanes)), ir.Constant(ir.IntType(lanes), 0))
    qmin, qmax = (-128.0, 127.0) if fe.out == "int8" else (0.0, 255.0)
    q = b.select(b.fcmp_ordered("<", r, splat(qmin)), splat(qmin), b.select(b.fcmp_ordered(">", r, splat(qmax)),
                                                                            splat(qmax), r))
    fast = b.trunc(b.fptosi(q, vi), ir.VectorType(ir.IntType(8), lanes))
    pre = b.block
    with b.if_then(any_unsure, likely=False):
        exact = slow()
        then = b.block
    out = b.phi(fast.type)
    out.add_incoming(fast, pre)
    out.add_incoming(exact, then)
    return out


def emit(b: ir.IRBuilder, fe: FusedEpilogue, accs: list[list[ir.Value]], lanes: int, args: dict[str, ir.Value]) -> None:
    """Apply ``fe`` to ``accs[r][v]`` (<lanes x i32>) and store row r, vector v at ``out + r*ldo + v*lanes*item``."""
    i8, i32, i64, f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
    vi, vf = ir.VectorType(i32, lanes), ir.VectorType(f32, lanes)
    c64 = lambda x: ir.Constant(i64, x)
    nv = len(accs[0])
    oitem = _ITEM[fe.out]
    bias_v = [b.load(_vec_ptr(b, args["bias32"], c64(v * lanes * 4), vi), align=1) for v in range(nv)]
    scale_v = [b.load(_vec_ptr(b, args["scale"], c64(v * lanes * 4), vf), align=1) for v in range(nv)]
    biasf_v = [b.load(_vec_ptr(b, args["biasf"], c64(v * lanes * 4), vf), align=1) for v in range(nv)] \
        if fe.has_bias else []
    zero = ir.Constant(vf, None)
    rscale, rzp = _splat(b, args["rscale"], lanes), _splat(b, args["rzp"], lanes)
    lo, hi = _splat(b, args["lo"], lanes), _splat(b, args["hi"], lanes)
    oinv, ozp = _splat(b, args["oinv"], lanes), _splat(b, args["ozp"], lanes)
    ozp32 = ozp
    requant = fe.out in ("uint8", "int8")
    rint = qmin_v = qmax_v = vd = None
    if requant:  # float64 from here on: see kernels/epilogue.py
        vd = ir.VectorType(ir.DoubleType(), lanes)
        wide = lambda x: b.fpext(x, vd)  # noqa: E731
        zero, rscale, lo, hi, oinv, ozp = (ir.Constant(vd, None), wide(rscale), wide(lo), wide(hi), wide(oinv),
                                           wide(ozp))
        qmin, qmax = (-128.0, 127.0) if fe.out == "int8" else (0.0, 255.0)
        qmin_v, qmax_v = ir.Constant(vd, [qmin] * lanes), ir.Constant(vd, [qmax] * lanes)
        name = f"llvm.rint.v{lanes}f64"
        rint = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(vd, [vd]), name)
    for r, row in enumerate(accs):
        orow = b.mul(args["ldo"], c64(r))
        rrow = b.mul(args["ldr"], c64(r))
        for v, acc in enumerate(row):
            val = b.add(acc, bias_v[v])
            ooff = b.add(orow, c64(v * lanes * oitem))
            if fe.out == "int32":
                b.store(val, _vec_ptr(b, args["out"], ooff, vi), align=1)
                continue
            if requant and not fe.has_bias and fe.residual == "none" and fe.act in ("none", "relu"):
                q8 = _fast_requant(b, fe, val, scale_v[v], ozp32, lanes,
                                   lambda: _requant64(b, fe, val, scale_v[v], None, None, zero, rscale, lo, hi, oinv,
                                                      ozp, rint, qmin_v, qmax_v, vi, vd))
                b.store(q8, _vec_ptr(b, args["out"], ooff, ir.VectorType(i8, lanes)), align=1)
                continue
            rv = None
            if fe.residual in ("uint8", "int8"):
                rv = b.load(_vec_ptr(b, args["res"], b.add(rrow, c64(v * lanes)), ir.VectorType(i8, lanes)), align=1)
                rv = b.zext(rv, vi) if fe.residual == "uint8" else b.sext(rv, vi)
                rv = b.sub(rv, rzp)
            elif fe.residual == "float32":
                rv = b.load(_vec_ptr(b, args["res"], b.add(rrow, c64(v * lanes * 4)), vf), align=1)
            if requant:
                q8 = _requant64(b, fe, val, scale_v[v], biasf_v[v] if fe.has_bias else None, rv, zero, rscale, lo, hi,
                                oinv, ozp, rint, qmin_v, qmax_v, vi, vd)
                b.store(q8, _vec_ptr(b, args["out"], ooff, ir.VectorType(i8, lanes)), align=1)
                continue
            y = b.fmul(b.sitofp(val, vf), scale_v[v])
            if fe.has_bias:
                y = b.fadd(y, biasf_v[v])
            if fe.residual in ("uint8", "int8"):
                y = b.fadd(y, b.fmul(b.sitofp(rv, vf), rscale))
            elif fe.residual == "float32":
                y = b.fadd(y, rv)
            if fe.act == "relu":
                y = b.select(b.fcmp_ordered(">", y, zero), y, zero)
            elif fe.act == "clip":
                y = b.select(b.fcmp_ordered("<", y, lo), lo, b.select(b.fcmp_ordered(">", y, hi), hi, y))
            b.store(y, _vec_ptr(b, args["out"], ooff, vf), align=1)


def _requant64(b: ir.IRBuilder, fe: FusedEpilogue, val: ir.Value, scale: ir.Value, biasf: ir.Value | None,
               rv: ir.Value | None, zero: ir.Value, rscale: ir.Value, lo: ir.Value, hi: ir.Value, oinv: ir.Value,
               ozp: ir.Value, rint: ir.Function, qmin_v: ir.Value, qmax_v: ir.Value, vi: ir.Type,
               vd: ir.Type) -> ir.Value:
    """The float64 requantization of kernels/epilogue.py: <lanes x i8> from the int32 vector ``val``."""
    y = b.fmul(b.sitofp(val, vd), b.fpext(scale, vd))
    if biasf is not None:
        y = b.fadd(y, b.fpext(biasf, vd))
    if fe.residual in ("uint8", "int8"):
        y = b.fadd(y, b.fmul(b.sitofp(rv, vd), rscale))
    elif fe.residual == "float32":
        y = b.fadd(y, b.fmul(b.fpext(rv, vd), oinv))
    if fe.act == "relu":
        y = b.select(b.fcmp_ordered(">", y, zero), y, zero)
    elif fe.act == "clip":
        y = b.select(b.fcmp_ordered("<", y, lo), lo, b.select(b.fcmp_ordered(">", y, hi), hi, y))
    q = b.call(rint, [b.fadd(y, ozp)])
    q = b.select(b.fcmp_ordered("<", q, qmin_v), qmin_v, b.select(b.fcmp_ordered(">", q, qmax_v), qmax_v, q))
    return b.trunc(b.fptosi(q, vi), ir.VectorType(ir.IntType(8), vi.count))
