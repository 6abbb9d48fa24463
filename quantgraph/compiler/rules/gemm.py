"""Gemm / MatMul fusions: float products become FusedMatMul, which then absorbs its bias and residual.

    Gemm(A, B, C?)   (B constant, transA=0)       ==>  FusedMatMul(A, alpha*B', beta*C)    B' = B.T if transB
    MatMul(A, B)                                  ==>  FusedMatMul(A, B)
    Add(FusedMatMul(A, B), c)                     ==>  FusedMatMul(A, B, bias=c)         (c constant, not growing)
    Add(FusedMatMul(A, B, bias?), z)              ==>  FusedMatMul(A, B, bias?, Z=z)     (z computed, same shape)
"""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.pattern import Const, Match, Op, RuleSet, Var, rule
from quantgraph.compiler.rules.conv import plain
from quantgraph.ir.shapes import broadcast_shapes


@rule(Op("Gemm", Var("a"), Var("b"), ..., name="gemm"))
def gemm_to_fused_matmul(m: Match):
    """Gemm(A, B, C?) ==> FusedMatMul(A, alpha*op(B), beta*C) with constants folded."""
    g = m.node("gemm")
    if m["a"].dtype != "float32":
        return m.fail(f"A is {m['a'].dtype}; FusedMatMul is float32")
    if g.attrs["transA"]:
        return m.fail("transA=1 (A would need a transpose)")
    b = m["b"].value
    if b is None:
        return m.fail("B is not a constant")
    b2 = (b.T if g.attrs["transB"] else b) * np.float32(g.attrs["alpha"])
    ins = [m["a"], m.const(np.ascontiguousarray(b2, np.float32), "b")]
    if len(g.inputs) > 2 and g.inputs[2]:
        c = m.graph.tensors[g.inputs[2]].const
        if c is None:
            return m.fail("C is not a constant")
        ins.append(m.const((c * np.float32(g.attrs["beta"])).astype(np.float32), "bias"))
    return m.emit("FusedMatMul", ins)


@rule(Op("MatMul", Var("a"), Var("b"), name="mm"))
def matmul_to_fused(m: Match):
    """MatMul(A, B) ==> FusedMatMul(A, B) (float32 only)."""
    if m["a"].dtype != "float32" or m["b"].dtype != "float32":
        return m.fail(f"operands are {m['a'].dtype}/{m['b'].dtype}; FusedMatMul is float32")
    return m.emit("FusedMatMul", [m["a"], m["b"]])


@rule(Op("Add", Op("FusedMatMul", Var("a"), Var("b"), name="mm"), Const("c"), commute=True))
def matmul_add_bias(m: Match):
    """Add(FusedMatMul(A, B), c) ==> FusedMatMul(A, B, bias=c) when c does not grow the product."""
    if not plain(m.node("mm")):
        return m.fail("the product already has an epilogue (activation or residual)")
    out, c = m["mm"].shape, m["c"].value
    if out is None:
        return m.fail("the product's rank is unknown, so it cannot be told whether the constant grows it")
    grown = broadcast_shapes(out, c.shape)  # NOTE: Add's own inference guarantees the shapes broadcast
    if grown != out:
        return m.fail(f"constant {c.shape} would grow the product {out} to {grown}")
    return m.emit("FusedMatMul", [m["a"], m["b"], m["c"]])


@rule(Op("Add", Op("FusedMatMul", Var("a"), Var("b"), ..., name="mm"), Var("z"), commute=True))
def matmul_residual(m: Match):
    """Add(FusedMatMul(A, B, bias?), z) ==> FusedMatMul(A, B, bias?, Z=z) (a residual of the product's shape)."""
    mm = m.node("mm")
    if not plain(mm):
        return m.fail("the product already has an epilogue (activation or residual)")
    if m["z"].value is not None:
        return m.fail("the other operand is a constant (a bias, not a residual)")
    if m["z"].shape != m["mm"].shape or m["z"].shape is None or None in m["z"].shape:
        return m.fail(f"residual has shape {m['z'].shape}; expected the product shape {m['mm'].shape}")
    ins = list(mm.inputs) + [""] * (3 - len(mm.inputs))
    return m.emit("FusedMatMul", ins[:3] + [m["z"]])


RULES = RuleSet([gemm_to_fused_matmul, matmul_to_fused, matmul_add_bias, matmul_residual], "gemm")
