"""int8 MatMul of two activations (attention's Q @ K^T and P @ V): the quantizer's decisions, the QDQ graph it writes,
the realized QMatMul with a run-time B, and its lowering onto the batched int8 kernel (``kernels/bmm_int8.py``),
bit-exact against the QMatMul reference on every ISA rung in reach. In the `rungs` subset (tests/conftest.py)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import quantgraph
from quantgraph import config
from quantgraph.bench.models import bert_encoder, sample_inputs
from quantgraph.compiler.pipeline import build_quantized
from quantgraph.compiler.quantize import calibrate_graph
from quantgraph.compiler.quantize.quantize import QuantizeOptions, insert_qdq, plan_quantization
from quantgraph.errors import KernelError
from quantgraph.ir import GraphBuilder, interpreter
from quantgraph.kernels import cache
from quantgraph.kernels.bmm_int8 import BatchedGemm, bmm_u8s8s32
from quantgraph.kernels.epilogue import Epilogue
from tests.kernels.conftest import CACHE_DIR, ISAS

f32 = np.float32


@pytest.fixture(autouse=True, scope="module")
def _kernel_cache_dir():
    with config.override(cache_dir=CACHE_DIR):  # the kernel tests' persistent cache: one compile per kernel kind
        yield


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


def _attention(seq: int = 12, d: int = 8):
    """x -> q, k, v projections -> softmax(q @ k^T / c) @ v -> projection: the two products read activations only."""
    rng = np.random.default_rng(1)
    gb = GraphBuilder("attn")
    x = gb.input("x", ("N", seq, 16), "float32")
    q, k, v = (gb.op("MatMul", x, gb.const((rng.standard_normal((16, d)) / 4).astype(f32)), name=f"proj_{w}")
               for w in "qkv")
    kt = gb.op("Transpose", k, perm=(0, 2, 1), name="kt")
    s = gb.op("Div", gb.op("MatMul", q, kt, name="scores"), gb.const(np.asarray(np.sqrt(d), f32)), name="div")
    p = gb.op("Softmax", s, axis=-1, name="softmax")
    ctx = gb.op("MatMul", p, v, name="context")
    y = gb.op("MatMul", ctx, gb.const((rng.standard_normal((d, 16)) / 3).astype(f32)), name="out")
    return gb.output(y).build()


def _products(a_shape: tuple, b_shape: tuple, head: str = "float"):
    """MatMul(x, y) of two graph inputs; ``head``: "float" (the product is the output), "int8" (a weight MatMul
    reads it, so it writes int8), "residual" (+ x2, Relu: the epilogue)."""
    rng = np.random.default_rng(2)
    gb = GraphBuilder("products")
    x, y = gb.input("x", a_shape, "float32"), gb.input("y", b_shape, "float32")
    p = gb.op("MatMul", x, y, name="mm")
    if head == "int8":
        n = b_shape[-1]
        p = gb.op("MatMul", p, gb.const(rng.standard_normal((n, 5)).astype(f32)), name="after")
    elif head == "residual":
        z = gb.input("z", a_shape[:-1] + b_shape[-1:], "float32")  # batch dimensions alike
        p = gb.op("Relu", gb.op("Add", p, z, name="res"), name="relu")
    return gb.output(p).build()


def _feeds(graph, seed: int, batch: int = 2) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    shape = lambda t: [d if isinstance(d, int) else batch for d in graph.tensors[t].shape]  # noqa: E731
    return {t: r.standard_normal(shape(t)).astype(f32) + 0.3 for t in graph.inputs}


def _batched_steps(compiled, feeds: dict) -> int:
    """How many steps of the plan for ``feeds`` run the batched run-time-B kernel."""
    return sum(isinstance(fn, BatchedGemm) for fn, _ in compiled.plan_for(feeds).steps)


def _prepared(graph):
    return build_quantized(3)[0].run(graph)[0]


# -- decisions ----------------------------------------------------------------------------------------------------
def test_attention_products_are_planned_int8_with_b_quantized_as_an_activation() -> None:
    g = _prepared(_attention())
    plan = plan_quantization(g)
    d = plan.decisions
    assert d["scores"].precision == "int8" and d["scores"].output == "float32"   # Div / Softmax read it
    assert d["context"].precision == "int8" and d["context"].output == "uint8"   # the projection reads it int8
    assert d["kt"].precision == "int8"                                            # K^T moves as int8
    assert "scores" not in plan.weights and "context" not in plan.weights
    # B gets a Q -> DQ pair of its own: K^T takes the calibrated parameters of k, the softmax output its own
    k, kt, p = g.node("proj_k").outputs[0], g.node("kt").outputs[0], g.node("softmax").outputs[0]
    assert plan.quantized[kt] == k and k in plan.observe and p in plan.observe
    assert ("scores", 1) in plan.readers[kt] and ("context", 0) in plan.readers[p]
    assert d["softmax"].precision == "fp32" and d["div"].precision == "fp32"


def test_refusals_keep_fp32_with_a_reason() -> None:
    gb = GraphBuilder("refuse")
    x = gb.input("x", ("N", 8), "float32")
    v = gb.op("Relu", gb.op("ReduceSum", x, gb.const(np.asarray([0], np.int64)), keepdims=0, name="sum"), name="rv")
    gb.output(gb.op("MatMul", x, v, name="mv"))                            # B has rank 1
    t = gb.op("Transpose", x, perm=(1, 0), name="xt")
    gb.output(gb.op("Gemm", x, t, name="gemm"))                           # a Gemm's B is computed
    gb.output(gb.op("MatMul", x, t, name="gram"))                         # fine: int8 unless excluded
    g = _prepared(gb.build())
    d = plan_quantization(g).decisions
    assert d["mv"].precision == "fp32" and "rank >= 2" in d["mv"].reason and "ranks 2 and 1" in d["mv"].reason
    assert d["gemm"].precision == "fp32" and "weights of the Gemm are computed" in d["gemm"].reason
    assert d["gram"].precision == "int8"
    d = plan_quantization(g, QuantizeOptions(exclude=("gram",))).decisions
    assert d["gram"].precision == "fp32" and "excluded" in d["gram"].reason


def test_realization_refuses_a_b_quantized_per_axis() -> None:
    """A QDQ graph whose B is quantized per column (not per tensor) keeps its float MatMul: nothing wrong runs."""
    gb = GraphBuilder("per_axis")
    x, y = gb.input("x", (4, 6), "float32"), gb.input("y", (6, 3), "float32")
    qx = gb.op("QuantizeLinear", x, gb.const(np.asarray(0.02, f32)), gb.const(np.asarray(128, np.uint8)))
    dx = gb.op("DequantizeLinear", qx, gb.const(np.asarray(0.02, f32)), gb.const(np.asarray(128, np.uint8)))
    ys, yz = gb.const(np.full(3, 0.03, f32)), gb.const(np.full(3, 120, np.uint8))
    dy = gb.op("DequantizeLinear", gb.op("QuantizeLinear", y, ys, yz, axis=1), ys, yz, axis=1)
    g = gb.output(gb.op("MatMul", dx, dy, name="mm")).build()
    compiled = quantgraph.compile(g)
    assert "QMatMul" not in compiled.graph.op_counts()
    feeds = _feeds(g, 0)
    np.testing.assert_allclose(compiled(feeds)[0], interpreter.run(g, feeds)[g.outputs[0]], rtol=1e-5, atol=1e-5)


# -- the QDQ graph and the compiled int8 graph --------------------------------------------------------------------
def _qdq_sqnr(model, exclude: tuple[str, ...] = ()) -> tuple[float, list]:
    """SQNR of the QDQ graph's output against fp32 (interpreter), and the calibration batches."""
    g = _prepared(model.copy())
    plan = plan_quantization(g, QuantizeOptions(exclude=exclude))
    calib = [_feeds(g, s, batch=4) for s in range(8)]
    stats = calibrate_graph(g, calib, tensors=plan.observe, engine="interpreter", progress=False)
    qdq = insert_qdq(g.copy(), plan, stats)
    feeds = _feeds(g, 9)
    out = g.outputs[0]
    return _sqnr(interpreter.run(g, feeds)[out], interpreter.run(qdq, feeds)[out]), calib


