"""Realization rules: QOperator ops and QDQ-wrapped float ops into QConv / QMatMul / QAdd / int8 data movement.

Each rule: structure (ops after, firing counts), numerics (interpreter before vs after: exact, or within one output
level for the QDQ Conv/MatMul whose float reference rounds every product), and each refusal reason.
"""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.compiler.rules import realize_qdq, realize_qlinear
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.graph import Graph
from quantgraph.ir.interpreter import run
from tests.compiler.test_pattern import apply, feeds_for, ops

QDQ = realize_qdq.RULES
QLINEAR = realize_qlinear.RULES
rng = np.random.default_rng(3)
f32 = np.float32


def _same_ints(before: Graph, after: Graph, seed: int = 0) -> None:
    feeds = feeds_for(before, seed)
    want, got = run(before, feeds), run(after, feeds)
    for k in before.outputs:
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got[k], want[k])


def _within_one_level(before: Graph, after: Graph, scale: float, seed: int = 0) -> float:
    """Outputs (dequantized) agree within one quantization step; returns the fraction of elements that differ."""
    feeds = feeds_for(before, seed)
    want, got = run(before, feeds), run(after, feeds)
    k = before.outputs[0]
    diff = np.abs(got[k].astype(np.float64) - want[k].astype(np.float64))
    assert diff.max() <= scale * 1.0001
    return float(np.count_nonzero(diff) / diff.size)


def _qdq(gb: GraphBuilder, x: str, scale: float, zp: int, dtype: str = "uint8", axis: int = 1) -> str:
    s, z = gb.const(np.array(scale, f32)), gb.const(np.array(zp, dtype))
    return gb.op("DequantizeLinear", gb.op("QuantizeLinear", x, s, z), s, z)


def _dq_weights(gb: GraphBuilder, w: np.ndarray, scales: np.ndarray, axis: int, dtype: str = "int8") -> str:
    zp = np.zeros(scales.shape, dtype)
    return gb.op("DequantizeLinear", gb.const(w.astype(dtype)), gb.const(scales), gb.const(zp), axis=axis)


XS, YS = 0.05, 0.08


def conv_graph(x_shape=(2, 3, 7, 7), cout=6, bias="dq", act=None, residual=False, per_channel=True,
               w_axis=0, w_dtype="int8", out_dtype="uint8", x_scale_input=False) -> Graph:
    gb = GraphBuilder("qdq_conv")
    x = gb.input("x", x_shape, "float32")
    xs = gb.input("xs", (), "float32") if x_scale_input else gb.const(np.array(XS, f32))
    xz = gb.const(np.array(128, np.uint8))
    dqx = gb.op("DequantizeLinear", gb.op("QuantizeLinear", x, xs, xz), xs, xz)
    cin = x_shape[1]
    w = rng.integers(-127, 128, (cout, cin, 3, 3))
    ws = rng.uniform(0.01, 0.03, cout if per_channel else ()).astype(f32)
    dqw = _dq_weights(gb, w, ws if w_axis == 0 or not per_channel else rng.uniform(0.01, 0.03, cin).astype(f32),
                      w_axis, w_dtype)
    b = None
    if bias == "dq":
        bq = rng.integers(-300, 300, cout).astype(np.int32)
        bs = (f32(XS) * ws).astype(f32)
        b = gb.op("DequantizeLinear", gb.const(bq), gb.const(np.broadcast_to(bs, (cout,)).copy()),
                  gb.const(np.zeros(cout, np.int32)), axis=0)
    elif bias == "float":
        b = gb.const(rng.standard_normal(cout).astype(f32) * 0.1)
    elif bias == "computed":
        b = gb.input("b", (cout,), "float32")
    y = gb.op("Conv", dqx, dqw, b, pads=(1, 1, 1, 1))
    if residual:
        z = gb.input("z", (x_shape[0], cout, x_shape[2], x_shape[3]), "float32")
        y = gb.op("Add", y, _qdq(gb, z, 0.04, 100))
    if act == "relu":
        y = gb.op("Relu", y)
    elif act == "clip":
        y = gb.op("Clip", y, gb.const(np.array(-1.0, f32)), gb.const(np.array(4.0, f32)))
    elif act == "clip_runtime":
        y = gb.op("Clip", y, gb.input("lo", (), "float32"), None)
    ys, yz = gb.const(np.array(YS, f32)), gb.const(np.array(3, out_dtype))
    out = gb.op("DequantizeLinear", gb.op("QuantizeLinear", y, ys, yz), ys, yz)
    return gb.output(out).build()


