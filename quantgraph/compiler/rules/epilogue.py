"""Activation fusion: an activation after a FusedConv / FusedMatMul moves into its epilogue.

    Relu|LeakyRelu|Clip|Sigmoid|Tanh|HardSigmoid|HardSwish|Gelu(F(...))  ==>  F(..., activation=<act>)
    Mul(F(...), Sigmoid(F(...)))                                         ==>  F(..., activation="silu")
where F is FusedConv or FusedMatMul with no activation yet (Clip(0, 6) is ReLU6: activation "clip", [0, 6]).
"""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.pattern import Match, Op, RuleSet, rule

FUSED = {"FusedConv", "FusedMatMul"}
_SIMPLE = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish"}
_f = Op(FUSED, ..., name="f")


def _refit(m: Match, activation: str, alpha: float = 0.0, beta: float = 0.0):
    f = m.node("f")
    if f.attrs["activation"] != "none":
        return m.fail(f"'{f.name}' already applies {f.attrs['activation']}")
    if m["f"].dtype != "float32":
        return m.fail(f"'{f.name}' is {m['f'].dtype}; fused epilogues are float32")
    return m.emit(f.op, list(f.inputs), **{**f.attrs, "activation": activation, "alpha": float(alpha),
                                           "beta": float(beta)})


@rule(Op(set(_SIMPLE) | {"LeakyRelu", "HardSigmoid", "Gelu", "Clip"}, _f, ..., name="act"))
def fuse_activation(m: Match):
    """act(F(...)) ==> F(..., activation=act)."""
    act = m.node("act")
    if act.op in _SIMPLE:
        return _refit(m, _SIMPLE[act.op])
    if act.op == "LeakyRelu":
        return _refit(m, "leaky_relu", act.attrs["alpha"])
    if act.op == "HardSigmoid":
        return _refit(m, "hardsigmoid", act.attrs["alpha"], act.attrs["beta"])
    if act.op == "Gelu":
        return _refit(m, "gelu_tanh" if act.attrs["approximate"] == "tanh" else "gelu")
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        t = act.inputs[i] if len(act.inputs) > i else ""
        if not t:
            bounds.append(default)
            continue
        v = m.graph.tensors[t].const
        if v is None:
            return m.fail("Clip bounds are not constants")
        bounds.append(float(np.asarray(v).reshape(-1)[0]))
    return _refit(m, "clip", bounds[0], bounds[1])


@rule(Op("Mul", _f, Op("Sigmoid", _f), commute=True))
def fuse_silu(m: Match):
    """F(...) * Sigmoid(F(...)) ==> F(..., activation="silu")."""
    return _refit(m, "silu")


RULES = RuleSet([fuse_activation, fuse_silu], "epilogue")
