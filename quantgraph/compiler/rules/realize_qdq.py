"""Realize QDQ-wrapped float ops as int8 ops: ``DequantizeLinear -> op (+ epilogue) -> QuantizeLinear`` in one.

    Q(act?(Conv(DQ(x), DQ(w), DQ(b)|b?) [+ DQ(z)]))         ==>  QConv(x, .., w, .., B_int32?, Z?, activation=act)
    Q(act?(MatMul(DQ(a), DQ(w)) [+ b] [+ DQ(z)]))           ==>  QMatMul(a, .., w, .., bias_int32?, Z?, activation=act)
    Q(act?(MatMul(DQ(a), DQ(b)) [+ DQ(z)]))   b computed    ==>  QMatMul(a, .., b, .., Z?, activation=act)  (run-time B)
    Q(act?(Gemm(DQ(a), DQ(w), DQ(c)|c?) [+ DQ(z)]))         ==>  QMatMul(a, .., w' = op(w), .., bias_int32?, Z?)
    Q(Relu?(Add(DQ(a), DQ(b))))                             ==>  QAdd(a, .., b, .., activation=relu?)
    Q(MaxPool|Flatten|Reshape|Transpose|Slice|Pad|Resize(nearest)|...(DQ(x)))  ==>  the same op on x
                                                            (Q's parameters = DQ's; Pad's value quantized exactly)
    Q(AveragePool|GlobalAveragePool(DQ(x)))                 ==>  QAveragePool(x, .., kind=...)
    Q(Concat(DQ(a), DQ(b), ...))                            ==>  QConcat(a, b, ..., per-input parameters)
    Q(Clip(x, lo, hi)) to int16                             ==>  QuantizeClip(x, .., qmin=Q(lo), qmax=Q(hi))

W8A16: the Conv / MatMul / Gemm rules take an int16 ``x`` (``DQ`` of int16, symmetric) as well; its producer, the
``Clip -> QuantizeLinear(int16)`` the quantizer writes, becomes a QuantizeClip.

The float-output rules (``FLOAT_OUT``, a pass after these) realize the same cores whose output float ops read,
with no QuantizeLinear after them (a classifier's logits, the projection before a LayerNorm):

    act?(Conv(DQ(x), DQ(w), b?) [+ z])                      ==>  QConv(.., out_dtype=float32, Z=z float32?)
    act?(MatMul|Gemm(DQ(a), DQ(w), c?) [+ b] [+ z])         ==>  QMatMul(.., out_dtype=float32, Z=z float32?)
    act?(MatMul(DQ(a), DQ(b)) [+ z])          b computed    ==>  QMatMul(.., out_dtype=float32, Z=z float32?)

A constant scalar Div or Mul after a float-output QMatMul (attention's ``1/sqrt(d)``) folds into its A scale.

``act`` is Relu or Clip with constant bounds; ``DQ(z)`` a residual added before the activation. Activations and
outputs are quantized per tensor, weights per tensor or per output channel (DQ axis 0 for Conv and transB Gemm,
the last axis for MatMul), from int8/uint8 constants. A bias arrives as float or as ``DQ(int32)``; it becomes
int32 in units of ``x_scale * w_scale`` (the int32 values themselves when the bias scale is that product, as
``quantize_static`` writes it, else ``rint(bias / (x_scale * w_scale))``).

Numerics. QAdd and the data-movement ops give the QDQ graph's integers exactly (``Q(DQ(v)) == v`` for equal
parameters; max commutes with the monotonic DQ). QConv/QMatMul compute the exact integer accumulator and requantize
once, as QLinearConv does; the QDQ graph instead rounds every float32 product and sum, so the two can differ by one
level where the float result lies within float32 rounding of a rounding boundary (bounded: tests state it).
"""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.pattern import Const, Match, Op, RuleSet, Value, Var, rule
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.fused_quant import X_DTYPES
from quantgraph.ir.ops.quant import CONV_ATTRS, QUANT_RANGES
from quantgraph.ir.ops.registry import ref
from quantgraph.ir.shapes import normalize_axis

INT8 = ("uint8", "int8")
_I32 = np.iinfo(np.int32)


def _dq(name: str, x):  # noqa: ANN001, ANN202 - a pattern
    return Op("DequantizeLinear", x, Var(f"{name}_s"), ..., name=name)


