"""The quantize pass: per-node decisions, the QDQ graph it writes (numerics on the interpreter), compile(quantize=)
options and their errors, and the bundled digits CNN's accuracy for every calibration mode."""
from __future__ import annotations

import numpy as np
import pytest

import quantgraph
from quantgraph import models
from quantgraph.compiler.pipeline import build_quantized
from quantgraph.compiler.quantize import calibrate_graph
from quantgraph.compiler.quantize.quantize import (QuantizeOptions, activation_params, insert_qdq,
                                                   plan_quantization, weight_params)
from quantgraph.errors import InputError
from quantgraph.ir import GraphBuilder, interpreter

f32 = np.float32
rng = np.random.default_rng(5)


def _w(*shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else shape[0]
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(f32)


def _cnn(head: bool = True):
    """conv-relu -> conv + residual -> relu -> maxpool -> conv -> sigmoid (an fp32 reader; without ``head`` the
    last conv is the graph output)."""
    global rng
    rng = np.random.default_rng(5)  # the same weights on every build
    gb = GraphBuilder("cnn")
    x = gb.input("x", ("N", 4, 8, 8), "float32")
    a = gb.op("Relu", gb.op("Conv", x, gb.const(_w(8, 4, 3, 3)), gb.const(rng.standard_normal(8).astype(f32)),
                            pads=(1, 1, 1, 1), name="c1"), name="r1")
    b = gb.op("Conv", a, gb.const(_w(8, 8, 3, 3)), pads=(1, 1, 1, 1), name="c2")
    c = gb.op("Relu", gb.op("Add", b, a, name="add"), name="r2")
    p = gb.op("MaxPool", c, kernel_shape=(2, 2), strides=(2, 2), name="pool", outputs=["pool"])[0]
    d = gb.op("Conv", p, gb.const(_w(6, 8, 1, 1)), name="c3")
    return gb.output(gb.op("Sigmoid", d, name="sig") if head else d).build()


def _mlp():
    """MatMul + bias -> LayerNorm-free fp32 reader (Tanh); a two-activation MatMul (int8, B at run time); an
    excluded-able Gemm."""
    global rng
    rng = np.random.default_rng(6)
    gb = GraphBuilder("mlp")
    x = gb.input("x", ("N", 16), "float32")
    h = gb.op("Add", gb.op("MatMul", x, gb.const(_w(16, 32)), name="mm1"), gb.const(np.zeros(32, f32) + 0.1),
              name="bias1")
    h = gb.op("Relu", h, name="relu1")
    t = gb.op("Tanh", h, name="tanh")
    s = gb.op("MatMul", gb.op("Transpose", t, perm=(1, 0), name="tt"), t, name="gram")  # two activations
    y = gb.op("Gemm", h, gb.const(_w(8, 32)), gb.const(np.zeros(8, f32)), transB=1, name="fc")
    return gb.output(y, s).build()


def _batches(graph, n: int = 4, batch: int = 8, seed: int = 0) -> list[np.ndarray]:
    r = np.random.default_rng(seed)
    shape = [batch if not isinstance(d, int) else d for d in graph.tensors[graph.inputs[0]].shape]
    return [r.standard_normal(shape).astype(f32) for _ in range(n)]


def _prepared(graph):
    first, _ = build_quantized(3)
    return first.run(graph)[0]


def _qdq(graph, options=None, calib=None):
    g = _prepared(graph)
    plan = plan_quantization(g, options)
    stats = calibrate_graph(g, calib or _batches(g), tensors=plan.observe, mode=plan.options.calib_mode,
                            engine="interpreter", progress=False)
    return g, plan, insert_qdq(g.copy(), plan, stats)


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


# -- decisions ----------------------------------------------------------------------------------------------------
def test_cnn_decisions_groups_and_outputs() -> None:
    g = _prepared(_cnn())
    plan = plan_quantization(g)
    d = plan.decisions
    assert d["c1"].precision == "int8" and d["c1"].output == "uint8" and d["r1"].group == "c1"
    assert [d[k].group for k in ("c2", "add", "r2")] == ["c2"] * 3 and d["c2"].output == "uint8"
    assert d["pool"].precision == "int8"                  # a move read by an int8 conv
    assert d["c3"].output == "float32"                    # Sigmoid (fp32) reads it: float output
    assert d["sig"].precision == "fp32" and "no int8 form" in d["sig"].reason
    # the pool's output takes its input's parameters; its input is the residual group's output
    pool_out = g.node("pool").outputs[0]
    assert plan.quantized[pool_out] == g.node("r2").outputs[0]
    assert g.node("r2").outputs[0] in plan.observe and pool_out not in plan.observe
    assert set(plan.weights) == {"c1", "c2", "c3"}
    assert "int8: Add x1, Conv x3, MaxPool x1, Relu x2" in plan.summary() and "fp32: Sigmoid x1" in plan.summary()


def test_mlp_decisions_bias_fp32_readers_and_refusals() -> None:
    plan = plan_quantization(_prepared(_mlp()))
    d = plan.decisions
    assert [d[k].group for k in ("mm1", "bias1", "relu1")] == ["mm1"] * 3
    assert d["mm1"].output == "uint8"                     # the Gemm reads it as int8 (Tanh reads the DQ)
    # both operands are activations: int8 with a run-time B (its Transpose moves int8), no weights to quantize
    assert d["gram"].precision == "int8" and d["gram"].output == "float32" and "gram" not in plan.weights
    assert d["tt"].precision == "int8"
    assert d["fc"].precision == "int8" and d["fc"].output == "float32" and plan.weights["fc"] == (1, 0)
    assert plan.weights["mm1"] == (1, 1)


@pytest.mark.parametrize("pattern", ["c2", "Conv", "c[23]"])
def test_exclude_by_name_op_or_regex(pattern: str) -> None:
    plan = plan_quantization(_prepared(_cnn()), QuantizeOptions(exclude=(pattern,)))
    for n in ("c2", "c3") if pattern != "c2" else ("c2",):
        assert plan.decisions[n].precision == "fp32" and repr(pattern) in plan.decisions[n].reason
    if pattern == "c2":  # its epilogue is no longer fused: the Add stays fp32 (its residual input is c2's)
        assert plan.decisions["c1"].precision == "int8"


# -- parameters ---------------------------------------------------------------------------------------------------
def test_activation_params_hold_zero_exactly_and_cover_the_range() -> None:
    for lo, hi in ((0.0, 6.0), (-1.5, 3.0), (0.2, 0.9), (-4.0, -1.0), (0.0, 0.0)):
        for dtype, (qlo, qhi) in (("uint8", (0, 255)), ("int8", (-128, 127))):
            s, z = activation_params(lo, hi, dtype)
            assert s > 0 and qlo <= z <= qhi
            assert s * (qlo - z) <= min(lo, 0.0) + s / 2 and s * (qhi - z) >= max(hi, 0.0) - s / 2
    assert activation_params(0.0, 6.0, "uint8")[1] == 0     # after ReLU: no zero point


def test_weight_params_symmetric_per_channel() -> None:
    w = _w(5, 3, 3, 3)
    w[2] = 0.0
    q, s = weight_params(w, 0)
    assert q.dtype == np.int8 and s.shape == (5,) and np.abs(q).max() == 127 and not q[2].any()
    assert np.abs(q.astype(f32) * s.reshape(-1, 1, 1, 1) - w).max() <= s.max() / 2 + 1e-7
    qt, st = weight_params(w, None)
    assert st.shape == () and np.abs(qt).max() == 127


# -- the QDQ graph and the compiled int8 graph --------------------------------------------------------------------
@pytest.mark.parametrize("build", [_cnn, _mlp])
def test_qdq_graph_is_close_to_fp32_and_compiled_int8_is_close_to_it(build) -> None:
    fp32, plan, qdq = _qdq(build())
    feeds = {fp32.inputs[0]: _batches(fp32, 1, 4, seed=9)[0]}
    want = interpreter.run(fp32, feeds)
    fake = interpreter.run(qdq, feeds)
    calib = _batches(fp32)
    compiled = quantgraph.compile(build(), quantize="int8", calibration=calib)
    got = dict(zip(compiled.output_names, compiled(feeds)))
    for k in fp32.outputs:
        assert _sqnr(want[k], fake[k]) > 25, k
        assert _sqnr(fake[k], got[k]) > 35, k  # one-level differences where fp32 rounding straddles a boundary
    ops = compiled.graph.op_counts()
    assert "Conv" not in ops and "FusedConv" not in ops and "DequantizeLinear" not in ops or build is _mlp


def test_compiled_int8_equals_its_realized_graph_bit_for_bit() -> None:
    # NOTE: no Sigmoid at the end: the fp32 kernel's exp is within an ulp of numpy's, not equal
    compiled = quantgraph.compile(_cnn(head=False), quantize="int8", calibration=_batches(_cnn()))
    x = _batches(_cnn(), 1, 2, seed=3)[0]
    ref = interpreter.run(compiled.graph, {"x": x})
    np.testing.assert_array_equal(compiled(x)[0], ref[compiled.output_names[0]])
    assert compiled.graph.op_counts().get("QConv") == 3


def test_stats_from_calibrate_compile_like_batches() -> None:
    calib = _batches(_cnn())
    stats = quantgraph.calibrate(_cnn(), calib, progress=False)
    a = quantgraph.compile(_cnn(), quantize="int8", calibration=calib, calib_mode="minmax", bias_correction=False)
    b = quantgraph.compile(_cnn(), quantize="int8", calibration=stats, calib_mode="minmax", bias_correction=False)
    x = calib[0]
    np.testing.assert_array_equal(a(x)[0], b(x)[0])


@pytest.mark.parametrize("mode", ["minmax", "percentile", "entropy"])
def test_digits_int8_within_half_a_point_of_fp32(mode: str) -> None:
    images, labels, calib = models.load_digits_sample()
    path = models.path("digits_cnn.onnx")
    fp32 = quantgraph.compile(path)
    q = quantgraph.compile(path, quantize="int8", calibration=[calib[i:i + 50] for i in range(0, 200, 50)],
                           calib_mode=mode)
    acc = [float((m(images)[0].argmax(1) == labels).mean()) for m in (fp32, q)]
    assert acc[0] - acc[1] <= 0.005, (mode, acc)
    assert q.graph.op_counts().get("QConv") == 3 and "quantization:" in q.summary()


def test_activation_dtype_int8_and_per_tensor_weights() -> None:
    calib = _batches(_cnn())
    q = quantgraph.compile(_cnn(), quantize="int8", calibration=calib, activation_dtype="int8", per_channel=False)
    qconv = [n for n in q.graph if n.op == "QConv"]
    assert {q.graph.tensors[n.inputs[0]].dtype for n in qconv} == {"int8"}
    assert all(q.graph.tensors[n.inputs[4]].const.size == 1 for n in qconv)
    fp = quantgraph.compile(_cnn())
    assert _sqnr(fp(calib[0])[0], q(calib[0])[0]) > 25


# -- errors -------------------------------------------------------------------------------------------------------
def test_option_errors() -> None:
    g = _cnn()
    with pytest.raises(InputError, match="needs calibration="):
        quantgraph.compile(g, quantize="int8")
    with pytest.raises(ValueError, match="without quantize"):
        quantgraph.compile(g, calibration=_batches(g))
    with pytest.raises(ValueError, match="quantize must be"):
        quantgraph.compile(g, quantize="int4", calibration=_batches(g))
    with pytest.raises(ValueError, match="opt_level 1..3"):
        quantgraph.compile(g, opt_level=0, quantize="int8", calibration=_batches(g))
    with pytest.raises(ValueError, match="activation_dtype"):
        quantgraph.compile(g, quantize="int8", calibration=_batches(g), activation_dtype="int4")
    with pytest.raises(ValueError, match="not a valid regex"):
        quantgraph.compile(g, quantize="int8", calibration=_batches(g), exclude=["c[1"])
    with pytest.raises(InputError, match="calibration batch 1: .*NaN"):
        bad = _batches(g)
        bad[1][0, 0, 0, 0] = np.nan
        quantgraph.compile(g, quantize="int8", calibration=bad)
    stats = quantgraph.calibrate(_mlp(), _batches(_mlp()), progress=False)
    with pytest.raises(InputError, match="lack .* tensor"):
        quantgraph.compile(g, quantize="int8", calibration=stats)


def test_an_imported_qdq_graph_needs_no_calibration() -> None:
    _, _, qdq = _qdq(_cnn())
    a = quantgraph.compile(qdq, quantize="int8")
    b = quantgraph.compile(qdq)
    x = _batches(qdq, 1, 2)[0]
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    assert a.graph.op_counts().get("QConv") == 3 and a.quantization is None


def _concat_net():
    """two conv branches -> concat -> conv; a linear Resize; a global pool read only by fp32 (Sigmoid)."""
    global rng
    rng = np.random.default_rng(9)
    gb = GraphBuilder("concat_net")
    x = gb.input("x", ("N", 4, 8, 8), "float32")
    a = gb.op("Relu", gb.op("Conv", x, gb.const(_w(6, 4, 3, 3)), pads=(1, 1, 1, 1), name="ca"), name="ra")
    b = gb.op("Conv", x, gb.const(_w(5, 4, 1, 1)), name="cb")
    up = gb.op("Resize", gb.op("MaxPool", a, kernel_shape=(2, 2), strides=(2, 2), name="mp", outputs=["mp"])[0],
               "", gb.const(np.array([1, 1, 2, 2], f32)), mode="linear", name="up")
    cat = gb.op("Concat", a, b, up, axis=1, name="cat")
    y = gb.op("Conv", cat, gb.const(_w(3, 17, 3, 3)), pads=(1, 1, 1, 1), name="cc")
    gap = gb.op("Sigmoid", gb.op("GlobalAveragePool", a, name="gap"), name="sig")
    return gb.output(y, gap).build()


def test_concat_pool_and_move_decisions() -> None:
    g = _prepared(_concat_net())
    plan = plan_quantization(g)
    d = plan.decisions
    assert d["cat"].precision == "int8" and d["cat"].output == "uint8"
    assert d["up"].precision == "fp32" and "only nearest" in d["up"].reason
    assert d["mp"].precision == "fp32"                    # read only by the fp32 Resize: nothing to gain
    assert d["gap"].precision == "fp32" and d["gap"].reason == "no int8 op reads its output"
    cat_out = g.node("cat").outputs[0]
    # cb's only reader is the Concat: it writes in the Concat's parameters; ra is also read by the pools
    assert plan.quantized[g.node("cb").outputs[0]] == cat_out
    assert plan.quantized[g.node("ra").outputs[0]] == g.node("ra").outputs[0]
    g, plan, qdq = _qdq(_concat_net())
    x = _batches(g, 1, 2, seed=4)[0]
    ref, fake = interpreter.run(g, {"x": x}), interpreter.run(qdq, {"x": x})
    assert _sqnr(ref[g.outputs[0]], fake[g.outputs[0]]) > 30
    compiled = quantgraph.compile(_concat_net(), quantize="int8", calibration=_batches(_concat_net()))
    ops = compiled.graph.op_counts()
    assert ops.get("QConcat") == 1 and ops.get("QConv") == 3, ops
    got = compiled(x)
    np.testing.assert_allclose(got[0], fake[g.outputs[0]], atol=float(np.abs(fake[g.outputs[0]]).max()) * 0.05)