@pytest.mark.parametrize("bias", ["dq", "float", None])
@pytest.mark.parametrize("act", [None, "relu", "clip"])
def test_qdq_conv_structure_and_numerics(bias, act) -> None:
    before, after, p = apply(conv_graph(bias=bias, act=act), QDQ.only("qdq_conv_to_qconv"))
    assert p.counts == {"qdq_conv_to_qconv": 1}
    assert ops(after) == ["QuantizeLinear", "QConv", "DequantizeLinear"]
    q = next(n for n in after.topo() if n.op == "QConv")
    assert q.attrs["activation"] == (act or "none") and q.attrs["out_dtype"] == "uint8"
    assert after.tensors[q.inputs[3]].dtype == "int8"  # the weights stay int8 constants
    if bias is not None:
        assert after.tensors[q.inputs[8]].dtype == "int32"
    _within_one_level(before, after, YS)


def test_qdq_conv_bias_from_quantize_static_keeps_its_integers() -> None:
    g = conv_graph(bias="dq")
    bq = next(n for n in g.topo() if n.op == "DequantizeLinear" and g.tensors[n.inputs[0]].dtype == "int32")
    want = g.tensors[bq.inputs[0]].const
    _, after, _ = apply(g, QDQ.only("qdq_conv_to_qconv"))
    q = next(n for n in after.topo() if n.op == "QConv")
    np.testing.assert_array_equal(after.tensors[q.inputs[8]].const, want)


def test_qdq_conv_residual_and_per_tensor_weights() -> None:
    before, after, p = apply(conv_graph(residual=True, per_channel=False, act="relu"), QDQ.only("qdq_conv_to_qconv"))
    assert p.counts == {"qdq_conv_to_qconv": 1}
    q = next(n for n in after.topo() if n.op == "QConv")
    assert q.inputs[9] and after.tensors[q.inputs[9]].dtype == "uint8"  # the residual stays int8
    _within_one_level(before, after, YS)


def test_qdq_conv_mismatches_are_rare_and_one_level() -> None:
    before, after, _ = apply(conv_graph(x_shape=(4, 3, 12, 12)), QDQ.only("qdq_conv_to_qconv"))
    frac = _within_one_level(before, after, YS, seed=1)
    assert frac < 0.01, frac  # the float QDQ reference differs from exact integers only near .5 boundaries


def _reason(graph: Graph, rules=QDQ, name="qdq_conv_to_qconv") -> str:
    _, after, p = apply(graph, rules.only(name))
    assert p.counts.get(name, 0) == 0
    return p.reasons(name)[0]