def test_qdq_attention_is_close_to_fp32_and_compiles_to_int8_products() -> None:
    model = _attention()
    int8, calib = _qdq_sqnr(model)
    kept, _ = _qdq_sqnr(model, exclude=("scores", "context"))
    assert int8 > 18 and int8 > kept - 3, (int8, kept)  # the two products cost little next to the projections
    compiled = quantgraph.compile(model, quantize="int8", calibration=calib)
    ops = compiled.graph.op_counts()
    assert ops.get("QMatMul") == 6 and "MatMul" not in ops and "FusedAttention" not in ops and "Div" not in ops, ops
    g = _prepared(model.copy())
    feeds = _feeds(g, 9)
    assert _sqnr(interpreter.run(compiled.graph, feeds)[compiled.output_names[0]], compiled(feeds)[0]) > 35


@pytest.mark.parametrize("head", ["float", "int8", "residual"])
@pytest.mark.parametrize("activation_dtype", ["uint8", "int8"])
def test_compiled_products_equal_their_realized_graph_bit_for_bit(head: str, activation_dtype: str) -> None:
    model = _products(("N", 3, 10, 12), ("N", 3, 12, 7), head)
    calib = [_feeds(model, s) for s in range(3)]
    q = quantgraph.compile(model, quantize="int8", calibration=calib, activation_dtype=activation_dtype)
    runtime_b = [n for n in q.graph if n.op == "QMatMul" and q.graph.tensors[n.inputs[3]].const is None]
    assert len(runtime_b) == 1 and q.graph.tensors[runtime_b[0].inputs[3]].dtype == activation_dtype
    want = {"float": "float32", "int8": activation_dtype, "residual": "float32"}[head]
    assert runtime_b[0].attrs["out_dtype"] == want
    if head == "residual":
        assert runtime_b[0].attrs["activation"] == "relu" and runtime_b[0].inputs[9]
    feeds = _feeds(model, 7)
    assert _batched_steps(q, feeds) == 1
    ref = interpreter.run(q.graph, feeds)[q.output_names[0]]
    np.testing.assert_array_equal(q(feeds)[0], ref)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((2, 3, 9, 5), (2, 3, 5, 11)),      # batched B, one per (batch, head)
    ((2, 3, 9, 5), (5, 11)),            # one 2-D B for every A item
    ((9, 5), (4, 5, 11)),               # 2-D A against batched B
    ((2, 1, 9, 5), (1, 3, 5, 11)),      # both broadcast
    ((1, 37, 70), (1, 70, 45)),         # K not a multiple of 4, N not of 32, M past a row tile
])
def test_batched_and_broadcast_b_compile_bit_exact(a_shape: tuple, b_shape: tuple) -> None:
    model = _products(a_shape, b_shape)
    calib = [_feeds(model, s) for s in range(3)]
    q = quantgraph.compile(model, quantize="int8", calibration=calib)
    assert q.graph.op_counts().get("QMatMul") == 1
    feeds = _feeds(model, 5)
    got = q(feeds)[0]
    np.testing.assert_array_equal(got, interpreter.run(q.graph, feeds)[q.output_names[0]])
    fp = interpreter.run(model, feeds)[model.outputs[0]]
    assert got.shape == fp.shape and _sqnr(fp, got) > 25


