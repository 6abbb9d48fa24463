"""Activations written out as primitive ops ==> the registry's single op (the fusion rules then absorb it).

    Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5)                      ==>  Gelu(x)                 (and reorderings)
    Mul(Mul(x, 0.5), Add(Tanh(Mul(Add(x, Mul(Pow(x, 3), 0.044715)), sqrt(2/pi))), 1))
                                                                      ==>  Gelu(x, approximate="tanh")
    Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5))                        ==>  HardSwish(x)
    Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)                              ==>  HardSwish(x)
"""
from __future__ import annotations

import math

from quantgraph.compiler.pattern import Const, Match, Op, Pattern, RuleSet, Var, rule

_FLOATS = ("float32", "float64", "float16")
x = Var("x").dtype(*_FLOATS)


def _half_x_times(one_plus: Pattern) -> Pattern:
    """0.5 * x * one_plus, in the three association orders exporters produce."""
    half = Const(value=0.5)
    return (Op("Mul", Op("Mul", x, one_plus, commute=True), half, commute=True)
            | Op("Mul", Op("Mul", x, half, commute=True), one_plus, commute=True)
            | Op("Mul", x, Op("Mul", one_plus, half, commute=True), commute=True))


_erf_arg = Op("Div", x, Const(value=math.sqrt(2.0))) | Op("Mul", x, Const(value=math.sqrt(0.5)), commute=True)
_erf_one = Op("Add", Op("Erf", _erf_arg), Const(value=1.0), commute=True)


@rule(_half_x_times(_erf_one))
def gelu_erf(m: Match):
    """0.5 * x * (1 + erf(x / sqrt2)) ==> Gelu(x)."""
    return m.emit("Gelu", [m["x"]])


_cube = (Op("Pow", x, Const(value=3.0)) | Op("Mul", x, Op("Mul", x, x), commute=True))
_inner = Op("Add", x, Op("Mul", _cube, Const(value=0.044715), commute=True), commute=True)
_tanh_one = Op("Add", Op("Tanh", Op("Mul", _inner, Const(value=math.sqrt(2.0 / math.pi)), commute=True)),
               Const(value=1.0), commute=True)


@rule(_half_x_times(_tanh_one))
def gelu_tanh(m: Match):
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) ==> Gelu(x, approximate="tanh")."""
    return m.emit("Gelu", [m["x"]], approximate="tanh")


@rule(Op("Mul", x, Op("HardSigmoid", x, name="hs"), commute=True))
def hardswish_hardsigmoid(m: Match):
    """x * HardSigmoid(x, 1/6, 0.5) ==> HardSwish(x)."""
    a = m.attrs("hs")
    if not (math.isclose(a["alpha"], 1 / 6, rel_tol=1e-6) and math.isclose(a["beta"], 0.5, rel_tol=1e-6)):
        return m.fail(f"HardSigmoid has alpha={a['alpha']}, beta={a['beta']}; HardSwish needs 1/6 and 0.5")
    return m.emit("HardSwish", [m["x"]])


_relu6_x3 = Op("Clip", Op("Add", x, Const(value=3.0), commute=True), Const("lo"), Const("hi"))
_x_relu6 = Op("Mul", x, _relu6_x3, commute=True)


@rule(Op("Div", _x_relu6, Const(value=6.0)) | Op("Mul", _x_relu6, Const(value=1 / 6), commute=True))
def hardswish_relu6(m: Match):
    """x * Clip(x + 3, 0, 6) / 6 ==> HardSwish(x)."""
    lo, hi = float(m["lo"].value.reshape(-1)[0]), float(m["hi"].value.reshape(-1)[0])
    if (lo, hi) != (0.0, 6.0):
        return m.fail(f"Clip bounds are [{lo}, {hi}]; HardSwish needs [0, 6]")
    return m.emit("HardSwish", [m["x"]])


RULES = RuleSet([gelu_erf, gelu_tanh, hardswish_hardsigmoid, hardswish_relu6], "activations")