def _in(m: Match, node: str, i: int) -> Value | None:
    n = m.node(node)
    t = n.inputs[i] if len(n.inputs) > i else ""
    return Value(t, m.graph.tensors[t]) if t else None


def _qdq_params(m: Match, node: str) -> tuple[Value, Value | None]:
    """(scale, zero point or None) of a matched Q/DQ node."""
    return _in(m, node, 1), _in(m, node, 2)


def _per_tensor(m: Match, node: str, what: str) -> str | None:
    """Why the Q/DQ node ``node`` is not usable as a per-tensor quantization of ``what``, or None."""
    n = m.node(node)
    scale, zp = _qdq_params(m, node)
    if n.attrs["block_size"]:
        return f"{what} is block-quantized (block_size {n.attrs['block_size']})"
    if scale.value is None or (zp is not None and zp.value is None):
        return f"{what}'s scale or zero point is not a constant"
    if scale.value.size != 1 or (zp is not None and zp.value.size != 1):
        return f"{what} is quantized per axis; the int8 kernels take per-tensor activations"
    if n.op == "QuantizeLinear" and n.attrs["precision"] not in (None, "float32"):
        return f"{what} is quantized in {n.attrs['precision']}; expected float32"
    return None


def _weights(m: Match, axis: int) -> str | None:
    """Why DQ(w) is not usable as int8 weights quantized per tensor or along ``axis``, or None."""
    n = m.node("dqw")
    w, (scale, zp) = m["w"], _qdq_params(m, "dqw")
    if w.dtype not in INT8:
        return f"weights are {w.dtype}; expected int8 or uint8"
    if n.attrs["block_size"]:
        return f"weights are block-quantized (block_size {n.attrs['block_size']})"
    if scale.value is None or (zp is not None and zp.value is None):
        return "the weights' scale or zero point is not a constant"
    if scale.value.size > 1:
        if normalize_axis(n.attrs["axis"], w.rank) != normalize_axis(axis, w.rank):
            return f"weights are quantized along axis {n.attrs['axis']}; expected the output-channel axis {axis}"
        if scale.value.ndim != 1 or scale.value.size != w.shape[axis]:
            return f"weights have {scale.value.size} scales for {w.shape[axis]} output channels"
    if zp is not None and zp.value.size not in (1, scale.value.size):
        return f"weights have {zp.value.size} zero points for {scale.value.size} scales"
    return None


def _int_bias(m: Match, acc_scale: np.ndarray, n_out: int) -> np.ndarray | str | None:
    """The bias as int32 in units of ``acc_scale`` (x_scale * w_scale per channel), a refusal reason, or None."""
    if "dqb" in m:
        q, (scale, zp) = m["bq"], _qdq_params(m, "dqb")
        if q.dtype != "int32" or scale.value is None or (zp is not None and zp.value is None):
            return "the bias is not a DequantizeLinear of an int32 constant"
        if m.node("dqb").attrs["block_size"]:
            return "the bias is block-quantized"
        zpv = np.zeros(1, np.int64) if zp is None else zp.value.astype(np.int64).reshape(-1)
        sv = scale.value.reshape(-1)
        if q.value.size not in (1, n_out) or sv.size not in (1, n_out) or zpv.size not in (1, n_out):
            return f"the bias has {q.value.size} values, {sv.size} scales for {n_out} output channels"
        unit = np.broadcast_to(acc_scale, (n_out,))
        if not np.any(zpv) and sv.dtype == acc_scale.dtype and np.array_equal(np.broadcast_to(sv, (n_out,)), unit):
            real, exact = None, q.value.astype(np.int64).reshape(-1)  # quantize_static's bias: the values as they are
        else:
            real, exact = (q.value.astype(np.float64).reshape(-1) - zpv) * sv.astype(np.float64), None
    elif "b" in m:
        if m["b"].value is None:
            return "the bias is computed, not a constant"
        if m["b"].dtype not in ("float32", "float16", "float64"):
            return f"the bias is {m['b'].dtype}; expected a float or DequantizeLinear(int32)"
        real, exact = m["b"].value.astype(np.float64).reshape(-1), None
    else:
        return None
    if (real if exact is None else exact).size not in (1, n_out):
        return f"the bias has {(real if exact is None else exact).size} values for {n_out} output channels"
    if exact is None:
        exact = np.rint(np.broadcast_to(real, (n_out,)) / acc_scale.astype(np.float64))
    exact = np.broadcast_to(exact, (n_out,))
    if exact.min() < _I32.min or exact.max() > _I32.max:
        return "the bias does not fit int32 in units of x_scale * w_scale"
    return exact.astype(np.int32)


