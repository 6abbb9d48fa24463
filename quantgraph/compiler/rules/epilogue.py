"""Activation fusion: an activation after a FusedConv / FusedMatMul moves into its epilogue.

    <act>(F(...))                   ==>  F(..., activation=<act>)       (<act>: a row of ir/ops/activation.py)
    Mul(F(...), Sigmoid(F(...)))    ==>  F(..., activation="silu")
where F is FusedConv or FusedMatMul with no activation yet (Clip(0, 6) is ReLU6: activation "clip", [0, 6]).
Which ops are absorbed, and with which alpha/beta, is read from the activation table.
"""
from __future__ import annotations

from quantgraph.compiler.pattern import Match, Op, RuleSet, rule
from quantgraph.ir.ops.activation import ACTIVATION_OPS, activation_of

FUSED = {"FusedConv", "FusedMatMul"}
_f = Op(FUSED, ..., name="f")


def _refit(m: Match, activation: str, alpha: float = 0.0, beta: float = 0.0):
    f = m.node("f")
    if f.attrs["activation"] != "none":
        return m.fail(f"'{f.name}' already applies {f.attrs['activation']}")
    if m["f"].dtype != "float32":
        return m.fail(f"'{f.name}' is {m['f'].dtype}; fused epilogues are float32")
    return m.emit(f.op, list(f.inputs), **{**f.attrs, "activation": activation, "alpha": float(alpha),
                                           "beta": float(beta)})


@rule(Op(set(ACTIVATION_OPS), _f, ..., name="act"))
def fuse_activation(m: Match):
    """act(F(...)) ==> F(..., activation=act)."""
    node = m.node("act")
    row = activation_of(node)
    if row is None:
        return m.fail(f"{node.op} with attributes {dict(node.attrs)} is no epilogue activation")
    params = row.params(node, lambda t: m.graph.tensors[t].const)
    if isinstance(params, str):
        return m.fail(params)
    return _refit(m, row.name, *params)


@rule(Op("Mul", _f, Op("Sigmoid", _f), commute=True))
def fuse_silu(m: Match):
    """F(...) * Sigmoid(F(...)) ==> F(..., activation="silu")."""
    return _refit(m, "silu")


RULES = RuleSet([fuse_activation, fuse_silu], "epilogue")