def test_qdq_conv_refusals() -> None:
    assert _reason(conv_graph(w_axis=1)) == "weights are quantized along axis 1; expected the output-channel axis 0"
    assert _reason(conv_graph(w_dtype="int16")) == "weights are int16; expected int8 or uint8"
    assert _reason(conv_graph(out_dtype="int16")) == "the output is quantized to int16; the int8 kernels write " \
                                                     "uint8 or int8"
    assert _reason(conv_graph(bias="computed")) == "the bias is computed, not a constant"
    assert _reason(conv_graph(act="clip_runtime")) == "Clip bounds are not constant scalars"
    assert _reason(conv_graph(x_scale_input=True)) == "the input's scale or zero point is not a constant"
    gb = GraphBuilder("rank3")
    dqx = _qdq(gb, gb.input("x", (1, 3, 8), "float32"), XS, 128)
    y = gb.op("Conv", dqx, _dq_weights(gb, rng.integers(-5, 5, (4, 3, 3)), np.ones(4, f32), 0))
    g = gb.output(_qdq(gb, y, YS, 0)).build()
    assert _reason(g) == "input has rank 3; the int8 conv kernels are 2-D (rank 4)"
    gb = GraphBuilder("per_axis_x")
    s, z = gb.const(np.full(3, XS, f32)), gb.const(np.zeros(3, np.uint8))
    x = gb.input("x", (1, 3, 6, 6), "float32")
    dqx = gb.op("DequantizeLinear", gb.op("QuantizeLinear", x, s, z, axis=1), s, z, axis=1)
    y = gb.op("Conv", dqx, _dq_weights(gb, rng.integers(-5, 5, (4, 3, 3, 3)), np.ones(4, f32), 0))
    assert _reason(gb.output(_qdq(gb, y, YS, 0)).build()) == "the input is quantized per axis; the int8 kernels " \
                                                             "take per-tensor activations"
    gb = GraphBuilder("bias_int8")
    dqx = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), XS, 128)
    b = gb.op("DequantizeLinear", gb.const(np.ones(4, np.int8)), gb.const(np.array(0.1, f32)))
    y = gb.op("Conv", dqx, _dq_weights(gb, rng.integers(-5, 5, (4, 3, 3, 3)), np.ones(4, f32), 0), b)
    assert _reason(gb.output(_qdq(gb, y, YS, 0)).build()) == "the bias is not a DequantizeLinear of an int32 constant"
    gb = GraphBuilder("huge_bias")
    dqx = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), XS, 128)
    y = gb.op("Conv", dqx, _dq_weights(gb, rng.integers(-5, 5, (4, 3, 3, 3)), np.full(4, 1e-6, f32), 0),
              gb.const(np.full(4, 1e6, f32)))
    assert _reason(gb.output(_qdq(gb, y, YS, 0)).build()) == "the bias does not fit int32 in units of x_scale * " \
                                                             "w_scale"


def test_qdq_conv_shared_input_and_output_readers() -> None:
    """Two convs read one DQ (shared); a conv whose float output is also read elsewhere is left alone."""
    gb = GraphBuilder("shared")
    dqx = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), XS, 128)
    outs = []
    for _ in range(2):
        y = gb.op("Conv", dqx, _dq_weights(gb, rng.integers(-9, 9, (4, 3, 3, 3)), np.full(4, 0.02, f32), 0),
                  pads=(1, 1, 1, 1))
        outs.append(_qdq(gb, y, YS, 3))
    before, after, p = apply(gb.output(*outs).build(), QDQ.only("qdq_conv_to_qconv"))
    assert p.counts == {"qdq_conv_to_qconv": 2} and ops(after).count("QConv") == 2
    gb = GraphBuilder("leak")
    dqx = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), XS, 128)
    y = gb.op("Conv", dqx, _dq_weights(gb, rng.integers(-9, 9, (4, 3, 3, 3)), np.full(4, 0.02, f32), 0))
    g = gb.output(_qdq(gb, gb.op("Relu", y), YS, 3), y).build()
    _, after, p = apply(g, QDQ.only("qdq_conv_to_qconv"))
    assert "QConv" not in ops(after) and any("is also used by" in r or "graph output" in r
                                             for r in p.reasons("qdq_conv_to_qconv"))


