"""Realize imported QOperator ops as the compiler's int8 ops (same integer semantics; see ir/ops/fused_quant.py).

    QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B?)   ==>  QConv(x, xs, xz, w, ws, wz, ys, yz, B?, out_dtype=yz's type)
    ConvInteger(x, w, xz?, wz?)                    ==>  QConv(x, -, xz?, w, -, wz?, out_dtype="int32")
    QLinearMatMul(a, as, az, b, bs, bz, ys, yz)    ==>  QMatMul(a, as, az, b, bs, bz, ys, yz, out_dtype=yz's type)
    MatMulInteger(a, b, az?, bz?)                  ==>  QMatMul(a, -, az?, b, -, bz?, out_dtype="int32")

The parameters may be run-time inputs (the ONNX node tests feed everything); lowering packs per call then. Refused,
with the reason, is what the int8 kernels do not run: other than 2-D convolutions, 1-D matmul operands, a per-row
A scale or zero point (the kernels take one activation zero point per tensor), and scales of a type whose
combined multiplier is not exactly a float32 (float64).
"""
from __future__ import annotations

from quantgraph.compiler.pattern import Match, Op, RuleSet, Value, rule

#: scale types whose products/quotients the kernels hold exactly in their float32 multiplier
EXACT_SCALES = frozenset({"float32", "float16", "bfloat16"})


def _input(m: Match, node: str, i: int) -> Value | None:
    n = m.node(node)
    t = n.inputs[i] if len(n.inputs) > i else ""
    return Value(t, m.graph.tensors[t]) if t else None


def _scales_refusal(m: Match, node: str, slots: tuple[int, ...]) -> str | None:
    for i in slots:
        s = _input(m, node, i)
        if s is not None and s.dtype not in EXACT_SCALES:
            return f"scale '{s}' is {s.dtype}; the int8 kernels' requantization multiplier is float32"
    return None


def _per_row(v: Value | None) -> bool:
    return v is not None and v.shape is not None and len(v.shape) == 1 and v.shape[0] != 1


@rule(Op("QLinearConv", ..., name="conv"))
def qlinear_conv_to_qconv(m: Match):
    """QLinearConv(...) ==> QConv(..., out_dtype=Y_zero_point's type)."""
    n = m.node("conv")
    if m.graph.tensors[n.inputs[0]].rank != 4:
        return m.fail(f"input has rank {m.graph.tensors[n.inputs[0]].rank}; the int8 conv kernels are 2-D (rank 4)")
    why = _scales_refusal(m, "conv", (1, 4, 6))
    if why:
        return m.fail(why)
    ins = list(n.inputs) + [""] * (9 - len(n.inputs))
    return m.emit("QConv", ins[:9], out_dtype=m.graph.tensors[n.inputs[7]].dtype, **n.attrs)


@rule(Op("ConvInteger", ..., name="conv"))
def conv_integer_to_qconv(m: Match):
    """ConvInteger(x, w, xz?, wz?) ==> QConv(x, -, xz?, w, -, wz?, out_dtype="int32")."""
    n = m.node("conv")
    if m.graph.tensors[n.inputs[0]].rank != 4:
        return m.fail(f"input has rank {m.graph.tensors[n.inputs[0]].rank}; the int8 conv kernels are 2-D (rank 4)")
    ins = list(n.inputs) + [""] * (4 - len(n.inputs))
    return m.emit("QConv", [ins[0], "", ins[2], ins[1], "", ins[3]], out_dtype="int32", **n.attrs)


def _matmul_refusal(m: Match, a: str, b: str, a_zp: Value | None, a_s: Value | None = None) -> str | None:
    ra, rb = m.graph.tensors[a].rank, m.graph.tensors[b].rank
    if ra is None or rb is None or ra < 2 or rb < 2:
        return f"operands have ranks {ra} and {rb}; the int8 GEMM takes 2-D or batched operands"
    if _per_row(a_zp) or _per_row(a_s):
        return "A's zero point or scale is per row; the int8 kernels take one activation zero point per tensor"
    return None


@rule(Op("QLinearMatMul", ..., name="mm"))
def qlinear_matmul_to_qmatmul(m: Match):
    """QLinearMatMul(...) ==> QMatMul(..., out_dtype=Y_zero_point's type)."""
    n = m.node("mm")
    why = _matmul_refusal(m, n.inputs[0], n.inputs[3], _input(m, "mm", 2), _input(m, "mm", 1)) or \
        _scales_refusal(m, "mm", (1, 4, 6))
    if why:
        return m.fail(why)
    return m.emit("QMatMul", list(n.inputs), out_dtype=m.graph.tensors[n.inputs[7]].dtype)


@rule(Op("MatMulInteger", ..., name="mm"))
def matmul_integer_to_qmatmul(m: Match):
    """MatMulInteger(a, b, az?, bz?) ==> QMatMul(a, -, az?, b, -, bz?, out_dtype="int32")."""
    n = m.node("mm")
    ins = list(n.inputs) + [""] * (4 - len(n.inputs))
    why = _matmul_refusal(m, ins[0], ins[1], _input(m, "mm", 2))
    if why:
        return m.fail(why)
    return m.emit("QMatMul", [ins[0], "", ins[2], ins[1], "", ins[3]], out_dtype="int32")


RULES = RuleSet([qlinear_conv_to_qconv, conv_integer_to_qconv, qlinear_matmul_to_qmatmul, matmul_integer_to_qmatmul],
                "realize_qlinear")
