"""Gemm/MatMul fusions: Gemm -> FusedMatMul (alpha/beta/transB folded), MatMul -> FusedMatMul, bias, residual."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.compiler.rules.gemm import RULES
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.interpreter import run
from tests.compiler.test_pattern import apply, assert_same_outputs, ops

rng = np.random.default_rng(2)


def _f(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_gemm_to_fused_matmul(trans_b: int, with_c: bool) -> None:
    gb = GraphBuilder("t")
    a = gb.input("a", ("N", 5))
    b = gb.const(_f(4, 5) if trans_b else _f(5, 4))
    c = gb.const(_f(4)) if with_c else None
    y = gb.op("Gemm", a, b, c, transB=trans_b, alpha=0.5, beta=3.0)
    before, after, p = apply(gb.output(y).build(), RULES.only("gemm_to_fused_matmul"))
    assert ops(after) == ["FusedMatMul"] and p.counts == {"gemm_to_fused_matmul": 1}
    assert_same_outputs(before, after, rtol=1e-5, atol=1e-5)


def test_gemm_to_fused_matmul_refusals() -> None:
    def run(a_dtype="float32", trans_a=0, b_const=True, c_const=True):
        gb = GraphBuilder("t")
        np_dt = np.dtype(a_dtype)
        a = gb.input("a", (5, 3) if trans_a else (3, 5), a_dtype)
        b = gb.const(_f(5, 4, dtype=np_dt)) if b_const else gb.input("b", (5, 4), a_dtype)
        c = gb.const(_f(4, dtype=np_dt)) if c_const else gb.input("c", (4,), a_dtype)
        _, after, p = apply(gb.output(gb.op("Gemm", a, b, c, transA=trans_a)).build(),
                            RULES.only("gemm_to_fused_matmul"))
        assert ops(after) == ["Gemm"]
        return p.reasons("gemm_to_fused_matmul")[0]

    assert run(a_dtype="float64") == "A is float64; FusedMatMul is float32"
    assert run(trans_a=1) == "transA=1 (A would need a transpose)"
    assert run(b_const=False) == "B is not a constant"
    assert run(c_const=False) == "C is not a constant"


def test_matmul_to_fused_and_refusal() -> None:
    gb = GraphBuilder("t")
    a, b = gb.input("a", ("B", 2, 3, 5)), gb.input("b", ("B", 2, 5, 4))
    before, after, p = apply(gb.output(gb.op("MatMul", a, b)).build(), RULES.only("matmul_to_fused"))
    assert ops(after) == ["FusedMatMul"]
    assert_same_outputs(before, after)
    gb = GraphBuilder("t")
    a, b = gb.input("a", (3, 5), "int32"), gb.input("b", (5, 4), "int32")
    _, after, p = apply(gb.output(gb.op("MatMul", a, b)).build(), RULES.only("matmul_to_fused"))
    assert ops(after) == ["MatMul"] and p.reasons("matmul_to_fused") == [
        "operands are int32/int32; FusedMatMul is float32"]


def _fmm(gb, a, **attrs):
    return gb.op("FusedMatMul", a, gb.const(_f(5, 4)), **attrs)


def test_matmul_add_bias() -> None:
    for shape in ((4,), (1, 4), ()):
        gb = GraphBuilder("t")
        a = gb.input("a", ("B", 3, 5))
        y = gb.op("Add", gb.const(_f(*shape)), _fmm(gb, a))
        before, after, p = apply(gb.output(y).build(), RULES.only("matmul_add_bias"))
        assert ops(after) == ["FusedMatMul"] and p.counts == {"matmul_add_bias": 1}
        assert_same_outputs(before, after)


def test_matmul_add_bias_refusals() -> None:
    gb = GraphBuilder("t")
    a = gb.input("a", (3, 5))
    y = gb.op("Add", _fmm(gb, a, activation="relu"), gb.const(_f(4)))
    _, _, p = apply(gb.output(y).build(), RULES.only("matmul_add_bias"))
    assert "already has an epilogue" in p.reasons("matmul_add_bias")[0]
    gb = GraphBuilder("t")
    a = gb.input("a", (3, 5))
    y = gb.op("Add", _fmm(gb, a), gb.const(_f(2, 3, 4)))
    _, after, p = apply(gb.output(y).build(), RULES.only("matmul_add_bias"))
    assert "would grow the product (3, 4) to (2, 3, 4)" in p.reasons("matmul_add_bias")[0]
    assert "Add" in ops(after)


def test_matmul_residual() -> None:
    gb = GraphBuilder("t")
    a, z = gb.input("a", ("B", 3, 5)), gb.input("z", ("B", 3, 4))
    y = gb.op("Add", z, gb.op("FusedMatMul", a, gb.const(_f(5, 4)), gb.const(_f(4))))
    before, after, p = apply(gb.output(y).build(), RULES.only("matmul_residual"))
    assert ops(after) == ["FusedMatMul"] and after.topo()[0].inputs[3] == "z"
    assert_same_outputs(before, after)


def test_matmul_residual_refusals() -> None:
    def run(z_shape=(3, 4), z_const=False, **attrs):
        gb = GraphBuilder("t")
        a = gb.input("a", (3, 5))
        z = gb.const(_f(*z_shape)) if z_const else gb.input("z", z_shape)
        _, after, p = apply(gb.output(gb.op("Add", _fmm(gb, a, **attrs), z)).build(), RULES.only("matmul_residual"))
        assert "Add" in ops(after)
        return p.reasons("matmul_residual")[0]

    assert "already has an epilogue" in run(activation="gelu")
    assert run(z_const=True) == "the other operand is a constant (a bias, not a residual)"
    assert "residual has shape (4,)" in run((4,))


def test_matmul_add_bias_refuses_unknown_product_rank() -> None:
    """With the product's rank unknown a (2, 3, 4) constant may grow it: fusing it as a bias would be wrong."""
    gb = GraphBuilder("t")
    y = gb.op("Add", _fmm(gb, gb.input("a", None)), gb.const(_f(2, 3, 4)))
    before, after, p = apply(gb.output(y).build(), RULES.only("matmul_add_bias"))
    assert "Add" in ops(after) and "the product's rank is unknown" in p.reasons("matmul_add_bias")[0]
    feeds = {"a": _f(3, 5)}
    np.testing.assert_allclose(run(after, feeds)[y], run(before, feeds)[y], rtol=1e-6)
    assert run(after, feeds)[y].shape == (2, 3, 4)