def matmul_graph(op="MatMul", a_shape=(2, 5, 12), n=7, trans_b=1, alpha=1.0, trans_a=0, bias=True,
                 w_axis=None) -> Graph:
    gb = GraphBuilder("qdq_mm")
    dqa = _qdq(gb, gb.input("a", a_shape, "float32"), XS, 120)
    k = a_shape[0] if trans_a else a_shape[-1]
    ws = rng.uniform(0.01, 0.03, n).astype(f32)
    if op == "MatMul":
        axis = 1 if w_axis is None else w_axis
        w = _dq_weights(gb, rng.integers(-127, 128, (k, n)), rng.uniform(0.01, 0.03, (k, n)[axis]).astype(f32), axis)
        y = gb.op("MatMul", dqa, w)
    else:
        shape = (n, k) if trans_b else (k, n)
        w = _dq_weights(gb, rng.integers(-127, 128, shape), ws, (0 if trans_b else 1) if w_axis is None else w_axis)
        c = gb.const(rng.standard_normal(n).astype(f32) * 0.2) if bias else None
        y = gb.op("Gemm", dqa, w, c, transB=trans_b, alpha=alpha, transA=trans_a)
    return gb.output(_qdq(gb, y, YS, 5, "int8")).build()


@pytest.mark.parametrize("op,trans_b", [("MatMul", 0), ("Gemm", 1), ("Gemm", 0)])
def test_qdq_matmul_structure_and_numerics(op, trans_b) -> None:
    a_shape = (2, 5, 12) if op == "MatMul" else (6, 12)
    before, after, p = apply(matmul_graph(op, a_shape=a_shape, trans_b=trans_b), QDQ.only("qdq_matmul_to_qmatmul"))
    assert p.counts == {"qdq_matmul_to_qmatmul": 1}
    assert ops(after) == ["QuantizeLinear", "QMatMul", "DequantizeLinear"]
    q = next(n for n in after.topo() if n.op == "QMatMul")
    assert after.tensors[q.inputs[3]].shape == (12, 7) and q.attrs["out_dtype"] == "int8"
    _within_one_level(before, after, YS)


def test_qdq_matmul_refusals() -> None:
    name = "qdq_matmul_to_qmatmul"
    assert _reason(matmul_graph("Gemm", a_shape=(6, 12), alpha=0.5), name=name) == \
        "Gemm with alpha=0.5, beta=1.0; expected 1 and 1"
    assert _reason(matmul_graph("Gemm", a_shape=(12, 6), trans_a=1), name=name) == \
        "Gemm with transA=1 (A would need a transpose)"
    assert _reason(matmul_graph("MatMul", w_axis=0), name=name) == \
        "weights are quantized along axis 0; expected the output-channel axis 1"
    assert _reason(matmul_graph("MatMul", a_shape=(12,)), name=name) == \
        "A has rank 1; the int8 GEMM takes 2-D or batched A"


def add_graph(shape_b=(2, 4, 5, 5), relu=True, b_scale_dtype="float32", out_dtype="uint8") -> Graph:
    gb = GraphBuilder("qdq_add")
    a = _qdq(gb, gb.input("a", (2, 4, 5, 5), "float32"), 0.03, 128)
    bs = gb.const(np.array(0.05, b_scale_dtype))
    bz = gb.const(np.array(100, np.uint8))
    b = gb.op("DequantizeLinear", gb.op("QuantizeLinear", gb.input("b", shape_b, "float32"), bs, bz), bs, bz,
              output_dtype="float32")
    y = gb.op("Add", a, b)
    if relu:
        y = gb.op("Relu", y)
    ys, yz = gb.const(np.array(0.06, f32)), gb.const(np.array(0, out_dtype))
    return gb.output(gb.op("QuantizeLinear", y, ys, yz)).build()


def test_qdq_add_is_exact() -> None:
    for relu in (True, False):
        before, after, p = apply(add_graph(relu=relu), QDQ.only("qdq_add_to_qadd"))
        assert p.counts == {"qdq_add_to_qadd": 1}
        assert ops(after) == ["QuantizeLinear", "QuantizeLinear", "QAdd"]
        assert after.topo()[-1].attrs["activation"] == ("relu" if relu else "none")
        _same_ints(before, after)