# -- the kernel against the QMatMul reference ---------------------------------------------------------------------
def _qmatmul_graph(a: np.ndarray, b: np.ndarray, za: int, zb, out_dtype: str, *, activation: str = "none",
                   b_scale: np.ndarray | None = None, bias: np.ndarray | None = None, z: np.ndarray | None = None,
                   clip: tuple[float, float] = (0.0, 0.0)):
    """QMatMul(a, .., b, ..) with a and b (and the residual z) graph inputs, every parameter a constant (``zb`` one
    zero point or one per column)."""
    gb = GraphBuilder("qmm")
    ai, bi = gb.input("a", a.shape, str(a.dtype)), gb.input("b", b.shape, str(b.dtype))
    bs = gb.const(np.asarray(0.011, f32) if b_scale is None else b_scale)
    ins = [ai, gb.const(np.asarray(0.02, f32)), gb.const(np.asarray(za, a.dtype)), bi, bs,
           gb.const(np.asarray(zb, b.dtype))]
    if out_dtype in ("uint8", "int8"):
        ins += [gb.const(np.asarray(0.9, f32)), gb.const(np.asarray(3, out_dtype))]
    else:
        ins += ["", ""]
    ins.append(gb.const(bias) if bias is not None else "")
    if z is not None:
        zi = gb.input("z", z.shape, str(z.dtype))
        ins += [zi] + ([gb.const(np.asarray(0.05, f32)), gb.const(np.asarray(7, z.dtype))] if z.dtype != f32 else [])
    y = gb.op("QMatMul", *ins, out_dtype=out_dtype, activation=activation, alpha=clip[0], beta=clip[1], name="qmm")
    return gb.output(y).build()


