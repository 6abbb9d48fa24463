"""calibrate(): ranges equal to min/max over the interpreter's tensors (bundled digits CNN), on the interpreter and
the compiled plan; batch forms; bad-data errors naming the batch and input; stats merge, save/load, summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

import quantgraph
from quantgraph import models
from quantgraph.compiler.api import to_graph
from quantgraph.compiler.pipeline import build_quantized
from quantgraph.compiler.quantize import CalibrationStats, calibrate, calibrate_graph, observed_tensors
from quantgraph.errors import InputError
from quantgraph.ir import GraphBuilder, interpreter

rng = np.random.default_rng(0)


@pytest.fixture(scope="module")
def digits():
    """The digits graph as compile(quantize="int8") calibrates it at O3 (optimized up to epilogue fusion) and four
    calibration batches of 50 images."""
    _, _, calib = models.load_digits_sample()
    graph, _ = build_quantized(3)[0].run(to_graph(models.path("digits_cnn.onnx")))
    return graph, [calib[i:i + 50] for i in range(0, 200, 50)]


def _interpreter_minmax(graph, batches) -> dict[str, tuple[float, float]]:
    seen: dict[str, list[float]] = {}

    def on_tensor(name: str, value: np.ndarray) -> None:
        if value.dtype.kind == "f":
            lo, hi = seen.setdefault(name, [np.inf, -np.inf])
            seen[name] = [min(lo, float(value.min())), max(hi, float(value.max()))]

    for b in batches:
        on_tensor(graph.inputs[0], b)
        interpreter.run(graph, {graph.inputs[0]: b}, on_tensor=on_tensor)
    return {t: (lo, hi) for t, (lo, hi) in seen.items()}


def _two_inputs():
    gb = GraphBuilder("two")
    a = gb.input("a", ("N", 3), "float32")
    b = gb.input("b", ("N", 3), "float32")
    return gb.output(gb.op("Relu", gb.op("Add", a, b, name="sum"), name="relu")).build()


def test_digits_minmax_ranges_equal_the_interpreters_tensors(digits) -> None:
    graph, batches = digits
    want = _interpreter_minmax(graph, batches)
    stats = calibrate_graph(graph, batches, engine="interpreter", progress=False)
    assert set(stats) == set(want) == set(observed_tensors(graph))
    assert len(stats) > 5 and stats.batches == 4
    for t, (lo, hi) in want.items():
        assert stats.range(t) == (lo, hi), t
        assert stats.has_negative(t) == (lo < 0)


def test_digits_on_the_compiled_plan_equals_the_interpreter(digits) -> None:
    graph, batches = digits
    want = _interpreter_minmax(graph, batches)
    stats = calibrate(models.path("digits_cnn.onnx"), batches, engine="plan", progress=False)
    assert set(stats) == set(want)
    for t, (lo, hi) in want.items():  # fp32 kernels round differently from the numpy reference
        got = stats.range(t)
        scale = max(abs(lo), abs(hi))
        np.testing.assert_allclose(got, (lo, hi), rtol=1e-5, atol=1e-5 * scale, err_msg=t)
    compiled = quantgraph.compile(models.path("digits_cnn.onnx"))
    again = quantgraph.calibrate(compiled, batches, progress=False)   # a CompiledModel's own (fused, NHWC) plan
    fused = _interpreter_minmax(compiled.graph, batches)
    assert set(again) == set(fused) and set(again) != set(stats)
    for t, (lo, hi) in fused.items():
        np.testing.assert_allclose(again.range(t), (lo, hi), rtol=1e-5, atol=1e-5 * max(abs(lo), abs(hi)), err_msg=t)


def test_histogram_modes_stay_inside_min_max(digits) -> None:
    graph, batches = digits
    stats = calibrate_graph(graph, batches, mode="entropy", engine="interpreter", progress=False)
    for t in stats:
        s = stats[t]
        for mode in ("percentile", "entropy"):
            lo, hi = stats.range(t, mode=mode)
            assert s.min <= lo <= hi <= s.max, (t, mode)
        assert stats.range(t, mode="minmax") == (s.min, s.max)
    assert stats[graph.outputs[0]].has_negative


def test_batch_forms_agree() -> None:
    g = _two_inputs()
    xs = [(rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32))
          for _ in range(3)]
    forms = [
        [{"a": a, "b": b} for a, b in xs],
        [[a, b] for a, b in xs],
        (tuple(p) for p in xs),               # any iterable, also one without len()
    ]
    ranges = [calibrate(g, f, opt_level=0, progress=True).ranges() for f in forms]
    assert ranges[0] == ranges[1] == ranges[2]
    assert ranges[0]["relu"] == (0.0, max(float(np.maximum(a + b, 0).max()) for a, b in xs))

    gb = GraphBuilder("one")
    x = gb.input("x", ("N", 4), "float32")
    one = gb.output(gb.op("Relu", x, name="r")).build()
    data = rng.standard_normal((6, 4)).astype(np.float32)
    as_arrays = calibrate(one, [data[:3], data[3:]], opt_level=0, progress=False)
    as_one_batch = calibrate(one, data, opt_level=0, progress=False)  # a bare array is one batch
    assert as_arrays.ranges() == as_one_batch.ranges() and as_one_batch.batches == 1
    assert as_arrays.range("x") == (float(data.min()), float(data.max()))


def test_requested_tensors_only() -> None:
    g = _two_inputs()
    a = np.ones((2, 3), np.float32)
    stats = calibrate(g, [[a, -a]], tensors=["sum"], opt_level=0, progress=False)
    assert list(stats) == ["sum"] and stats.range("sum") == (0.0, 0.0)
    with pytest.raises(InputError, match="'nope', which is not a tensor of graph 'two'"):
        calibrate(g, [[a, a]], tensors=["nope"], opt_level=0, progress=False)


def test_constants_and_integer_tensors_are_refused_as_targets() -> None:
    gb = GraphBuilder("c")
    x = gb.input("x", (2, 3), "float32")
    w = gb.const(np.ones((3, 3), np.float32), "w")
    shape = gb.op("Shape", x, name="shape")
    g = gb.output(gb.op("MatMul", x, w, name="mm"), shape).build()
    assert observed_tensors(g) == ["x", "mm"]
    with pytest.raises(InputError, match="'w', a constant"):
        observed_tensors(g, ["w"])
    with pytest.raises(InputError, match="which is int64; only float tensors"):
        observed_tensors(g, [shape])


def _bad(batch_at_2):
    good = [np.ones((2, 3), np.float32)] * 2
    return [good, good, batch_at_2]


@pytest.mark.parametrize("bad, message", [
    (_bad({"a": np.ones((2, 3), np.float32), "c": np.ones((2, 3), np.float32)}),
     r"calibration batch 2: unknown input\(s\) 'c'"),
    (_bad([np.ones((2, 3), np.float32)]), r"calibration batch 2: model takes 2 input\(s\) \(a, b\); got 1"),
    (_bad([np.ones((2, 3, 1), np.float32), np.ones((2, 3), np.float32)]),
     r"calibration batch 2: input 'a' has shape \(2, 3, 1\) \(rank 3\); expected rank 2"),
    (_bad([np.ones((2, 3), np.float32), np.ones((2, 4), np.float32)]),
     r"calibration batch 2: input 'b' has shape \(2, 4\); dim 1 must be 3"),
    (_bad([np.ones((2, 3), np.float32), np.ones((2, 3), np.float64)]),
     r"calibration batch 2: input 'b' has dtype float64; expected float32\(N, 3\)"),
    (_bad([np.ones((2, 3), np.float32), np.array([[1, np.nan, 2]] * 2, np.float32)]),
     r"calibration batch 2: input 'b' has 2 NaN and 0 Inf value\(s\) of 6"),
    (_bad([np.array([[np.inf, 1, 2], [1, 2, 3]], np.float32), np.ones((2, 3), np.float32)]),
     r"calibration batch 2: input 'a' has 0 NaN and 1 Inf value\(s\)"),
    ([], "calibration data is empty"),
    (iter(()), "calibration data is empty"),
])
@pytest.mark.parametrize("engine", ["interpreter", "plan"])
def test_bad_calibration_data_names_the_batch_and_input(bad, message, engine) -> None:
    with pytest.raises(InputError, match=message):
        calibrate(_two_inputs(), bad, engine=engine, opt_level=1, progress=False)


def test_merged_halves_equal_the_whole(digits) -> None:
    graph, batches = digits
    kw = dict(mode="entropy", engine="interpreter", progress=False)
    whole = calibrate_graph(graph, batches, **kw)
    merged = calibrate_graph(graph, batches[:1], **kw).merge(calibrate_graph(graph, batches[1:], **kw))
    assert merged.batches == whole.batches
    for mode in ("minmax", "percentile", "entropy"):
        assert merged.ranges(mode) == whole.ranges(mode), mode
    for t in whole:
        np.testing.assert_array_equal(merged.observers[t].state()["counts"], whole.observers[t].state()["counts"])
    minmax = calibrate_graph(graph, batches, engine="interpreter", progress=False)
    with pytest.raises(ValueError, match="mode 'minmax'"):
        whole.merge(minmax)


@pytest.mark.parametrize("mode", ["minmax", "entropy"])
def test_save_load_round_trip(digits, tmp_path, mode) -> None:
    graph, batches = digits
    stats = calibrate_graph(graph, batches, mode=mode, engine="interpreter", progress=False)
    stats.save(tmp_path / "calib.json")
    doc = json.loads((tmp_path / "calib.json").read_text())
    assert doc["format"] == "quantgraph.calibration" and len(doc["tensors"]) == len(stats)
    assert (tmp_path / "calib.npz").exists() == (mode == "entropy")
    back = CalibrationStats.load(tmp_path / "calib.json")
    assert (back.mode, back.percentile, back.batches, back.graph) == (mode, 99.99, 4, graph.name)
    assert list(back) == list(stats)
    for t in stats:
        assert back[t] == stats[t]
        for k, v in stats.observers[t].state().items():
            np.testing.assert_array_equal(back.observers[t].state()[k], v)


def test_summary_lists_every_tensor(digits) -> None:
    graph, batches = digits
    stats = calibrate_graph(graph, batches, mode="percentile", engine="interpreter", progress=False)
    text = stats.summary()
    assert text.splitlines()[0] == (f"calibration of '{graph.name}': {len(stats)} tensors, 4 batches, "
                                    f"mode percentile 99.99")
    for t in stats:
        assert t[-20:] in text
    assert len(stats.summary(max_rows=2).splitlines()) == 5


def test_stats_refuse_unknown_tensors_and_flat_observers_for_histogram_modes(digits) -> None:
    graph, batches = digits
    stats = calibrate_graph(graph, batches[:1], engine="interpreter", progress=False)
    with pytest.raises(KeyError, match="'nope' was not calibrated"):
        stats.range("nope")
    with pytest.raises(ValueError, match="mode 'entropy' needs histogram observers"):
        CalibrationStats(stats.observers, mode="entropy")


def test_merge_combines_channel_means_and_extend_adds_tensors_of_the_same_batches():
    from quantgraph.compiler.quantize.observers import MinMaxObserver
    from quantgraph.compiler.quantize.stats import CalibrationStats, ChannelMean

    r = np.random.default_rng(4)
    a, b = r.standard_normal((3, 5, 2)), r.standard_normal((2, 5, 2))

    def stats(x, name):
        obs, mean = MinMaxObserver(), ChannelMean(1)
        obs.observe(x.astype(np.float32))
        mean.observe(x)
        return CalibrationStats({name: obs}, batches=1, means={"x": mean})

    both = stats(a, "t").merge(stats(b, "t"))
    assert both.batches == 2
    np.testing.assert_allclose(both.means["x"].mean, np.concatenate([a, b]).mean(axis=(0, 2)))
    more = stats(a, "t").extend(stats(a, "u"))
    assert more.batches == 1 and set(more) == {"t", "u"} and "x" in more.means
    with pytest.raises(ValueError, match="mode"):
        stats(a, "t").extend(CalibrationStats({}, mode="percentile"))