def _epilogue(m: Match, out_shape: tuple | None) -> dict | str:
    """Activation attributes and the residual inputs (``z, z_scale, z_zp``) of the matched epilogue, or a refusal."""
    attrs: dict = {"activation": "none", "alpha": 0.0, "beta": 0.0}
    if "act" in m:
        act = m.node("act")
        if act.op == "Relu":
            attrs["activation"] = "relu"
        else:
            bounds = []
            for i, default in ((1, -np.inf), (2, np.inf)):
                v = _in(m, "act", i)
                if v is not None and (v.value is None or v.value.size != 1):
                    return "Clip bounds are not constant scalars"
                bounds.append(default if v is None else float(v.value.reshape(-1)[0]))
            attrs.update(activation="clip", alpha=bounds[0], beta=bounds[1])
    res: list = ["", "", ""]
    if "dqz" in m:
        why = _per_tensor(m, "dqz", "the residual")
        if why:
            return why
        if m["z"].dtype not in INT8:
            return f"the residual is {m['z'].dtype}; expected uint8 or int8"
        if m["z"].shape != out_shape or out_shape is None or None in out_shape:
            return f"the residual has shape {m['z'].shape}; expected the output shape {out_shape}"
        scale, zp = _qdq_params(m, "dqz")
        if scale.dtype != "float32":
            return f"the residual's scale is {scale.dtype}; expected float32"
        res = [m["z"], scale, zp or ""]
    elif "z" in m:  # a float residual (the float-output rules)
        z = m["z"]
        if z.value is not None:
            return "the residual is a constant"
        if z.dtype != "float32":
            return f"the residual is {z.dtype}; a float residual must be float32"
        if z.shape != out_shape or out_shape is None or None in out_shape:
            return f"the residual has shape {z.shape}; expected the output shape {out_shape}"
        res = [z, "", ""]
    attrs["residual"] = res
    return attrs


def _output(m: Match) -> tuple[Value, Value | None, str] | str:
    why = _per_tensor(m, "q", "the output")
    if why:
        return why
    ys, yz = _qdq_params(m, "q")
    dtype = m.graph.tensors[m.node("q").outputs[0]].dtype
    if dtype not in INT8:
        return f"the output is quantized to {dtype}; the int8 kernels write uint8 or int8"
    return ys, yz, dtype


def _activation_in(m: Match, what: str, wide: bool = True) -> str | None:
    """Why DQ(x) is not a usable activation input, or None: uint8 / int8, or (``wide``) int16 for W8A16 groups."""
    why = _per_tensor(m, "dqx", what)
    if why:
        return why
    if m["x"].dtype not in (X_DTYPES if wide else INT8):
        return f"{what} is {m['x'].dtype}; expected uint8 or int8" + (" (or int16)" if wide else "")
    return None


def _acc_scale(m: Match) -> np.ndarray:
    xs = m.graph.tensors[m.node("dqx").inputs[1]].const.reshape(())
    return np.asarray(xs * m.graph.tensors[m.node("dqw").inputs[1]].const.reshape(-1)).reshape(-1)


# -- Conv --------------------------------------------------------------------------------------------------------
_x = _dq("dqx", Var("x"))
_w = _dq("dqw", Const("w"))
_conv = (Op("Conv", _x, _w, _dq("dqb", Const("bq")), name="conv") | Op("Conv", _x, _w, Var("b"), name="conv")
         | Op("Conv", _x, _w, name="conv"))


def _with_epilogue(core):  # noqa: ANN001, ANN202 - a pattern
    body = core | Op("Add", core, _dq("dqz", Var("z")), commute=True, name="add")
    mid = body | Op("Relu", body, name="act") | Op("Clip", body, ..., name="act")
    return Op("QuantizeLinear", mid, Var("ys"), ..., name="q")


_SHARED = ("dqx", "dqw", "dqb", "dqz")


def _float_epilogue(core):  # noqa: ANN001, ANN202 - a pattern
    body = core | Op("Add", core, Var("z"), commute=True, name="add")
    return body | Op("Relu", body, name="act") | Op("Clip", body, ..., name="act")