def test_qdq_add_refusals() -> None:
    name = "qdq_add_to_qadd"
    assert "no broadcasting" in _reason(add_graph(shape_b=(1, 4, 1, 1)), name=name)
    assert _reason(add_graph(b_scale_dtype="float16"), name=name) == \
        "B's scale is float16; the int8 add takes float32 scales"
    assert _reason(add_graph(out_dtype="int16"), name=name) == \
        "the output is quantized to int16; expected uint8 or int8"


def move_graph(op="MaxPool", same=True, **attrs) -> Graph:
    gb = GraphBuilder("move")
    x = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), 0.05, 7)
    y = gb.op(op, x, **attrs)
    y = y[0] if isinstance(y, tuple) else y
    return gb.output(_qdq(gb, y, 0.05 if same else 0.06, 7)).build()


def test_qdq_moves_are_exact() -> None:
    for op, attrs in (("MaxPool", {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "strides": (2, 2)}),
                      ("Flatten", {"axis": 1}), ("Transpose", {"perm": (0, 2, 3, 1)})):
        before, after, p = apply(move_graph(op, **attrs), QDQ.only("qdq_move_to_int8"))
        assert p.counts == {"qdq_move_to_int8": 1}, op
        assert ops(after) == ["QuantizeLinear", op, "DequantizeLinear"]
        assert after.tensors[after.topo()[1].outputs[0]].dtype == "uint8"
        _same_ints(before, after)


def test_qdq_move_refusals() -> None:
    name = "qdq_move_to_int8"
    assert _reason(move_graph(same=False, kernel_shape=(2, 2)), name=name) == \
        "the output's scale, zero point or type differ from the input's (a requantization)"
    gb = GraphBuilder("indices")
    x = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), 0.05, 7)
    y, idx = gb.op("MaxPool", x, kernel_shape=(2, 2), outputs=2)
    assert _reason(gb.output(_qdq(gb, y, 0.05, 7), idx).build(), name=name) == \
        f"interior value '{idx}' (MaxPool) is a graph output"


def test_qdq_new_moves_are_exact() -> None:
    gb = GraphBuilder("slice_resize_pad")
    x = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), 0.05, 7)
    cases = (("Slice", [gb.const(np.array([1, 0], np.int64)), gb.const(np.array([5, 4], np.int64)),
                        gb.const(np.array([2, 3], np.int64))], {}),
             ("Resize", ["", gb.const(np.array([1, 1, 2, 2], f32))], {"mode": "nearest"}),
             ("Pad", [gb.const(np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64))], {}),
             ("Pad", [gb.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), gb.const(np.array(0.35, f32))], {}),
             ("Pad", [gb.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], {"mode": "reflect"}))
    outs = [_qdq(gb, gb.op(op, x, *ins, **attrs), 0.05, 7) for op, ins, attrs in cases]
    before, after, p = apply(gb.output(*outs).build(), QDQ.only("qdq_move_to_int8"))
    assert p.counts == {"qdq_move_to_int8": 5}
    assert sorted(o for o in ops(after) if o not in ("QuantizeLinear", "DequantizeLinear")) == \
        ["Pad", "Pad", "Pad", "Resize", "Slice"]
    for n in after.topo():
        if n.op in ("Pad", "Resize", "Slice"):
            assert after.tensors[n.outputs[0]].dtype == "uint8", n
    _same_ints(before, after)  # the Pad value 0.35 = (14 - 7) * 0.05 is padded as the exact level 14


