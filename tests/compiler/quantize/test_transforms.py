"""The accuracy transforms of the quantizer, each on a seeded model with the pathology it targets: calibration by
least squared error (mse / auto), cross-layer equalization, bias correction, SmoothQuant; fp32 unchanged by the
graph rewrites; option errors."""
from __future__ import annotations

import numpy as np
import pytest

import quantgraph
from quantgraph.compiler.pipeline import build_quantized
from quantgraph.compiler.quantize.equalize import equalize, pairs
from quantgraph.compiler.quantize.observers import HistogramObserver
from quantgraph.compiler.quantize.smooth import candidates, smooth
from quantgraph.ir import GraphBuilder, interpreter

f32 = np.float32


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


def _int8_sqnr(build, calib, test, **opts) -> float:
    """SQNR of int8 vs fp32 with ``opts`` over the baseline (minmax, no bias correction)."""
    opts = {"calib_mode": "minmax", "bias_correction": False, **opts}
    fp32 = build()
    want = interpreter.run(fp32, {"x": test})[fp32.outputs[0]]
    m = quantgraph.compile(build(), quantize="int8", calibration=calib, **opts)
    return _sqnr(want, m({"x": test})[0])


def _prepared(graph):
    return build_quantized(3)[0].run(graph)[0]


# -- mse / auto -------------------------------------------------------------------------------------------------
def test_mse_and_auto_ranges_on_a_long_tail() -> None:
    r = np.random.default_rng(0)
    x = r.standard_t(3, 200_000).astype(f32)            # long-tailed: minmax wastes most levels on the tail
    obs = HistogramObserver()
    obs.observe(x)
    err = {m: obs.quant_error(*obs.range(m)) for m in ("minmax", "percentile", "entropy", "mse", "auto")}
    assert err["mse"] < 0.75 * err["minmax"]             # measured 0.66 (percentile, entropy: 2.0, 1.9)
    assert err["auto"] == min(err.values())
    lo, hi = obs.range("mse")
    assert obs.min < lo < 0 < hi < obs.max
    # the model of the error: close to the measured error of quantizing with that range
    step = (hi - lo) / 255
    q = np.clip(np.rint((x - lo) / step), 0, 255) * step + lo
    assert abs(np.mean((q - x) ** 2.0) / err["mse"] - 1) < 0.2


def _tail_mlp():
    gb = GraphBuilder("tail")
    x = gb.input("x", ("N", 32), "float32")
    w = np.random.default_rng(1).standard_normal((32, 16)).astype(f32)
    gb.output(gb.op("MatMul", x, gb.const(w), name="mm"))
    return gb.build()


def test_mse_calibration_raises_sqnr_on_a_long_tail() -> None:
    r = np.random.default_rng(2)
    calib = [r.standard_t(3, (1024, 32)).astype(f32) for _ in range(4)]
    test = r.standard_t(3, (1024, 32)).astype(f32)
    base = _int8_sqnr(_tail_mlp, calib, test)
    assert _int8_sqnr(_tail_mlp, calib, test, calib_mode="mse") > base + 1
    assert _int8_sqnr(_tail_mlp, calib, test, calib_mode="auto") > base + 1


def test_stats_answer_the_new_modes() -> None:
    stats = quantgraph.calibrate(_tail_mlp(), [np.random.default_rng(3).standard_t(2, (64, 32)).astype(f32)],
                                 mode="entropy", progress=False)
    for mode in ("mse", "auto"):
        assert stats.with_mode(mode).range("x") == stats.range("x", mode=mode)
    with pytest.raises(ValueError, match="calibration mode must be one of"):
        quantgraph.compile(_tail_mlp(), quantize="int8", calibration=[np.zeros((2, 32), f32)], calib_mode="best")


# -- cross-layer equalization ------------------------------------------------------------------------------------
def _separable():
    """pointwise -> relu -> depthwise (per-channel weight ranges 1000x apart) -> relu -> pointwise."""
    r = np.random.default_rng(4)
    gb = GraphBuilder("dws")
    x = gb.input("x", ("N", 4, 8, 8), "float32")
    h = gb.op("Relu", gb.op("Conv", x, gb.const((r.standard_normal((8, 4, 1, 1)) * 0.5).astype(f32)),
                            gb.const(np.full(8, 0.1, f32)), name="pw1"))
    spread = np.logspace(-1.5, 1.5, 8).astype(f32)       # 1000x between the smallest and largest channel
    wd = (r.standard_normal((8, 1, 3, 3)) * spread[:, None, None, None]).astype(f32)
    h = gb.op("Relu", gb.op("Conv", h, gb.const(wd), gb.const((0.1 * spread).astype(f32)), group=8,
                            pads=(1, 1, 1, 1), name="dw"))
    y = gb.op("Conv", h, gb.const((r.standard_normal((6, 8, 1, 1)) / spread[None, :, None, None]).astype(f32)),
              gb.const(np.zeros(6, f32)), name="pw2")
    gb.output(y)
    return gb.build()