def _float_root(m: Match) -> str | None:
    """Why the float-output rule must leave this match to a larger one (or to the requantizing rules), or None."""
    readers = m.graph.consumers(m.root)
    # NOTE: only a sole QuantizeLinear reader is the requantizing rule's; with other readers too (an int8 group and
    # a W8A16 group reading one float tensor) that rule cannot take it, and the float output serves them all
    if len(readers) == 1 and readers[0].op == "QuantizeLinear" and m.root not in m.graph.outputs:
        return "a QuantizeLinear reads the output: the requantizing rule realizes it"
    if "act" in m or len(readers) != 1 or m.root in m.graph.outputs:
        return None
    r = readers[0]
    if r.op in ("Relu", "Clip"):
        return f"the epilogue continues in {r.op} '{r.name}'"
    other = [t for t in r.inputs if t != m.root]
    if r.op != "Add" or len(other) != 1 or "add" in m:
        return None
    if m.graph.tensors[other[0]].const is None:
        return f"the epilogue continues in the residual Add '{r.name}'"
    if "badd" not in m and "mm" in m and m.node("mm").op == "MatMul" and m["w"].value is not None:
        return f"the epilogue continues in the bias Add '{r.name}'"
    return None


def _conv_rule(m: Match, out: tuple[Value, Value | None, str] | None):
    """QConv for a matched Conv; ``out`` is the requantized output (scale, zero point, dtype), None for float32."""
    conv = m.node("conv")
    if m["x"].rank != 4:
        return m.fail(f"input has rank {m['x'].rank}; the int8 conv kernels are 2-D (rank 4)")
    why = _activation_in(m, "the input") or _weights(m, 0)
    if why:
        return m.fail(why)
    return _emit(m, "QConv", m["w"], m["w"].shape[0], m["conv"].shape, out,
                 {k: conv.attrs[k] for k in CONV_ATTRS})


def _emit(m: Match, op: str, w: Value, n_out: int, core_shape: tuple | None,
          out: tuple[Value, Value | None, str] | None, attrs: dict):
    """The epilogue, the int32 bias and the emitted QConv / QMatMul (``w`` as the kernel reads it), or a refusal."""
    epi = _epilogue(m, core_shape)
    if isinstance(epi, str):
        return m.fail(epi)
    bias = _int_bias(m, _acc_scale(m), n_out)
    if isinstance(bias, str):
        return m.fail(bias)
    (xs, xz), (ws, wz) = _qdq_params(m, "dqx"), _qdq_params(m, "dqw")
    ys, yz, dtype = out or (None, None, "float32")
    res = epi.pop("residual")
    ins = [m["x"], xs, xz, w, ws, wz, ys, yz, None if bias is None else m.const(bias, "bias"), *res]
    return m.emit(op, ins, out_dtype=dtype, **attrs, **epi)


@rule(_with_epilogue(_conv), shared=_SHARED)
def qdq_conv_to_qconv(m: Match):
    """Q(act?(Conv(DQ(x), DQ(w), DQ(b)?) [+ DQ(z)])) ==> QConv(x, xs, xz, w, ws, wz, ys, yz, B?, z?, ...)."""
    out = _output(m)
    return m.fail(out) if isinstance(out, str) else _conv_rule(m, out)


@rule(_float_epilogue(_conv), shared=_SHARED)
def qdq_conv_to_float_qconv(m: Match):
    """act?(Conv(DQ(x), DQ(w), b?) [+ z]) read by float ops ==> QConv(x, .., w, .., B?, z?, out_dtype=float32)."""
    why = _float_root(m)
    return m.fail(why) if why else _conv_rule(m, None)


# -- MatMul / Gemm -----------------------------------------------------------------------------------------------
_matmul = Op("MatMul", _x, _w, name="mm")
_mm = (Op("Add", _matmul, Const("b"), commute=True, name="badd") | _matmul
       | Op("Gemm", _x, _w, _dq("dqb", Const("bq")), name="mm") | Op("Gemm", _x, _w, Var("b"), name="mm")
       | Op("Gemm", _x, _w, name="mm"))


