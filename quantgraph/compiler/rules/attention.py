"""Attention fusion: the multi-head self-attention core of PyTorch exports becomes one FusedAttention.

    Reshape(Transpose(MatMul(Softmax(Add?(Div|Mul(MatMul(Tq(Rs(q)), Tk(Rs(k))), c), mask)), Tv(Rs(v))), p), s)
                                                  ==>  FusedAttention(q, k, v, mask?, num_heads=H, scale=1/c | c)

where ``Rs`` splits the hidden size into heads ``(B, S, H*D) -> (B, S, H, D)``, ``Tq = Tv = p = (0, 2, 1, 3)``,
``Tk = (0, 2, 3, 1)`` (K arrives already transposed) and ``s`` merges the heads back into ``(B, Sq, H*Dv)``.
Either MatMul may already be a plain (2-input, no activation) FusedMatMul. The projections feeding q/k/v are not
part of the match, so their bias epilogues fuse as usual.
"""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.pattern import Const, Match, Op, RuleSet, Var, rule
from quantgraph.ir.node import Node
from quantgraph.ir.shapes import broadcast_shapes, normalize_axis, shapes_compatible

_HEADS = (0, 2, 1, 3)
_KEYS_T = (0, 2, 3, 1)


def _plain_product(n: Node) -> bool:
    return n.op == "MatMul" or n.attrs.get("activation", "none") == "none"


def _split(what: str, perm: tuple[int, ...]) -> Op:
    split = Op("Reshape", Var(what), Const(f"{what}_shape"), name=f"{what}_split")
    return Op("Transpose", split, attrs={"perm": perm}, name=f"{what}_t")


_product = {"MatMul", "FusedMatMul"}
_scores = Op(_product, _split("q", _HEADS), _split("k", _KEYS_T), name="scores", where=_plain_product)
_scaled = (Op("Div", _scores, Const("divisor"), name="scale")
           | Op("Mul", _scores, Const("factor"), commute=True, name="scale"))
_logits = Op("Add", _scaled, Var("mask"), commute=True, name="add_mask") | _scaled
_probs = Op("Softmax", _logits, name="softmax")
_context = Op(_product, _probs, _split("v", _HEADS), name="context", where=_plain_product)
_root = Op("Reshape", Op("Transpose", _context, attrs={"perm": _HEADS}, name="merge_t"), Const("merge_shape"),
           name="merge")


def _heads(m: Match, what: str) -> tuple[int, int] | str:
    """(heads, head_size) of the Reshape splitting ``what`` (B, S, H*D) into (B, S, H, D), or why it does not."""
    x, split = m[what].shape, m[f"{what}_split"].shape
    if x is None or len(x) != 3 or not isinstance(x[2], int):
        return f"{what} has shape {x}; expected 3-D (batch, seq, hidden) with a static hidden size"
    if (split is None or len(split) != 4 or not all(isinstance(d, int) for d in split[2:])
            or split[2] * split[3] != x[2] or not shapes_compatible(split[:2], x[:2])):
        return f"the Reshape of {what} gives {split}; expected {x} split into heads (batch, seq, heads, head_size)"
    return split[2], split[3]


def _scale(m: Match) -> float | str:
    c = m["divisor"].value if "divisor" in m else m["factor"].value
    if c.size != 1:
        return f"the scale constant has shape {c.shape}; expected a scalar"
    c = float(np.asarray(c, np.float64).reshape(-1)[0])
    if "divisor" not in m:
        return c
    if c == 0.0:
        return "the scores are divided by zero"
    return 1.0 / c


@rule(_root)
def fuse_attention(m: Match):
    """The multi-head scaled-dot-product core (heads split, scores, softmax, context, heads merged) ==>
    FusedAttention(q, k, v, mask?)."""
    hq, hk, hv = (_heads(m, w) for w in ("q", "k", "v"))
    for h in (hq, hk, hv):
        if isinstance(h, str):
            return m.fail(h)
    if not hq[0] == hk[0] == hv[0]:  # type: ignore[index]
        return m.fail(f"q, k and v are split into {hq[0]}, {hk[0]} and {hv[0]} heads; expected one head count")
    # NOTE: equal q/k head sizes need no check: MatMul's own inference requires them
    softmax = m.node("softmax")
    rank = m["softmax"].rank or 4
    if normalize_axis(softmax.attrs["axis"], rank) != rank - 1:
        return m.fail(f"Softmax normalizes axis {softmax.attrs['axis']}; attention normalizes the keys (last axis)")
    scale = _scale(m)
    if isinstance(scale, str):
        return m.fail(scale)
    scores = m["scores"].shape
    if "mask" in m:
        grown = broadcast_shapes(scores, m["mask"].shape)
        if grown is None or not shapes_compatible(grown, scores):
            return m.fail(f"mask has shape {m['mask'].shape}; it would grow the scores {scores} to {grown}")
    q, out = m["q"].shape, m["merge"].shape
    want = (q[0], q[1], hv[0] * hv[1])  # type: ignore[index]
    if out is None or not shapes_compatible(out, want) or not isinstance(out[2], int):
        return m.fail(f"the merging Reshape gives {out}; expected the heads merged into {want}")
    ins = [m["q"], m["k"], m["v"]] + ([m["mask"]] if "mask" in m else [])
    return m.emit("FusedAttention", ins, num_heads=hq[0], scale=scale)  # type: ignore[index]


RULES = RuleSet([fuse_attention], "attention")