def test_equalize_keeps_fp32_and_equalizes_ranges() -> None:
    g = _prepared(_separable())
    assert [(a.name, b.name) for a, b in pairs(g)] == [("pw1", "dw"), ("dw", "pw2")]
    x = np.random.default_rng(5).standard_normal((2, 4, 8, 8)).astype(f32)
    want = interpreter.run(g, {"x": x})[g.outputs[0]]
    e = g.copy()
    assert equalize(e) == 2
    got = interpreter.run(e, {"x": x})[e.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    wd = e.tensors[e.node("dw").inputs[1]].const
    r = np.abs(wd.reshape(8, -1)).max(axis=1)
    assert r.max() / r.min() < 50                         # was ~1000


def test_equalize_raises_int8_sqnr() -> None:
    r = np.random.default_rng(6)
    calib = [r.standard_normal((8, 4, 8, 8)).astype(f32) for _ in range(4)]
    test = r.standard_normal((8, 4, 8, 8)).astype(f32)
    assert _int8_sqnr(_separable, calib, test, equalize=True) > _int8_sqnr(_separable, calib, test) + 6


# -- bias correction --------------------------------------------------------------------------------------------
def _biased(conv: bool):
    """A layer whose weight quantization errs the same way everywhere: per output channel one large weight sets
    the scale and the rest sit at 0.4 steps, which round to 0; the input has a positive mean."""
    r = np.random.default_rng(7)
    gb = GraphBuilder("biased")
    if conv:
        x = gb.input("x", ("N", 16, 6, 6), "float32")
        w = np.full((8, 16, 1, 1), 0.4 / 127, f32) * (1 + 0.05 * r.standard_normal((8, 16, 1, 1))).astype(f32)
        w[:, 0] = 1.0
        gb.output(gb.op("Conv", x, gb.const(w), name="conv"))          # no bias: correction adds one
    else:
        x = gb.input("x", ("N", 16), "float32")
        w = np.full((16, 8), 0.4 / 127, f32) * (1 + 0.05 * r.standard_normal((16, 8))).astype(f32)
        w[0] = 1.0
        y = gb.op("Add", gb.op("MatMul", x, gb.const(w), name="mm"), gb.const(np.full(8, 0.5, f32)), name="b")
        gb.output(y)
    return gb.build()


@pytest.mark.parametrize("conv", [False, True], ids=["matmul", "conv"])
def test_bias_correction_removes_a_systematic_error(conv: bool) -> None:
    r = np.random.default_rng(8)
    shape = (32, 16, 6, 6) if conv else (256, 16)
    calib = [(0.1 * r.standard_normal(shape) + 1.0).astype(f32) for _ in range(4)]
    test = (0.1 * r.standard_normal(shape) + 1.0).astype(f32)
    build = lambda: _biased(conv)  # noqa: E731
    assert _int8_sqnr(build, calib, test, bias_correction=True) > _int8_sqnr(build, calib, test) + 6


# -- SmoothQuant ------------------------------------------------------------------------------------------------
def _outlier(layernorm: bool):
    """An activation with one outlier channel (50x) into two MatMuls; through a LayerNorm's gamma, or straight
    from the input (then a Mul by 1/s is inserted)."""
    r = np.random.default_rng(9)
    gb = GraphBuilder("outlier")
    x = gb.input("x", ("N", 8, 32), "float32")
    if layernorm:
        gamma = np.ones(32, f32)
        gamma[3] = 50.0
        x = gb.op("LayerNormalization", x, gb.const(gamma), gb.const(np.zeros(32, f32)), axis=-1, name="ln",
                  outputs=["ln"])[0]
    a = gb.op("MatMul", x, gb.const((r.standard_normal((32, 16)) * 0.2).astype(f32)), name="q")
    b = gb.op("MatMul", x, gb.const((r.standard_normal((32, 16)) * 0.2).astype(f32)), name="k")
    gb.output(a, b)  # float outputs: no requantized product whose own rounding would bound the SQNR
    return gb.build()


def _outlier_data(r, n, layernorm):
    x = r.standard_normal((n, 8, 32)).astype(f32)
    if not layernorm:
        x[..., 3] *= 50
    return x


@pytest.mark.parametrize("layernorm", [True, False], ids=["layernorm", "input"])
def test_smooth_quant(layernorm: bool) -> None:
    r = np.random.default_rng(10)
    g = _prepared(_outlier(layernorm))
    x = _outlier_data(r, 4, layernorm)
    act = g.node("q").inputs[0]
    assert candidates(g) == {act: ["q", "k"]}
    want = interpreter.run(g, {"x": x})[g.outputs[0]]
    s = g.copy()
    seen = x if not layernorm else _ln_out(g, x)
    assert smooth(s, {act: np.abs(seen).reshape(-1, 32).max(axis=0)}, 0.5) == 1
    assert ("Mul" in s.op_counts()) != layernorm          # folded into the LayerNorm, else a Mul by 1/s
    np.testing.assert_allclose(interpreter.run(s, {"x": x})[s.outputs[0]], want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())
    calib = [_outlier_data(r, 16, layernorm) for _ in range(4)]
    test = _outlier_data(r, 32, layernorm)
    build = lambda: _outlier(layernorm)  # noqa: E731
    # measured +3.8 dB through the LayerNorm, only +0.6 dB with the inserted Mul: something other than the
    # activation scale bounds that case (not yet understood)
    gain = 3 if layernorm else 0.4
    assert _int8_sqnr(build, calib, test, smooth_quant=0.5) > _int8_sqnr(build, calib, test) + gain


def _ln_out(g, x):
    t = g.node("q").inputs[0]
    seen = {}
    interpreter.run(g, {"x": x}, on_tensor=lambda n, v: seen.__setitem__(n, v) if n == t else None)
    return seen[t]


def test_option_errors() -> None:
    calib = [np.zeros((2, 8, 32), f32)]
    with pytest.raises(ValueError, match="smooth_quant"):
        quantgraph.compile(_outlier(True), quantize="int8", calibration=calib, smooth_quant=1.5)
    stats = quantgraph.calibrate(_outlier(True), calib, progress=False)
    with pytest.raises(quantgraph.errors.InputError, match="needs calibration batches"):
        quantgraph.compile(_outlier(True), quantize="int8", calibration=stats, smooth_quant=0.5)