def _matmul_rule(m: Match, out: tuple[Value, Value | None, str] | None):
    """QMatMul for a matched MatMul/Gemm; ``out`` as for :func:`_conv_rule`."""
    mm = m.node("mm")
    w = m["w"]
    if w.rank != 2:
        return m.fail(f"weights have rank {w.rank}; expected a 2-D constant")
    if (m["x"].rank or 0) < 2:
        return m.fail(f"A has rank {m['x'].rank}; the int8 GEMM takes 2-D or batched A")
    trans = False
    if mm.op == "Gemm":
        if mm.attrs["transA"]:
            return m.fail("Gemm with transA=1 (A would need a transpose)")
        if mm.attrs["alpha"] != 1.0 or (mm.attrs["beta"] != 1.0 and len(mm.inputs) > 2):
            return m.fail(f"Gemm with alpha={mm.attrs['alpha']}, beta={mm.attrs['beta']}; expected 1 and 1")
        trans = bool(mm.attrs["transB"])
    why = _activation_in(m, "A") or _weights(m, 0 if trans else 1)
    if why:
        return m.fail(why)
    wk = m.const(np.ascontiguousarray(w.value.T), "w") if trans else w
    return _emit(m, "QMatMul", wk, w.shape[0 if trans else 1], m["badd" if "badd" in m else "mm"].shape, out, {})


@rule(_with_epilogue(_mm), shared=_SHARED)
def qdq_matmul_to_qmatmul(m: Match):
    """Q(act?(MatMul|Gemm(DQ(a), DQ(w), DQ(c)?) [+ b] [+ DQ(z)])) ==> QMatMul(a, .., w', .., ys, yz, bias?, z?)."""
    out = _output(m)
    return m.fail(out) if isinstance(out, str) else _matmul_rule(m, out)


@rule(_float_epilogue(_mm), shared=_SHARED)
def qdq_matmul_to_float_qmatmul(m: Match):
    """act?(MatMul|Gemm(DQ(a), DQ(w), c?) [+ b] [+ z]) read by float ops ==> QMatMul(.., out_dtype=float32)."""
    why = _float_root(m)
    return m.fail(why) if why else _matmul_rule(m, None)


# -- MatMul of two activations ---------------------------------------------------------------------------------
# B is a quantized activation (attention's K^T or V), not a constant: no bias, per-tensor parameters for both.
_mm2 = Op("MatMul", _x, _dq("dqw", Var("w")), name="mm")


def _matmul2_rule(m: Match, out: tuple[Value, Value | None, str] | None):
    """QMatMul with a run-time B for a matched MatMul(DQ(a), DQ(b)); ``out`` as for :func:`_conv_rule`."""
    if m["w"].value is not None:
        return m.fail("B is a constant: the weight rules realize it")
    for what, v in (("A", m["x"]), ("B", m["w"])):
        if (v.rank or 0) < 2:
            return m.fail(f"{what} has rank {v.rank}; the int8 batched matmul takes rank >= 2")
    why = _activation_in(m, "A", wide=False) or _per_tensor(m, "dqw", "B")
    if why:
        return m.fail(why)
    if m["w"].dtype not in INT8:
        return m.fail(f"B is {m['w'].dtype}; expected uint8 or int8")
    return _emit(m, "QMatMul", m["w"], m["w"].shape[-1] if m["w"].shape else 1, m["mm"].shape, out, {})


@rule(_with_epilogue(_mm2), shared=_SHARED)
def qdq_matmul2_to_qmatmul(m: Match):
    """Q(act?(MatMul(DQ(a), DQ(b)) [+ DQ(z)])) with B an activation ==> QMatMul(a, .., b, .., ys, yz, z?)."""
    out = _output(m)
    return m.fail(out) if isinstance(out, str) else _matmul2_rule(m, out)


@rule(_float_epilogue(_mm2), shared=_SHARED)
def qdq_matmul2_to_float_qmatmul(m: Match):
    """act?(MatMul(DQ(a), DQ(b)) [+ z]) with B an activation, read by float ops ==> QMatMul(.., out_dtype=float32)."""
    why = _float_root(m)
    return m.fail(why) if why else _matmul2_rule(m, None)


_qmm = Op("QMatMul", Var("qa"), ..., name="qmm")


