"""The range guards (quantize/range_guard.py): a -1e9 sentinel before an int8 reader and a pixel/score Concat read
by an int8 head each wreck one shared scale; with the guard on (the default) the output SQNR against fp32 rises,
the decisions say why, and ordinary graphs and heavy-tailed data are left alone."""
from __future__ import annotations

import math

import numpy as np

import quantgraph
from quantgraph.compiler.quantize.observers import HistogramObserver
from quantgraph.compiler.quantize.range_guard import _sentinel
from quantgraph.compiler.quantize.stats import CalibrationStats
from quantgraph.ir import GraphBuilder

f32 = np.float32


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return 10 * math.log10(float((ref ** 2).sum()) / max(float(((ref - got) ** 2).sum()), 1e-300))


def _pooled_sqnr(fp32, model, feeds: list) -> float:
    ref = [fp32(f)[0] for f in feeds]
    got = [model(f)[0] for f in feeds]
    return _sqnr(np.concatenate(ref), np.concatenate(got))


def _on_off(graph, feeds):
    """The model quantized with the guards on and off, and the output SQNR of each against fp32 (held-out data)."""
    calib, held = feeds(6, 0), feeds(4, 9)
    fp32 = quantgraph.compile(graph)
    on = quantgraph.compile(graph, quantize="int8", calibration=calib)
    off = quantgraph.compile(graph, quantize="int8", calibration=calib, range_guard=False)
    return on, off, _pooled_sqnr(fp32, on, held), _pooled_sqnr(fp32, off, held)


def _masked_maxpool():
    """x -> MatMul -> Where(valid, h, -1e9) -> MaxPool (2 wide: every window keeps one valid value) -> Flatten ->
    MatMul + bias: a masked max, as text models pool over padded time steps."""
    r = np.random.default_rng(1)
    gb = GraphBuilder("masked_max")
    x = gb.input("x", ("N", 16, 8), "float32")
    valid = gb.input("valid", ("N", 16, 8), "bool")
    h = gb.op("MatMul", x, gb.const((r.standard_normal((8, 8)) / 3).astype(f32)), name="proj")
    h = gb.op("Where", valid, h, gb.const(np.array(-1e9, f32)), name="mask")
    h = gb.op("MaxPool", h, name="pool", kernel_shape=[2], strides=[2])[0]
    h = gb.op("Flatten", h, name="flat", axis=1)
    y = gb.op("Add", gb.op("MatMul", h, gb.const((r.standard_normal((64, 10)) / 8).astype(f32)), name="head"),
              gb.const((r.standard_normal(10) / 10).astype(f32)), name="head_bias")
    graph = gb.output(y).build()

    def feeds(n: int, seed: int) -> list[dict]:
        q = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            v = q.random((4, 16, 8)) < 0.6
            v[:, :, 0::2] = True   # one valid value in every pooling window
            out.append({"x": q.standard_normal((4, 16, 8)).astype(f32), "valid": v})
        return out
    return graph, feeds


def test_sentinel_mask_before_an_int8_reader_is_kept_fp32():
    graph, feeds = _masked_maxpool()
    on, off, s_on, s_off = _on_off(graph, feeds)
    assert s_off < 10.0, s_off             # one scale for -1e9 and the data: the data has no level left
    assert s_on > 30.0 and s_on > s_off + 20.0, (s_on, s_off)
    d = on.quantization.decisions
    assert d["head"].precision == "fp32" and "sentinel" in d["head"].reason and "-1e+09" not in d["head"].reason
    assert "1e+09" in d["head"].reason
    assert d["pool"].precision == "fp32"
    assert d["proj"].precision == "int8"   # the producer keeps int8, writing float for the Where
    assert dict(on.quant_source.options.kept_float) and not off.quant_source.options.kept_float


def _box_score_concat():
    """Box coordinates in pixels (hundreds) concatenated with class scores in 0..1, read by an int8 head whose
    output depends mostly on the scores."""
    r = np.random.default_rng(2)
    gb = GraphBuilder("boxes_scores")
    x = gb.input("x", ("N", 16), "float32")
    feat = gb.op("Relu", gb.op("MatMul", x, gb.const((r.standard_normal((16, 32)) / 4).astype(f32)), name="trunk"),
                 name="trunk_relu")
    boxes = gb.op("MatMul", feat, gb.const((r.random((32, 4)) * 60.0).astype(f32)), name="box")
    scores = gb.op("Sigmoid", gb.op("MatMul", feat, gb.const(r.standard_normal((32, 6)).astype(f32)),
                                    name="cls"), name="score")
    cat = gb.op("Concat", boxes, scores, name="cat", axis=1)
    w = np.concatenate([r.standard_normal((4, 5)) * 1e-3, r.standard_normal((6, 5)) * 4.0]).astype(f32)
    y = gb.op("MatMul", cat, gb.const(w), name="head")
    graph = gb.output(y).build()

    def feeds(n: int, seed: int) -> list[np.ndarray]:
        q = np.random.default_rng(seed)
        return [q.standard_normal((8, 16)).astype(f32) for _ in range(n)]
    return graph, feeds


def test_concat_of_pixels_and_scores_keeps_its_own_scales():
    graph, feeds = _box_score_concat()
    on, off, s_on, s_off = _on_off(graph, feeds)
    assert s_on > 30.0 and s_on > s_off + 10.0, (s_on, s_off)
    d = on.quantization.decisions
    assert d["cat"].precision == "fp32" and "Concat 'cat' joins ranges" in d["cat"].reason
    assert d["head"].precision == "fp32" and d["trunk"].precision == "int8" and d["box"].precision == "int8"
    assert off.quantization.decisions["cat"].precision == "int8"


def test_ordinary_graph_and_heavy_tails_are_left_alone():
    r = np.random.default_rng(0)
    gb = GraphBuilder("plain")
    x = gb.input("x", ("N", 16), "float32")
    a = gb.op("Relu", gb.op("MatMul", x, gb.const(r.standard_normal((16, 8)).astype(f32)), name="a"), name="ra")
    b = gb.op("Relu", gb.op("MatMul", x, gb.const(r.standard_normal((16, 8)).astype(f32)), name="b"), name="rb")
    y = gb.op("MatMul", gb.op("Concat", a, b, name="cat", axis=1), gb.const(r.standard_normal((16, 4)).astype(f32)),
              name="head")
    m = quantgraph.compile(gb.output(y).build(), quantize="int8",
                           calibration=[r.standard_normal((8, 16)).astype(f32) for _ in range(4)])
    assert m.quant_source.options.kept_float == ()
    assert all(d.precision == "int8" for n, d in m.quantization.decisions.items() if n in ("a", "b", "cat", "head"))

    # magnitudes up to 1e5 but spread all along the way (log-normal): a tail, not a sentinel
    tail = HistogramObserver()
    tail.observe(np.exp(r.standard_normal(20000) * 3.0).astype(f32))
    spike = HistogramObserver()
    spike.observe(np.concatenate([r.standard_normal(20000), np.full(50, -1e4)]).astype(f32))
    stats = CalibrationStats({"tail": tail, "spike": spike}, mode="auto")
    assert tail.max >= 1e4 and _sentinel(stats, "tail") is None
    assert _sentinel(stats, "spike") == 1e4
