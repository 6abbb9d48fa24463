"""Activation recognition: GELU (Erf and tanh forms, several association orders) and HardSwish."""
from __future__ import annotations

import math

import numpy as np
import pytest

from quantgraph.compiler.rules.activation import RULES
from quantgraph.ir.builder import GraphBuilder
from tests.compiler.test_pattern import apply, assert_same_outputs, ops


def _c(gb, v):
    return gb.const(np.array(v, np.float32))


def _gelu_erf(order: str, mul_form: bool = False):
    gb = GraphBuilder("t")
    x = gb.input("x", (4, 16))
    arg = gb.op("Mul", x, _c(gb, math.sqrt(0.5))) if mul_form else gb.op("Div", x, _c(gb, math.sqrt(2.0)))
    one = gb.op("Add", gb.op("Erf", arg), _c(gb, 1.0))
    if order == "torch":
        y = gb.op("Mul", gb.op("Mul", x, one), _c(gb, 0.5))
    elif order == "half_first":
        y = gb.op("Mul", gb.op("Mul", _c(gb, 0.5), x), one)
    else:
        y = gb.op("Mul", x, gb.op("Mul", one, _c(gb, 0.5)))
    return gb.output(y).build()


@pytest.mark.parametrize("order", ["torch", "half_first", "half_inner"])
@pytest.mark.parametrize("mul_form", [False, True])
def test_gelu_erf(order: str, mul_form: bool) -> None:
    before, after, p = apply(_gelu_erf(order, mul_form), RULES.only("gelu_erf"))
    assert ops(after) == ["Gelu"] and p.counts == {"gelu_erf": 1}
    assert after.topo()[0].attrs["approximate"] == "none"
    assert_same_outputs(before, after, rtol=1e-5, atol=1e-6)


def _gelu_tanh(pow_form: bool = True, coeff: float = 0.044715):
    gb = GraphBuilder("t")
    x = gb.input("x", (4, 16))
    cube = gb.op("Pow", x, _c(gb, 3.0)) if pow_form else gb.op("Mul", x, gb.op("Mul", x, x))
    inner = gb.op("Add", x, gb.op("Mul", _c(gb, coeff), cube))
    t = gb.op("Tanh", gb.op("Mul", inner, _c(gb, math.sqrt(2 / math.pi))))
    y = gb.op("Mul", gb.op("Mul", x, _c(gb, 0.5)), gb.op("Add", _c(gb, 1.0), t))
    return gb.output(y).build()


@pytest.mark.parametrize("pow_form", [True, False])
def test_gelu_tanh(pow_form: bool) -> None:
    before, after, p = apply(_gelu_tanh(pow_form), RULES.only("gelu_tanh"))
    assert ops(after) == ["Gelu"] and after.topo()[0].attrs["approximate"] == "tanh"
    assert_same_outputs(before, after, rtol=1e-5, atol=1e-6)


def test_gelu_with_wrong_constant_is_not_matched() -> None:
    _, after, p = apply(_gelu_tanh(coeff=0.05), RULES.only("gelu_tanh"))
    assert "Gelu" not in ops(after) and p.counts == {}
    assert "is not 0.044715" in p.stats.nearest["gelu_tanh"].reason


def _hardswish_hs(alpha=1 / 6, beta=0.5):
    gb = GraphBuilder("t")
    x = gb.input("x", (4, 16))
    return gb.output(gb.op("Mul", gb.op("HardSigmoid", x, alpha=alpha, beta=beta), x)).build()


def test_hardswish_from_hardsigmoid_and_refusal() -> None:
    before, after, p = apply(_hardswish_hs(), RULES.only("hardswish_hardsigmoid"))
    assert ops(after) == ["HardSwish"] and p.counts == {"hardswish_hardsigmoid": 1}
    assert_same_outputs(before, after)
    _, after, p = apply(_hardswish_hs(alpha=0.2), RULES.only("hardswish_hardsigmoid"))
    assert "HardSwish needs 1/6 and 0.5" in p.reasons("hardswish_hardsigmoid")[0]


def _hardswish_relu6(hi=6.0, div=True):
    gb = GraphBuilder("t")
    x = gb.input("x", (4, 16))
    clip = gb.op("Clip", gb.op("Add", x, _c(gb, 3.0)), _c(gb, 0.0), _c(gb, hi))
    xm = gb.op("Mul", x, clip)
    y = gb.op("Div", xm, _c(gb, 6.0)) if div else gb.op("Mul", xm, _c(gb, 1 / 6))
    return gb.output(y).build()


@pytest.mark.parametrize("div", [True, False])
def test_hardswish_from_relu6(div: bool) -> None:
    before, after, p = apply(_hardswish_relu6(div=div), RULES.only("hardswish_relu6"))
    assert ops(after) == ["HardSwish"]
    assert_same_outputs(before, after, rtol=1e-5, atol=1e-6)


def test_hardswish_relu6_refuses_other_bounds() -> None:
    _, after, p = apply(_hardswish_relu6(hi=5.0), RULES.only("hardswish_relu6"))
    assert "HardSwish" not in ops(after)
    assert p.reasons("hardswish_relu6") == ["Clip bounds are [0.0, 5.0]; HardSwish needs [0, 6]"]
