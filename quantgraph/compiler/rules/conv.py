"""Convolution fusions: every 2-D float Conv becomes a FusedConv, which then absorbs its bias and residual.

    Conv(x, W, B?)                                ==>  FusedConv(x, W, B?)
    Add(FusedConv(x, W, B?), c)                   ==>  FusedConv(x, W, B + c)      (c constant, one value per channel)
    Add(FusedConv(x, W, B?), z)                   ==>  FusedConv(x, W, B?, Z=z)    (z computed, same shape: residual)

and, before quantization (``PAD_FOLDING``, in RECOGNIZE), the explicit zero padding TF-style exporters put in front
of a convolution into the convolution's own pads (one pass over the tensor less; the int8 conv pads with the
activation zero point, so the padded zeros stay exact):

    Conv(Pad(x, pads, 0, mode=constant), W, B?)   ==>  Conv(x, W, B?, pads = pads + conv pads)    (H/W pads only)

and (``CONV1D``, in RECOGNIZE) 1-D convolutions (audio models: silero VAD, speech front ends) as 2-D ones of height
1, so they reach the fp32 and int8 conv kernels; an activation after the Squeeze moves before it, and an
Unsqueeze of a Squeeze on the same axis cancels, so a chain of 1-D convs stays 4-D between them:

    Conv(x[N, C, L], W[M, C/g, k], B?)            ==>  Squeeze(Conv(Unsqueeze(x, 2), W[:, :, None, :], B?), 2)
    act(Squeeze(x, a), ...)                       ==>  Squeeze(act(x, ...), a)      (elementwise activations)
    Unsqueeze(Squeeze(x, a), a)                   ==>  x
"""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.pattern import Const, Match, Op, RuleSet, Var, rule
from quantgraph.ir.ops.shape import _pad_plan


def plain(n) -> bool:  # noqa: ANN001 - a Node
    """A fused op with nothing in its epilogue yet (no activation, no residual)."""
    return n.attrs["activation"] == "none" and not (len(n.inputs) > 3 and n.inputs[3])


@rule(Op("Conv", Var("x"), Var("w"), ..., name="conv"))
def conv_to_fused(m: Match):
    """Conv(x, W, B?) ==> FusedConv(x, W, B?) (NCHW, no epilogue yet)."""
    if m["x"].dtype != "float32":
        return m.fail(f"input is {m['x'].dtype}; FusedConv is float32")
    if m["x"].rank != 4:
        return m.fail(f"input has rank {m['x'].rank}; FusedConv is 2-D (rank 4)")
    if m["w"].value is None:
        return m.fail("W is not a constant")
    conv = m.node("conv")
    return m.emit("FusedConv", list(conv.inputs), **conv.attrs)


@rule(Op("Add", Op("FusedConv", Var("x"), Var("w"), ..., name="conv"), Const("c"), commute=True))
def conv_add_bias(m: Match):
    """Add(FusedConv(x, W, B?), c) ==> FusedConv(x, W, B + c) for a per-channel constant c."""
    conv = m.node("conv")
    if not plain(conv):
        return m.fail("the conv already has an epilogue (activation or residual)")
    if conv.attrs["layout"] != "NCHW":
        return m.fail("the conv is not NCHW")
    c, out = m["c"].value, m["conv"].shape
    channels = m["w"].shape[0]
    if c.ndim > len(out):
        return m.fail(f"constant {c.shape} has more dims than the output {out}")
    full = (1,) * (len(out) - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(full) if i != 1) or full[1] not in (1, channels):
        return m.fail(f"constant {c.shape} is not one value per output channel (expected (1, {channels}, 1, 1))")
    b = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else None
    b0 = np.zeros(channels, c.dtype) if b is None else m.graph.tensors[b].const
    if b0 is None:
        return m.fail("the conv bias is not a constant")
    bias = (b0 + np.broadcast_to(c.reshape(-1), (channels,))).astype(np.float32)
    return m.emit("FusedConv", [m["x"], m["w"], m.const(bias, "b")], **conv.attrs)


@rule(Op("Add", Op("FusedConv", Var("x"), Var("w"), ..., name="conv"), Var("z"), commute=True))
def conv_residual(m: Match):
    """Add(FusedConv(x, W, B?), z) ==> FusedConv(x, W, B?, Z=z): the ResNet shortcut joins the conv's epilogue."""
    conv = m.node("conv")
    if not plain(conv):
        return m.fail("the conv already has an epilogue (activation or residual)")
    if m["z"].value is not None:
        return m.fail("the other operand is a constant (a bias, not a residual)")
    zs, out = m["z"].shape, m["conv"].shape
    if zs != out or out is None or None in out:
        return m.fail(f"residual has shape {zs}; expected the conv output shape {out}")
    ins = list(conv.inputs) + [""] * (3 - len(conv.inputs))
    return m.emit("FusedConv", ins[:3] + [m["z"]], **conv.attrs)