def test_qdq_new_move_refusals() -> None:
    name = "qdq_move_to_int8"
    gb = GraphBuilder("linear")
    x = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), 0.05, 7)
    y = gb.op("Resize", x, "", gb.const(np.array([1, 1, 2, 2], f32)), mode="linear")
    assert _reason(gb.output(_qdq(gb, y, 0.05, 7)).build(), name=name) == \
        "Resize mode 'linear' interpolates; only nearest moves int8 values unchanged"
    gb = GraphBuilder("pad_value")
    x = _qdq(gb, gb.input("x", (1, 3, 6, 6), "float32"), 0.05, 7)
    y = gb.op("Pad", x, gb.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), gb.const(np.array(0.01, f32)))
    assert _reason(gb.output(_qdq(gb, y, 0.05, 7)).build(), name=name) == \
        "the Pad value 0.009999999776482582 is not exactly representable with the input's scale and zero point"


def pool_graph(op="AveragePool", x_dtype="uint8", **attrs) -> Graph:
    gb = GraphBuilder("pool")
    # NOTE: scales of no simple ratio: with 0.05 / 0.02 many averages land exactly on a .5 tie, where the two
    # float32 computations round apart
    x = _qdq(gb, gb.input("x", (2, 5, 7, 6), "float32"), 0.0517, 100 if x_dtype == "uint8" else -3, x_dtype)
    y = gb.op(op, x, **attrs)
    return gb.output(_qdq(gb, y, 0.0213, 90)).build()


@pytest.mark.parametrize("op,attrs", [
    ("AveragePool", {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "strides": (2, 2)}),
    ("AveragePool", {"kernel_shape": (3, 2), "pads": (1, 0, 1, 1), "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": (2, 2), "ceil_mode": 1, "strides": (2, 2)}),
    ("GlobalAveragePool", {})])
def test_qdq_average_pool_within_one_level(op, attrs) -> None:
    for x_dtype in ("uint8", "int8"):
        before, after, p = apply(pool_graph(op, x_dtype, **attrs), QDQ.only("qdq_pool_to_qpool"))
        assert p.counts == {"qdq_pool_to_qpool": 1}
        assert ops(after) == ["QuantizeLinear", "QAveragePool", "DequantizeLinear"]
        assert after.topo()[1].attrs["kind"] == op
        # exact int32 window sums vs the QDQ graph's float32 average: at most one level, and rarely
        assert _within_one_level(before, after, 0.0213) < 0.02


def concat_graph(params=((0.05, 7), (0.02, 128), (0.03, 3)), out=(0.03, 3), axis=1, const_input=False) -> Graph:
    gb = GraphBuilder("concat")
    xs = [_qdq(gb, gb.input(f"x{i}", (2, 2 + i, 4, 5), "float32"), s, z) for i, (s, z) in enumerate(params)]
    if const_input:
        xs.append(gb.const(np.ones((2, 1, 4, 5), f32)))
    return gb.output(_qdq(gb, gb.op("Concat", *xs, axis=axis), *out)).build()


def test_qdq_concat_is_exact() -> None:
    before, after, p = apply(concat_graph(), QDQ.only("qdq_concat_to_qconcat"))
    assert p.counts == {"qdq_concat_to_qconcat": 1}
    assert ops(after).count("QConcat") == 1 and ops(after)[-1] == "DequantizeLinear"
    n = [n for n in after.topo() if n.op == "QConcat"][0]
    assert n.attrs["zero_points"] == (7, 128, 3) and n.attrs["y_zero_point"] == 3
    _same_ints(before, after)


def test_qdq_concat_refusals() -> None:
    assert _reason(concat_graph(const_input=True), name="qdq_concat_to_qconcat").startswith(
        "input 3 ") and "is not dequantized int8" in _reason(concat_graph(const_input=True),
                                                             name="qdq_concat_to_qconcat")