@rule(Op("Div", _qmm, Const("c"), name="scale") | Op("Mul", _qmm, Const("c"), commute=True, name="scale"))
def fold_scale_into_qmatmul(m: Match):
    """Div|Mul(QMatMul(.., out_dtype=float32), c) ==> QMatMul(.., A_scale = A_scale / c | A_scale * c): attention's
    1/sqrt(d) after Q @ K^T costs a pass over the scores; in the epilogue's scale it is free."""
    qmm, c = m.node("qmm"), m["c"].value
    if qmm.attrs["out_dtype"] != "float32" or qmm.attrs["activation"] != "none":
        return m.fail("the QMatMul does not write plain float32 (an activation or requantization)")
    if len(qmm.inputs) > 9 and qmm.inputs[9]:
        return m.fail("the QMatMul adds a residual: scaling it too would change the result")
    xs = m.graph.tensors[qmm.inputs[1]] if len(qmm.inputs) > 1 and qmm.inputs[1] else None
    if xs is None or xs.const is None or xs.const.size != 1 or xs.dtype != "float32":
        return m.fail("A_scale is not a constant float32 scalar")
    if c.size != 1 or m["c"].dtype != "float32" or not np.isfinite(c).all() or not c.reshape(-1)[0]:
        return m.fail(f"the factor is {m['c'].dtype}{c.shape}; expected a finite, nonzero float32 scalar")
    f = c.reshape(-1)[0]
    scale = xs.const.reshape(()) / f if m.node("scale").op == "Div" else xs.const.reshape(()) * f
    ins = list(qmm.inputs)
    ins[1] = m.const(np.asarray(scale, np.float32), "A_scale")
    return m.emit("QMatMul", ins, **qmm.attrs)


# -- the int16 input of a W8A16 group -----------------------------------------------------------------------------
_clip = Op("Clip", Var("f"), Const("lo"), Const("hi"), name="clip")


@rule(Op("QuantizeLinear", _clip, Const("ys"), Const("yz"), name="q"))
def clip_quantize_to_quantize_clip(m: Match):
    """Q(Clip(f, lo, hi)) to int16 ==> QuantizeClip(f, ys, yz, qmin=Q(lo), qmax=Q(hi)).

    Exact for any constant bounds: x -> saturate(rint(x / s) + zp) is monotone, so quantizing the clipped value
    is clamping the quantized value to the bounds' levels (a NaN input aside)."""
    why = _per_tensor(m, "q", "the output")
    if why:
        return m.fail(why)
    dtype = m.graph.tensors[m.node("q").outputs[0]].dtype
    if dtype != "int16":
        return m.fail(f"the output is {dtype}; the rule realizes the int16 input of W8A16 groups")
    if m["f"].dtype != "float32" or m["ys"].dtype != "float32":
        return m.fail(f"the input is {m['f'].dtype} and the scale {m['ys'].dtype}; expected float32")
    lo, hi = m["lo"].value, m["hi"].value
    if lo.size != 1 or hi.size != 1 or not float(lo.reshape(-1)[0]) <= float(hi.reshape(-1)[0]):
        return m.fail("the Clip bounds are not ordered scalars")
    qlo, qhi = (int(ref("QuantizeLinear", v.astype(np.float32).reshape(()), m["ys"].value, m["yz"].value))
                for v in (lo, hi))
    return m.emit("QuantizeClip", [m["f"], m["ys"], m["yz"]], qmin=qlo, qmax=qhi)


# -- Add ---------------------------------------------------------------------------------------------------------
_add = Op("Add", _dq("dqa", Var("a")), _dq("dqb", Var("b")), name="add")


@rule(Op("QuantizeLinear", _add | Op("Relu", _add, name="act"), Var("ys"), ..., name="q"), shared=("dqa", "dqb"))
def qdq_add_to_qadd(m: Match):
    """Q(Relu?(Add(DQ(a), DQ(b)))) ==> QAdd(a, as, az, b, bs, bz, ys, yz, activation=relu?)."""
    for node, what in (("dqa", "A"), ("dqb", "B"), ("q", "the output")):
        why = _per_tensor(m, node, what)
        if why:
            return m.fail(why)
        if _qdq_params(m, node)[0].dtype != "float32":
            return m.fail(f"{what}'s scale is {_qdq_params(m, node)[0].dtype}; the int8 add takes float32 scales")
    for v in (m["a"], m["b"]):
        if v.dtype not in INT8:
            return m.fail(f"'{v}' is {v.dtype}; expected uint8 or int8")
    if m["a"].shape != m["b"].shape or m["a"].shape is None or None in m["a"].shape:
        return m.fail(f"operands have shapes {m['a'].shape} and {m['b'].shape}; the int8 add takes equal static "
                      "shapes (no broadcasting)")
    dtype = m.graph.tensors[m.node("q").outputs[0]].dtype
    if dtype not in INT8:
        return m.fail(f"the output is quantized to {dtype}; expected uint8 or int8")
    ins = []
    for node, x, t in (("dqa", m["a"], m["a"].dtype), ("dqb", m["b"], m["b"].dtype), ("q", None, dtype)):
        s, z = _qdq_params(m, node)
        ins += ([x] if x is not None else []) + [s, z if z is not None else m.const(np.zeros((), t), "zero_point")]
    return m.emit("QAdd", ins, activation="relu" if "act" in m else "none")