def _ints(rng, dtype: str, shape: tuple) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _check_against_reference(g, feeds: dict, batched: bool = True) -> None:
    compiled = quantgraph.compile(g)
    assert [ln.kernel.name for ln in compiled.lowered] == ["qmatmul_int8"]
    assert _batched_steps(compiled, feeds) == int(batched)
    np.testing.assert_array_equal(compiled(feeds)[0], interpreter.run(g, feeds)[g.outputs[0]])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("types", [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8"), ("int8", "uint8")])
@pytest.mark.parametrize("out_dtype", ["float32", "uint8"])
def test_kernel_is_bit_exact_on_every_rung(isa: str, types: tuple[str, str], out_dtype: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{types}{out_dtype}".encode()))
    a, b = _ints(rng, types[0], (2, 2, 19, 13)), _ints(rng, types[1], (2, 2, 13, 37))
    za, zb = (int(rng.integers(np.iinfo(t).min, np.iinfo(t).max + 1)) for t in types)
    with config.override(isa=isa):
        _check_against_reference(_qmatmul_graph(a, b, za, zb, out_dtype), {"a": a, "b": b})


@pytest.mark.parametrize("case", ["int32", "int8_out", "bias_and_b_scale_per_column", "relu_int8_residual",
                                  "clip_float_residual", "extreme_zero_points"])
def test_kernel_epilogues(case: str) -> None:
    rng = np.random.default_rng(11)
    a, b = _ints(rng, "uint8", (3, 17, 24)), _ints(rng, "uint8", (3, 24, 40))
    za, zb, kw, feeds = 9, 130, {}, {"a": a, "b": b}
    out = {"int32": "int32", "int8_out": "int8", "relu_int8_residual": "uint8"}.get(case, "float32")
    if case == "bias_and_b_scale_per_column":
        kw = {"bias": rng.integers(-5000, 5000, 40).astype(np.int32),
              "b_scale": rng.uniform(0.01, 0.02, 40).astype(f32)}
    elif case == "relu_int8_residual":
        kw = {"z": _ints(rng, "int8", (3, 17, 40)), "activation": "relu"}
    elif case == "clip_float_residual":
        kw = {"z": rng.standard_normal((3, 17, 40)).astype(f32), "activation": "clip", "clip": (-20.0, 30.0)}
    elif case == "extreme_zero_points":
        a, b = np.full((3, 17, 24), 255, np.uint8), np.zeros((3, 24, 40), np.uint8)
        za, zb, feeds = 0, 255, {"a": a, "b": b}
    if "z" in kw:
        feeds["z"] = kw["z"]
    _check_against_reference(_qmatmul_graph(a, b, za, zb, out, **kw), feeds)


def test_kernel_per_column_b_zero_point_is_exact_on_the_per_call_path() -> None:
    """A zero point per column of B cannot be one row term: the lowering packs per call instead (still exact)."""
    rng = np.random.default_rng(4)
    a, b = _ints(rng, "uint8", (2, 5, 8)), _ints(rng, "uint8", (2, 8, 6))
    g = _qmatmul_graph(a, b, 3, np.arange(6, dtype=np.uint8) * 20, "float32", b_scale=np.full(6, 0.01, f32))
    _check_against_reference(g, {"a": a, "b": b}, batched=False)


def test_kernel_checks_its_arguments_before_any_jit_code_runs() -> None:
    a, b = np.zeros((2, 4, 6), np.uint8), np.zeros((2, 6, 3), np.uint8)
    with pytest.raises(KernelError, match="A's K = 6 but B's K = 5"):
        bmm_u8s8s32(a, np.zeros((2, 5, 3), np.uint8))
    with pytest.raises(KernelError, match="B is float32; expected uint8 or int8"):
        bmm_u8s8s32(a, b.astype(f32))
    with pytest.raises(KernelError, match="batch dimensions do not broadcast"):
        bmm_u8s8s32(a, np.zeros((3, 6, 3), np.uint8))
    with pytest.raises(KernelError, match="rank >= 2"):
        bmm_u8s8s32(a, np.zeros(6, np.uint8))
    with pytest.raises(KernelError, match=r"out is float32\(2, 4, 3\); expected int32\(2, 4, 3\)"):
        bmm_u8s8s32(a, b, out=np.zeros((2, 4, 3), f32))
    epi = Epilogue(out_dtype="float32", scale=f32(0.1), residual=np.zeros((2, 4, 4), f32))
    with pytest.raises(KernelError, match="residual is float32\\(2, 4, 4\\); expected .* shape \\(2, 4, 3\\)"):
        bmm_u8s8s32(a, b, epilogue=epi)


def test_kernel_compiles_once_per_kind_not_per_shape() -> None:
    rng = np.random.default_rng(3)
    epi = Epilogue(out_dtype="float32", scale=f32(0.5))
    bmm_u8s8s32(_ints(rng, "uint8", (2, 3, 8)), _ints(rng, "uint8", (2, 8, 5)), 1, 2, epilogue=epi)
    before = cache.cache_info()
    for m, k, n in ((1, 1, 1), (33, 70, 65), (8, 64, 128)):
        a, b = _ints(rng, "uint8", (3, m, k)), _ints(rng, "uint8", (k, n))
        want = ((a.astype(np.int64) - 1) @ (b.astype(np.int64) - 2)).astype(np.int32).astype(f32) * f32(0.5)
        np.testing.assert_array_equal(bmm_u8s8s32(a, b, 1, 2, epilogue=epi), want)
    after = cache.cache_info()
    assert after["compiles"] == before["compiles"] and after["disk_loads"] == before["disk_loads"]


# -- attention end to end -----------------------------------------------------------------------------------------
def test_bert_attention_runs_int8_or_fused_fp32_when_excluded() -> None:
    model = bert_encoder(layers=1, hidden=64, heads=2, seq=16, batch="B", mask=True)
    calib = [sample_inputs(model, batch=2, seed=10 + i) for i in range(4)]
    feeds = sample_inputs(model, batch=2, seed=99)
    fp32 = quantgraph.compile(model)(feeds)[0]
    q = quantgraph.compile(model, quantize="int8", calibration=calib)
    d = q.quantization.decisions
    products = [k for k, v in d.items() if v.op == "MatMul" and k.startswith(("scores_", "context_"))]
    assert len(products) == 2 and all(d[k].precision == "int8" for k in products)
    ops = q.graph.op_counts()
    assert ops.get("QMatMul") == 8 and "FusedAttention" not in ops and "Div" not in ops, ops
    got = q(feeds)[0]
    assert _sqnr(interpreter.run(q.graph, feeds)[q.output_names[0]], got) > 40
    assert _sqnr(fp32, got) > 25
    kept = quantgraph.compile(model, quantize="int8", calibration=calib, exclude=["scores_.*", "context_.*"])
    assert kept.graph.op_counts().get("FusedAttention") == 1   # fused after quantization, as at fp32
    assert all(kept.quantization.decisions[k].precision == "fp32" for k in products)
    assert _sqnr(fp32, kept(feeds)[0]) > 25