# -- QOperator ops -------------------------------------------------------------------------------------------------
def _qlinear_conv_graph(x_shape=(1, 4, 6, 6), scale_dtype="float32") -> Graph:
    gb = GraphBuilder("qlinear")
    x = gb.input("x", x_shape, "uint8")
    k = (3, 3) if len(x_shape) == 4 else (3,)
    c = lambda v, d: gb.const(np.array(v, d))  # noqa: E731
    w = gb.const(rng.integers(-100, 100, (5, x_shape[1], *k)).astype(np.int8))
    y = gb.op("QLinearConv", x, c(0.02, scale_dtype), c(120, "uint8"), w, c(0.01, scale_dtype), c(0, "int8"),
              c(0.1, scale_dtype), c(10, "uint8"), gb.const(rng.integers(-99, 99, 5).astype(np.int32)), pads=(1,) * 4
              if len(k) == 2 else (1, 1))
    return gb.output(y).build()


def test_qlinear_ops_realize_exactly() -> None:
    before, after, p = apply(_qlinear_conv_graph(), QLINEAR)
    assert p.counts == {"qlinear_conv_to_qconv": 1} and ops(after) == ["QConv"]
    _same_ints(before, after)
    gb = GraphBuilder("ops")
    x = gb.input("x", (1, 4, 6, 6), "uint8")
    w = gb.const(rng.integers(0, 255, (3, 4, 3, 3)).astype(np.uint8))
    y1 = gb.op("ConvInteger", x, w, gb.const(np.array(5, np.uint8)), gb.const(np.array(128, np.uint8)))
    a = gb.input("a", (3, 8), "int8")
    b = gb.const(rng.integers(-128, 128, (8, 5)).astype(np.int8))
    y2 = gb.op("MatMulInteger", a, b, gb.const(np.array(2, np.int8)), None)
    c = lambda v, d: gb.const(np.array(v, d))  # noqa: E731
    y3 = gb.op("QLinearMatMul", a, c(0.1, "float32"), c(1, "int8"), b, c(0.02, "float32"), c(0, "int8"),
               c(0.3, "float32"), c(-4, "int8"))
    before, after, p = apply(gb.output(y1, y2, y3).build(), QLINEAR)
    assert p.counts == {"conv_integer_to_qconv": 1, "matmul_integer_to_qmatmul": 1, "qlinear_matmul_to_qmatmul": 1}
    assert sorted(ops(after)) == ["QConv", "QMatMul", "QMatMul"]
    _same_ints(before, after)


def test_qlinear_refusals() -> None:
    assert _reason(_qlinear_conv_graph(x_shape=(1, 4, 6)), QLINEAR, "qlinear_conv_to_qconv") == \
        "input has rank 3; the int8 conv kernels are 2-D (rank 4)"
    assert "is float64; the int8 kernels' requantization multiplier is float32" in \
        _reason(_qlinear_conv_graph(scale_dtype="float64"), QLINEAR, "qlinear_conv_to_qconv")
    gb = GraphBuilder("per_row")
    a = gb.input("a", (3, 8), "uint8")
    b = gb.const(rng.integers(-128, 128, (8, 5)).astype(np.int8))
    g = gb.output(gb.op("MatMulInteger", a, b, gb.const(np.arange(3).astype(np.uint8)), None)).build()
    assert _reason(g, QLINEAR, "matmul_integer_to_qmatmul") == \
        "A's zero point or scale is per row; the int8 kernels take one activation zero point per tensor"
    gb = GraphBuilder("vector")
    a = gb.input("a", (8,), "int8")
    g = gb.output(gb.op("MatMulInteger", a, gb.const(rng.integers(-128, 128, (8, 5)).astype(np.int8)))).build()
    assert _reason(g, QLINEAR, "matmul_integer_to_qmatmul") == \
        "operands have ranks 1 and 2; the int8 GEMM takes 2-D or batched operands"
    gb = GraphBuilder("conv_integer_1d")
    x = gb.input("x", (1, 4, 9), "uint8")
    g = gb.output(gb.op("ConvInteger", x, gb.const(np.ones((2, 4, 3), np.uint8)))).build()
    assert _reason(g, QLINEAR, "conv_integer_to_qconv") == "input has rank 3; the int8 conv kernels are 2-D (rank 4)"