# -- data movement on int8 ---------------------------------------------------------------------------------------
MOVES = frozenset({"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Pad", "Resize",
                   "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "Identity"})


def move_refusal(g: Graph, n: Node) -> str | None:
    """Why op ``n`` of MOVES does not run on int8 data unchanged, or None (read by the quantizer too)."""
    if n.op == "Resize":
        if n.attrs["mode"] != "nearest":
            return f"Resize mode '{n.attrs['mode']}' interpolates; only nearest moves int8 values unchanged"
        if n.attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
            return "Resize tf_crop_and_resize writes an extrapolation value"
    if n.op == "Pad" and n.attrs["mode"] == "constant" and len(n.inputs) > 2 and n.inputs[2]:
        v = g.tensors[n.inputs[2]].const
        if v is None:
            return "the Pad value is computed, not a constant"
        if v.size > 1:
            return "the Pad value is not a scalar"
    return None


def _pad_value(m: Match) -> Value | str | None:
    """The Pad's constant as the int8 value that dequantizes to it exactly, a refusal, or None (no value: 0)."""
    mid = m.node("mid")
    (xs, xz) = _qdq_params(m, "dqx")
    zp = 0 if xz is None else int(xz.value.reshape(-1)[0])
    v = _in(m, "mid", 2)
    if mid.attrs["mode"] != "constant":
        return None
    fill = 0.0 if v is None or v.value.size == 0 else float(v.value.reshape(-1)[0])
    scale = np.float32(xs.value.reshape(-1)[0])
    q = int(np.rint(np.float32(fill) / scale)) + zp
    lo, hi = QUANT_RANGES[m["x"].dtype]
    if not lo <= q <= hi or np.float32(np.float32(q - zp) * scale) != np.float32(fill):
        return f"the Pad value {fill} is not exactly representable with the input's scale and zero point"
    return m.const(np.asarray(q, m["x"].dtype), "pad_value")


@rule(Op("QuantizeLinear", Op(MOVES, _x, ..., name="mid"), Var("ys"), ..., name="q"), shared=("dqx",))
def qdq_move_to_int8(m: Match):
    """Q(op(DQ(x))) ==> op(x) for data movement and MaxPool, when Q's scale, zero point and type are DQ's."""
    mid = m.node("mid")  # NOTE: the engine refuses it when any of its outputs (MaxPool's Indices) is read elsewhere
    for node, what in (("dqx", "the input"), ("q", "the output")):
        why = _per_tensor(m, node, what)
        if why:
            return m.fail(why)
    (xs, xz), (ys, yz) = _qdq_params(m, "dqx"), _qdq_params(m, "q")
    zero = np.zeros(1)
    same = (xs.dtype == ys.dtype and np.array_equal(xs.value.reshape(-1), ys.value.reshape(-1))
            and m["x"].dtype == m.graph.tensors[m.node("q").outputs[0]].dtype
            and np.array_equal(zero if xz is None else xz.value.reshape(-1), zero if yz is None else
                               yz.value.reshape(-1)))
    if not same:
        return m.fail("the output's scale, zero point or type differ from the input's (a requantization)")
    if m["x"].dtype not in INT8:
        return m.fail(f"the input is {m['x'].dtype}; expected uint8 or int8")
    why = move_refusal(m.graph, mid)
    if why:
        return m.fail(why)
    ins = [m["x"], *mid.inputs[1:]]
    if mid.op == "Pad":
        v = _pad_value(m)
        if isinstance(v, str) and not isinstance(v, Value):  # NOTE: a Value is a str too
            return m.fail(v)
        if v is not None:
            ins = (ins + ["", ""])[:max(len(ins), 3)]
            ins[2] = v
    return m.emit(mid.op, ins, **mid.attrs)


# -- average pooling and concat, requantizing ---------------------------------------------------------------------
POOLS = frozenset({"AveragePool", "GlobalAveragePool"})


def _scalar_params(m: Match, node: str, what: str, dtype: str) -> tuple[Value, Value] | str:
    """(scale, zero point) of per-tensor Q/DQ ``node`` with a float32 scale (a zero of ``dtype`` if it has none)."""
    why = _per_tensor(m, node, what)
    if why:
        return why
    s, z = _qdq_params(m, node)
    if s.dtype != "float32":
        return f"{what}'s scale is {s.dtype}; the int8 kernels take float32 scales"
    return s, z if z is not None else m.const(np.zeros((), dtype), "zero_point")


@rule(Op("QuantizeLinear", Op(POOLS, _x, name="pool"), Var("ys"), ..., name="q"), shared=("dqx",))
def qdq_pool_to_qpool(m: Match):
    """Q(AveragePool|GlobalAveragePool(DQ(x))) ==> QAveragePool(x, xs, xz, ys, yz, kind=...)."""
    if m["x"].dtype not in INT8:
        return m.fail(f"the input is {m['x'].dtype}; expected uint8 or int8")
    dtype = m.graph.tensors[m.node("q").outputs[0]].dtype
    if dtype not in INT8:
        return m.fail(f"the output is quantized to {dtype}; expected uint8 or int8")
    x_p = _scalar_params(m, "dqx", "the input", m["x"].dtype)
    y_p = _scalar_params(m, "q", "the output", dtype)
    for p in (x_p, y_p):
        if isinstance(p, str):
            return m.fail(p)
    pool = m.node("pool")
    return m.emit("QAveragePool", [m["x"], *x_p, *y_p], kind=pool.op, **pool.attrs)


@rule(Op("QuantizeLinear", Op("Concat", ..., name="cat"), Var("ys"), ..., name="q"))
def qdq_concat_to_qconcat(m: Match):
    """Q(Concat(DQ(a), DQ(b), ...)) ==> QConcat(a, b, ..., scales, zero_points, y_scale, y_zero_point)."""
    g = m.graph
    dtype = g.tensors[m.node("q").outputs[0]].dtype
    if dtype not in INT8:
        return m.fail(f"the output is quantized to {dtype}; expected uint8 or int8")
    y_p = _scalar_params(m, "q", "the output", dtype)
    if isinstance(y_p, str):
        return m.fail(y_p)
    xs, scales, zps = [], [], []
    for i, t in enumerate(m.node("cat").inputs):
        dq = g.producer(t)
        if dq is None or dq.op != "DequantizeLinear":
            return m.fail(f"input {i} '{t}' is not dequantized int8 (no DequantizeLinear)")
        x, s, z = (list(dq.inputs) + ["", ""])[:3]
        sv, zv = g.tensors[s].const, (g.tensors[z].const if z else np.zeros(1))
        if g.tensors[x].dtype not in INT8 or dq.attrs["block_size"] or sv is None or zv is None:
            return m.fail(f"input {i} '{t}' is not a per-tensor DequantizeLinear of int8 with constant parameters")
        if sv.size != 1 or zv.size != 1 or g.tensors[s].dtype != "float32":
            return m.fail(f"input {i} '{t}' is not quantized per tensor with a float32 scale")
        xs.append(x)
        scales.append(float(sv.reshape(-1)[0]))
        zps.append(int(zv.reshape(-1)[0]))
    ys, yz = y_p
    return m.emit("QConcat", xs, axis=m.node("cat").attrs["axis"], scales=tuple(scales), zero_points=tuple(zps),
                  y_scale=float(ys.value.reshape(-1)[0]), y_zero_point=int(yz.value.reshape(-1)[0]), out_dtype=dtype)


RULES = RuleSet([qdq_conv_to_qconv, qdq_matmul_to_qmatmul, qdq_matmul2_to_qmatmul, qdq_add_to_qadd, qdq_move_to_int8,
                 qdq_pool_to_qpool, qdq_concat_to_qconcat, clip_quantize_to_quantize_clip], "realize_qdq")
#: run after RULES, once every Q-rooted group is realized: int8 ops whose output float ops read directly
FLOAT_OUT = RuleSet([qdq_conv_to_float_qconv, qdq_matmul_to_float_qmatmul, qdq_matmul2_to_float_qmatmul,
                     fold_scale_into_qmatmul], "realize_qdq_float")
