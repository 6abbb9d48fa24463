"""Cleanup rewrites: ops that do nothing at inference, and transpose/reshape pairs that cancel.

    Identity(x)                          ==>  x
    Dropout(x, ...)                      ==>  x              (inference: training_mode absent or false)
    Reshape(x, s)                        ==>  x              (output shape == input shape, both static)
    Transpose(x, identity perm)          ==>  x
    Cast(x, to=dtype(x))                 ==>  x
    Pad(x, all-zero pads)                ==>  x
    Slice(x, ...)                        ==>  x              (static shape unchanged, every step 1)
    Transpose(Transpose(x, p), q)        ==>  Transpose(x, p[q])   (or x when p[q] is the identity)
    Reshape(Reshape|Flatten|Squeeze|Unsqueeze(x), s)  ==>  Reshape(x, s')
    Sum(a, b)                            ==>  Add(a, b)
"""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.pattern import Any, Const, Match, Op, RuleSet, Var, rule
from quantgraph.ir.shapes import is_static


def _perm(m: Match, name: str) -> tuple[int, ...] | None:
    n = m.node(name)
    p = n.attrs["perm"]
    if p is None:
        r = m.graph.tensors[n.inputs[0]].rank
        return None if r is None else tuple(range(r - 1, -1, -1))
    return tuple(int(i) for i in p)


@rule(Op("Identity", Var("x")))
def eliminate_identity(m: Match):
    """Identity(x) ==> x."""
    return m["x"]


@rule(Op("Dropout", Var("x"), ..., name="drop"))
def eliminate_dropout(m: Match):
    """Dropout(x) ==> x at inference (the mask output, if read, keeps the node alive)."""
    n = m.node("drop")
    if len(n.inputs) > 2 and n.inputs[2]:
        tm = m.graph.tensors[n.inputs[2]].const
        if tm is None:
            return m.fail("training_mode is not a constant")
        if np.asarray(tm).size != 1:
            return m.fail(f"training_mode has {np.asarray(tm).size} values; expected a scalar")
        if bool(np.asarray(tm).reshape(-1)[0]):
            return m.fail("training_mode is true")
    return m["x"]


@rule(Op("Reshape", Var("x"), Any(), name="r"))
def eliminate_noop_reshape(m: Match):
    """Reshape(x, s) ==> x when the static output shape equals the input shape."""
    a, b = m["x"].shape, m["r"].shape
    if not (is_static(a) and is_static(b)):
        return m.fail("shapes are not static")
    if a != b:
        return m.fail(f"reshape changes the shape {a} -> {b}")
    return m["x"]


@rule(Op("Transpose", Var("x"), name="t"))
def eliminate_noop_transpose(m: Match):
    """Transpose(x, perm=identity) ==> x."""
    p = _perm(m, "t")
    if p is None or p != tuple(range(len(p))):
        return m.fail(f"perm {p} is not the identity")
    return m["x"]


@rule(Op("Cast", Var("x"), name="c"))
def eliminate_noop_cast(m: Match):
    """Cast(x, to=dtype(x)) ==> x."""
    if m["x"].dtype != m["c"].dtype:
        return m.fail(f"cast changes the dtype {m['x'].dtype} -> {m['c'].dtype}")
    return m["x"]


@rule(Op("Pad", Var("x"), Const("pads"), ..., name="p"))
def eliminate_noop_pad(m: Match):
    """Pad(x, zeros) ==> x."""
    if np.any(m["pads"].value != 0):
        return m.fail("pads are not all zero")
    return m["x"]


@rule(Op("Slice", Var("x"), Const(), Const(), ..., name="s"))
def eliminate_noop_slice(m: Match):
    """Slice(x, ...) ==> x when it keeps the whole (static) tensor with unit steps."""
    n = m.node("s")
    if len(n.inputs) > 4 and n.inputs[4]:
        steps = m.graph.tensors[n.inputs[4]].const
        if steps is None or np.any(steps != 1):
            return m.fail("steps are not all 1")
    a, b = m["x"].shape, m["s"].shape
    if not (is_static(a) and a == b):
        return m.fail(f"slice changes the shape {a} -> {b} (or it is not static)")
    return m["x"]


@rule(Op("Transpose", Op("Transpose", Var("x"), name="inner"), name="outer"))
def cancel_transposes(m: Match):
    """Transpose(Transpose(x, p), q) ==> Transpose(x, p[q]), or x when that is the identity."""
    p, q = _perm(m, "inner"), _perm(m, "outer")
    if p is None or q is None:
        return m.fail("rank is unknown")
    composed = tuple(p[i] for i in q)
    if composed == tuple(range(len(composed))):
        return m["x"]
    return m.emit("Transpose", [m["x"]], perm=composed)


@rule(Op("Reshape", Op({"Reshape", "Flatten", "Squeeze", "Unsqueeze"}, Var("x"), ..., name="inner"),
         Var("shape"), name="outer"))
def cancel_reshapes(m: Match):
    """Reshape(Reshape(x, *), s) ==> Reshape(x, s'), where s' is s without dims copied (0) from the middle."""
    out = m["outer"].shape
    s = m["shape"].value
    if s is not None and (m.node("outer").attrs["allowzero"] or not np.any(s == 0)):
        return m.emit("Reshape", [m["x"], m["shape"]], allowzero=m.node("outer").attrs["allowzero"])
    if is_static(out):
        return m.emit("Reshape", [m["x"], m.const(np.array(out, np.int64), "shape")])
    return m.fail("the target shape is not constant (or copies dims from the middle) and the output is not static")


@rule(Op("Sum", Var("a"), Var("b")))
def sum_to_add(m: Match):
    """Sum(a, b) ==> Add(a, b) (older exporters write residual adds as a two-input Sum)."""
    return m.emit("Add", [m["a"], m["b"]])


CANONICAL = RuleSet([sum_to_add], "canonical")
ELIMINATE = RuleSet([eliminate_identity, eliminate_dropout, eliminate_noop_reshape, eliminate_noop_transpose,
                     eliminate_noop_cast, eliminate_noop_pad, eliminate_noop_slice], "eliminate")
CANCEL = RuleSet([cancel_transposes, cancel_reshapes], "cancel")
RULES = ELIMINATE + CANCEL + CANONICAL
