"""Normalization rewrites: fold inference BatchNormalization into the preceding linear op; recognise LayerNorm.

    BatchNormalization(Conv(x, W, B?))            ==>  Conv(x, W*s, (B-mean)*s + beta)      s = scale/sqrt(var+eps)
    BatchNormalization(Gemm(x, W, C?))            ==>  Gemm(x, W*s, s*(beta_g*C - mean) + beta)   (per output column)
    BatchNormalization(MatMul(x, W))              ==>  FusedMatMul(x, W*s, beta - mean*s)    (2-D MatMul only)
    Add(Mul(Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(Sub(..), 2)), eps))), g), b)
                                                  ==>  LayerNormalization(x, g, b, axis, epsilon=eps)
"""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.pattern import Const, Match, Op, RuleSet, Var, rule
from quantgraph.ir.shapes import format_shape, is_static

_FLOATS = ("float32", "float64", "float16")


def _bn_scale_shift(m: Match, channels: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(s, t) with BN(y) = y*s + t per channel, or why not."""
    params = [m[k].value for k in ("scale", "bias", "mean", "var")]
    if any(p is None for p in params):
        return "BatchNormalization parameters are not constants"
    if any(p.size != channels for p in params):
        return f"BatchNormalization has {params[0].size} channels; the producer has {channels}"
    scale, bias, mean, var = (p.reshape(-1).astype(np.float64) for p in params)
    s = scale / np.sqrt(var + m.node("bn").attrs["epsilon"])
    return s, bias - mean * s


def _bn(producer: Op) -> Op:
    return Op("BatchNormalization", producer, Var("scale"), Var("bias"), Var("mean"), Var("var"), name="bn")


@rule(_bn(Op("Conv", Var("x"), Const("w").dtype(*_FLOATS), ..., name="conv")))
def conv_bn_to_conv(m: Match):
    """BatchNormalization(Conv(x, W, B?)) ==> Conv(x, W', B')."""
    w = m["w"].value
    ss = _bn_scale_shift(m, w.shape[0])
    if isinstance(ss, str):
        return m.fail(ss)
    s, t = ss
    conv = m.node("conv")
    b = m.graph.tensors[conv.inputs[2]].const if len(conv.inputs) > 2 and conv.inputs[2] else None
    if len(conv.inputs) > 2 and conv.inputs[2] and b is None:
        return m.fail("conv bias is not a constant")
    b0 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    w2 = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b2 = (b0 * s + t).astype(w.dtype)
    return m.emit("Conv", [m["x"], m.const(w2, "w"), m.const(b2, "b")], **m.attrs("conv"))


@rule(_bn(Op("Gemm", Var("x"), Const("w").dtype(*_FLOATS), ..., name="gemm")))
def gemm_bn_to_gemm(m: Match):
    """BatchNormalization(Gemm(x, W, C?)) ==> Gemm(x, W', C') (BN over the output's axis 1)."""
    g = m.node("gemm")
    w = m["w"].value
    n_out = w.shape[0] if g.attrs["transB"] else w.shape[1]
    ss = _bn_scale_shift(m, n_out)
    if isinstance(ss, str):
        return m.fail(ss)
    s, t = ss
    c = None
    if len(g.inputs) > 2 and g.inputs[2]:
        c = m.graph.tensors[g.inputs[2]].const
        if c is None:
            return m.fail("Gemm C is not a constant")
    w2 = w.astype(np.float64) * (s[:, None] if g.attrs["transB"] else s[None, :])
    c0 = np.zeros(n_out) if c is None else g.attrs["beta"] * c.astype(np.float64)
    c2 = c0 * s + t
    return m.emit("Gemm", [m["x"], m.const(w2.astype(w.dtype), "w"), m.const(c2.astype(w.dtype), "c")],
                  alpha=g.attrs["alpha"], beta=1.0, transA=g.attrs["transA"], transB=g.attrs["transB"])


@rule(_bn(Op("MatMul", Var("x").rank(2), Const("w").rank(2).dtype(*_FLOATS), name="mm")))
def matmul_bn_to_fused_matmul(m: Match):
    """BatchNormalization(MatMul(x, W)) ==> FusedMatMul(x, W', bias) for 2-D products."""
    w = m["w"].value
    ss = _bn_scale_shift(m, w.shape[1])
    if isinstance(ss, str):
        return m.fail(ss)
    s, t = ss
    w2 = (w.astype(np.float64) * s[None, :]).astype(w.dtype)
    return m.emit("FusedMatMul", [m["x"], m.const(w2, "w"), m.const(t.astype(w.dtype), "bias")])


# -- LayerNormalization ---------------------------------------------------------------------------------------
_x = Var("x")
_mean = Op("ReduceMean", _x, Const("axes1"), name="mean")
_d = Op("Sub", _x, _mean, name="d")
_sq = Op("Pow", _d, Const("two", value=2.0)) | Op("Mul", _d, _d)
_var = Op("ReduceMean", _sq, Const("axes2"), name="var")
_std = Op("Sqrt", Op("Add", _var, Const("eps"), commute=True))
_norm = Op("Div", _d, _std) | Op("Mul", _d, Op("Reciprocal", _std), commute=True)
_scaled = Op("Mul", _norm, Const("gamma"), commute=True)
_ln = (Op("Add", _scaled, Const("beta"), commute=True, name="out")
       | Op("Mul", _norm, Const("gamma"), commute=True, name="out"))


@rule(_ln)
def layer_norm(m: Match):
    """The decomposed LayerNorm of PyTorch exports ==> LayerNormalization(x, gamma, beta)."""
    rank = m["x"].rank
    if rank is None:
        return m.fail("input rank is unknown")
    if rank == 0:
        return m.fail("input is a scalar")
    axes = []
    for k in ("axes1", "axes2"):
        a = sorted(int(i) % rank for i in np.asarray(m[k].value).reshape(-1))
        axes.append(a)
    if axes[0] != axes[1]:
        return m.fail(f"the two ReduceMeans reduce different axes {axes[0]} and {axes[1]}")
    a = axes[0]
    if not a or a != list(range(a[0], rank)):
        return m.fail(f"reduced axes {a} are not the trailing axes of a rank-{rank} input")
    if not (m.node("mean").attrs["keepdims"] and m.node("var").attrs["keepdims"]):
        return m.fail("ReduceMean drops the reduced axes (keepdims=0)")
    if "beta" not in m:
        users = m.consumers("out")
        if len(users) == 1 and users[0].op == "Add" and any(
                m.graph.tensors[t].const is not None for t in users[0].inputs if t):
            return m.fail("a constant Add (beta) follows; the full pattern matches there")
    eps = m["eps"].value
    if eps.size != 1:
        return m.fail(f"epsilon has {eps.size} values; expected a scalar")
    norm_shape = tuple(m["x"].shape[a[0]:])
    if not is_static(norm_shape):
        # NOTE: gamma/beta are expanded to the normalized shape below; an unknown or symbolic dim there (a
        # dynamic hidden size) cannot be expanded at compile time, so the primitive ops stay
        return m.fail(f"normalized dims {format_shape(norm_shape)} are not all static")
    gamma = m["gamma"].value
    beta = m["beta"].value if "beta" in m else np.zeros((), gamma.dtype)
    if m["x"].dtype != "float32" or gamma.dtype != np.float32 or beta.dtype != np.float32:
        return m.fail("LayerNormalization recognition is for float32")
    try:
        g2 = np.broadcast_to(gamma, norm_shape).copy() if gamma.ndim <= len(norm_shape) else None
        b2 = np.broadcast_to(beta, norm_shape).copy() if beta.ndim <= len(norm_shape) else None
    except ValueError:
        g2 = b2 = None
    if g2 is None or b2 is None:
        return m.fail(f"gamma {gamma.shape} / beta {beta.shape} do not broadcast to the normalized shape "
                      f"{norm_shape}")
    return m.emit("LayerNormalization", [m["x"], m.const(g2, "gamma"), m.const(b2, "beta")], axis=a[0],
                  epsilon=float(eps.reshape(-1)[0]))


@rule(Op("BatchNormalization", Var("x").dtype(*_FLOATS), Var("scale"), Var("bias"), Var("mean"), Var("var"), name="bn"))
def batch_norm_to_affine(m: Match):
    """BatchNormalization(x) with nothing to fold into ==> Add(Mul(x, s), t) with per-channel constants."""
    rank = m["x"].rank
    if rank is None or rank < 2:
        return m.fail("input rank is unknown or has no channel axis")
    channels = m["x"].shape[1]
    if not isinstance(channels, int):
        return m.fail("the channel count is not static")
    ss = _bn_scale_shift(m, channels)
    if isinstance(ss, str):
        return m.fail(ss)
    s, t = ss
    shape = (channels,) + (1,) * (rank - 2)
    dt = np.dtype(m["x"].dtype)
    y = m.emit("Mul", [m["x"], m.const(s.astype(dt).reshape(shape), "scale")])
    return m.emit("Add", [y, m.const(t.astype(dt).reshape(shape), "shift")])


BN_FOLDING = RuleSet([conv_bn_to_conv, gemm_bn_to_gemm, matmul_bn_to_fused_matmul], "bn_folding")
BN_AFFINE = RuleSet([batch_norm_to_affine], "bn_affine")
NORMS = RuleSet([layer_norm], "norms")
RULES = BN_FOLDING + BN_AFFINE + NORMS