@rule(Op("Conv", Op("Pad", Var("x"), Const("pads"), ..., name="pad"), Var("w"), ..., name="conv"))
def pad_into_conv(m: Match):
    """Conv(Pad(x, pads, 0), W, B?) ==> Conv(x, W, B?) with the spatial pads added to the conv's."""
    pad, conv = m.node("pad"), m.node("conv")
    if pad.attrs["mode"] != "constant":
        return m.fail(f"Pad mode is {pad.attrs['mode']}; only constant (zero) padding is a conv's padding")
    if conv.attrs["auto_pad"] != "NOTSET":
        return m.fail(f"the conv has auto_pad={conv.attrs['auto_pad']}")
    rank = m["x"].rank
    if rank != 4:
        return m.fail(f"the input has rank {rank}; expected 4 (NCHW)")
    for slot in (2, 3):
        t = pad.inputs[slot] if len(pad.inputs) > slot else ""
        if t and m.graph.tensors[t].const is None:
            return m.fail("the pad value or axes are computed, not constants")
    value = pad.inputs[2] if len(pad.inputs) > 2 else ""
    if value and np.any(m.graph.tensors[value].const != 0):
        return m.fail("the pad value is not 0")
    axes = pad.inputs[3] if len(pad.inputs) > 3 else ""
    plan = _pad_plan(pad, rank, [int(v) for v in m["pads"].value.reshape(-1)],
                     None if not axes else [int(v) for v in m.graph.tensors[axes].const.reshape(-1)])
    if any(plan.get(a, (0, 0)) != (0, 0) for a in (0, 1)):
        return m.fail("the Pad pads the batch or channel axis")
    if any(v < 0 for a in (2, 3) for v in plan.get(a, (0, 0))):
        return m.fail("the Pad crops (negative pads)")
    cp = list(conv.attrs["pads"]) or [0, 0, 0, 0]
    (t, b), (lft, r) = plan.get(2, (0, 0)), plan.get(3, (0, 0))
    pads = (cp[0] + t, cp[1] + lft, cp[2] + b, cp[3] + r)
    return m.emit("Conv", [m["x"], *conv.inputs[1:]], **{**conv.attrs, "pads": pads})


def _window(attrs: dict, key: str, one: int, default: int) -> list[int]:
    v = [int(i) for i in attrs.get(key) or ()]
    return [one] + (v or [default])


@rule(Op("Conv", Var("x"), Const("w"), ..., name="conv"))
def conv1d_as_2d(m: Match):
    """Conv(x[N, C, L], W[M, C/g, k], B?) ==> Squeeze(Conv(Unsqueeze(x, 2), W[:, :, None, :], B?), 2)."""
    if m["x"].rank != 3 or m["w"].value.ndim != 3:
        return m.fail(f"input has rank {m['x'].rank}; only 1-D convolutions (rank 3) become 2-D")
    conv = m.node("conv")
    a = conv.attrs
    pads = [int(i) for i in a.get("pads") or (0, 0)]
    attrs = {**a, "kernel_shape": [1, int(m["w"].value.shape[2])], "strides": _window(a, "strides", 1, 1),
             "dilations": _window(a, "dilations", 1, 1), "pads": [0, pads[0], 0, pads[1]]}
    axis = m.const(np.array([2], np.int64), "axis2")
    x4 = m.emit("Unsqueeze", [m["x"], axis])
    w4 = m.const(np.ascontiguousarray(m["w"].value[:, :, None, :]), "w2d")
    y4 = m.emit("Conv", [x4, w4, *conv.inputs[2:]], **attrs)
    return m.emit("Squeeze", [y4, axis])


#: elementwise activations that commute with a Squeeze
_POINTWISE = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Gelu", "Softplus"}


@rule(Op(_POINTWISE, Op("Squeeze", Var("x"), Const("axes"), name="sq"), ..., name="act"))
def activation_before_squeeze(m: Match):
    """act(Squeeze(x, a), ...) ==> Squeeze(act(x, ...), a): the activation then follows the conv it fuses into."""
    act = m.node("act")
    y = m.emit(act.op, [m["x"], *act.inputs[1:]], **act.attrs)
    return m.emit("Squeeze", [y, m["axes"]])


@rule(Op("Unsqueeze", Op("Squeeze", Var("x"), Const("a"), name="sq"), Const("b"), name="un"))
def cancel_squeeze_unsqueeze(m: Match):
    """Unsqueeze(Squeeze(x, a), a) ==> x (the squeezed axes had size 1)."""
    a, b = (sorted(int(i) for i in m[k].value.reshape(-1)) for k in ("a", "b"))
    r = m["x"].rank
    if r is None or [i % r for i in a] != [i % r for i in b]:
        return m.fail(f"the axes differ ({a} vs {b})")
    return m["x"]


RULES = RuleSet([conv_to_fused, conv_add_bias, conv_residual], "conv")
CONV1D = RuleSet([conv1d_as_2d, activation_before_squeeze, cancel_squeeze_unsqueeze], "conv1d")
PAD_FOLDING = RuleSet([pad_into_conv], "pad_folding")
