"""Normalization rules: BatchNorm folding into Conv/Gemm/MatMul, BN -> affine, LayerNorm recognition."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.compiler.rules.norm import RULES
from quantgraph.ir.builder import GraphBuilder
from tests.compiler.test_pattern import apply, assert_same_outputs, ops

rng = np.random.default_rng(0)


def _f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _bn(gb, y, c, const=True):
    params = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 2, c)]
    names = [gb.const(p.astype(np.float32)) for p in params]
    if not const:
        names[0] = gb.input("scale", (c,))
    return gb.op("BatchNormalization", y, *names, epsilon=1e-3)


def _conv_bn(bias=True, bias_const=True, bn_const=True):
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3, 6, 6))
    b = (gb.const(_f32(4)) if bias_const else gb.input("b", (4,))) if bias else None
    y = gb.op("Conv", x, gb.const(_f32(4, 3, 3, 3)), b, pads=(1, 1, 1, 1))
    return gb, _bn(gb, y, 4, bn_const)


def test_conv_bn_to_conv_with_and_without_bias() -> None:
    for bias in (True, False):
        gb, y = _conv_bn(bias)
        before, after, p = apply(gb.output(y).build(), RULES.only("conv_bn_to_conv"))
        assert ops(after) == ["Conv"] and p.counts == {"conv_bn_to_conv": 1}
        assert_same_outputs(before, after, rtol=1e-4, atol=1e-4)


def test_conv_bn_refusals() -> None:
    gb, y = _conv_bn(bn_const=False)
    _, after, p = apply(gb.output(y).build(), RULES.only("conv_bn_to_conv"))
    assert p.reasons("conv_bn_to_conv") == ["BatchNormalization parameters are not constants"]
    gb, y = _conv_bn(bias_const=False)
    _, after, p = apply(gb.output(y).build(), RULES.only("conv_bn_to_conv"))
    assert p.reasons("conv_bn_to_conv") == ["conv bias is not a constant"]
    assert ops(after) == ["Conv", "BatchNormalization"]


def _gemm_bn(trans_b=1, c="const", bn_const=True):
    gb = GraphBuilder("t")
    x = gb.input("x", (3, 5))
    w = gb.const(_f32(4, 5) if trans_b else _f32(5, 4))
    cc = {"const": lambda: gb.const(_f32(4)), "input": lambda: gb.input("c", (4,)), None: lambda: None}[c]()
    y = gb.op("Gemm", x, w, cc, transB=trans_b, alpha=0.5, beta=2.0)
    return gb, _bn(gb, y, 4, bn_const)


def test_gemm_bn_to_gemm() -> None:
    for trans_b in (0, 1):
        for c in ("const", None):
            gb, y = _gemm_bn(trans_b, c)
            before, after, p = apply(gb.output(y).build(), RULES.only("gemm_bn_to_gemm"))
            assert ops(after) == ["Gemm"] and p.counts == {"gemm_bn_to_gemm": 1}
            assert_same_outputs(before, after, rtol=1e-4, atol=1e-4)


def test_gemm_bn_refusals() -> None:
    gb, y = _gemm_bn(c="input")
    _, _, p = apply(gb.output(y).build(), RULES.only("gemm_bn_to_gemm"))
    assert p.reasons("gemm_bn_to_gemm") == ["Gemm C is not a constant"]
    gb, y = _gemm_bn(bn_const=False)
    _, _, p = apply(gb.output(y).build(), RULES.only("gemm_bn_to_gemm"))
    assert p.reasons("gemm_bn_to_gemm") == ["BatchNormalization parameters are not constants"]


def test_matmul_bn_to_fused_matmul_and_refusal() -> None:
    for const in (True, False):
        gb = GraphBuilder("t")
        x = gb.input("x", (3, 5))
        y = _bn(gb, gb.op("MatMul", x, gb.const(_f32(5, 4))), 4, const)
        before, after, p = apply(gb.output(y).build(), RULES.only("matmul_bn_to_fused_matmul"))
        if const:
            assert ops(after) == ["FusedMatMul"]
            assert_same_outputs(before, after, rtol=1e-4, atol=1e-4)
        else:
            assert p.reasons("matmul_bn_to_fused_matmul") == ["BatchNormalization parameters are not constants"]


def test_batch_norm_to_affine_and_refusals() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 4, 3, 3))
    before, after, p = apply(gb.output(_bn(gb, x, 4)).build(), RULES.only("batch_norm_to_affine"))
    assert ops(after) == ["Mul", "Add"] and p.counts == {"batch_norm_to_affine": 1}
    assert_same_outputs(before, after, rtol=1e-5, atol=1e-5)
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 4, 3, 3))
    _, _, p = apply(gb.output(_bn(gb, x, 4, const=False)).build(), RULES.only("batch_norm_to_affine"))
    assert p.reasons("batch_norm_to_affine") == ["BatchNormalization parameters are not constants"]
    gb = GraphBuilder("t")
    x = gb.input("x", ("N", "C", 3, 3))
    _, _, p = apply(gb.output(_bn(gb, x, 4)).build(), RULES.only("batch_norm_to_affine"))
    assert p.reasons("batch_norm_to_affine") == ["the channel count is not static"]
    gb = GraphBuilder("t")
    x = gb.input("x", None)
    _, _, p = apply(gb.output(_bn(gb, x, 4)).build(), RULES.only("batch_norm_to_affine"))
    assert p.reasons("batch_norm_to_affine") == ["input rank is unknown or has no channel axis"]


# -- LayerNorm ---------------------------------------------------------------------------------------------------
def _layer_norm(shape=(2, 5, 8), axes1=(-1,), axes2=(-1,), keepdims=1, eps=1e-5, beta=True, gamma_shape=None,
                dtype=np.float32, reciprocal=False, eps_shape=()):
    gb = GraphBuilder("t")
    x = gb.input("x", shape, np.dtype(dtype).name)
    i64 = lambda v: gb.const(np.array(v, np.int64))  # noqa: E731
    mean = gb.op("ReduceMean", x, i64(axes1), keepdims=keepdims)
    d = gb.op("Sub", x, mean)
    var = gb.op("ReduceMean", gb.op("Pow", d, gb.const(np.array(2.0, dtype))), i64(axes2), keepdims=keepdims)
    std = gb.op("Sqrt", gb.op("Add", var, gb.const(np.full(eps_shape, eps, dtype))))
    n = gb.op("Mul", d, gb.op("Reciprocal", std)) if reciprocal else gb.op("Div", d, std)
    gshape = gamma_shape or (shape[-1],)
    y = gb.op("Mul", n, gb.const((1 + rng.standard_normal(gshape) * 0.1).astype(dtype)))
    if beta:
        y = gb.op("Add", gb.const(rng.standard_normal(gshape).astype(dtype)), y)
    return gb.output(y).build()


def test_layer_norm_recognized() -> None:
    multi_axis = {"shape": (3, 4, 6), "axes1": (1, 2), "axes2": (-2, -1), "gamma_shape": (4, 6)}
    for kw in ({}, {"beta": False}, {"reciprocal": True}, multi_axis):
        before, after, p = apply(_layer_norm(**kw), RULES.only("layer_norm"))
        assert ops(after) == ["LayerNormalization"], kw
        assert p.counts == {"layer_norm": 1}
        assert_same_outputs(before, after, rtol=1e-4, atol=1e-4)


def test_layer_norm_full_pattern_wins_over_gamma_only() -> None:
    _, _, p = apply(_layer_norm(), RULES.only("layer_norm"))
    assert "a constant Add (beta) follows; the full pattern matches there" in p.reasons("layer_norm")


def test_layer_norm_refusals() -> None:
    cases = [
        ({"axes1": (-1,), "axes2": (-2,)}, "reduce different axes"),
        ({"shape": (2, 5, 8), "axes1": (1,), "axes2": (1,), "gamma_shape": (1,)}, "are not the trailing axes"),
        ({"shape": (8, 8), "keepdims": 0}, "keepdims=0"),
        ({"dtype": np.float64}, "is for float32"),
        ({"gamma_shape": (5, 8), "shape": (2, 5, 8)}, "do not broadcast"),
        ({"shape": None, "gamma_shape": (8,)}, "input rank is unknown"),
    ]
    for kw, reason in cases:
        if kw.get("shape", 1) is None:
            kw = {**kw, "shape": None}
        _, after, p = apply(_layer_norm(**kw), RULES.only("layer_norm"))
        assert "LayerNormalization" not in ops(after), kw
        assert any(reason in r for r in p.reasons("layer_norm")), (kw, p.reasons("layer_norm"))


def test_layer_norm_refuses_vector_epsilon() -> None:
    _, after, p = apply(_layer_norm(eps_shape=(8,)), RULES.only("layer_norm"))
    assert "LayerNormalization" not in ops(after)
    assert any("epsilon has 8 values" in r for r in p.reasons("layer_norm"))


@pytest.mark.parametrize("trailing", [None, "C"], ids=["unknown", "symbolic"])
def test_layer_norm_refuses_a_dynamic_normalized_dim(trailing) -> None:
    """LayerNorm written out over a trailing dim shape inference cannot pin down (PP-OCR recognizers): gamma/beta
    cannot be expanded to it, so the rule refuses (it crashed in np.broadcast_to) and the primitive ops stay."""
    _, after, p = apply(_layer_norm(shape=(2, 5, trailing), gamma_shape=(8,)), RULES.only("layer_norm"))
    assert "LayerNormalization" not in ops(after)
    shown = "?" if trailing is None else trailing
    assert f"normalized dims ({shown},) are not all static" in p.reasons("layer_norm")


def test_layer_norm_refuses_a_scalar_input() -> None:
    _, after, p = apply(_layer_norm(shape=(), axes1=(0,), axes2=(0,), gamma_shape=(1,)), RULES.only("layer_norm"))
    assert "LayerNormalization" not in ops(after) and set(p.reasons("layer_norm")) == {"input is a scalar"}
