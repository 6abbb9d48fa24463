"""quantization_report (per-unit local / cumulative / alone-at-output error) and compile(accuracy_target=): the
numbers against an independent numpy computation, the fragile layer found first, targets met, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

import quantgraph
from quantgraph.compiler.quantize.quantize import activation_params, weight_params
from quantgraph.errors import InputError
from quantgraph.ir import GraphBuilder

f32 = np.float32


def _weights(seed: int = 3) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    w = {"w1": r.standard_normal((16, 32)) / 4, "b1": r.standard_normal(32) / 10,
         "w2": r.standard_normal((32, 32)) / 6, "b2": r.standard_normal(32) / 10,
         "w3": r.standard_normal((32, 8)) / 6}
    # the fragile layer: one channel of mm2's output is 1000x the others (and mm3 reads it 1000x weaker), so the
    # one activation scale of mm3's input leaves the other 31 channels a level or two
    w["w2"][:, 0] *= 1000.0
    w["b2"][0] = abs(w["b2"][0]) * 1000.0
    w["w3"][0, :] /= 1000.0
    return {k: v.astype(f32) for k, v in w.items()}


def _mlp(w: dict[str, np.ndarray]):
    gb = GraphBuilder("fragile")
    x = gb.input("x", ("N", 16), "float32")
    h = gb.op("Relu", gb.op("Add", gb.op("MatMul", x, gb.const(w["w1"]), name="mm1"), gb.const(w["b1"]),
                            name="bias1"), name="relu1")
    h = gb.op("Relu", gb.op("Add", gb.op("MatMul", h, gb.const(w["w2"]), name="mm2"), gb.const(w["b2"]),
                            name="bias2"), name="relu2")
    y = gb.op("MatMul", h, gb.const(w["w3"]), name="mm3")
    return gb.output(y).build()


def _data(n: int = 6, seed: int = 0) -> list[np.ndarray]:
    r = np.random.default_rng(seed)
    return [r.standard_normal((8, 16)).astype(f32) for _ in range(n)]


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return 10 * math.log10(float((ref ** 2).sum()) / float(((ref - got) ** 2).sum()))


def _fake(x: np.ndarray, scale: float, zp: int, lo: int = 0, hi: int = 255) -> np.ndarray:
    return ((np.clip(np.rint(x / scale) + zp, lo, hi) - zp) * scale).astype(f32)


def test_report_numbers_match_numpy_and_rank_the_fragile_layer_first():
    w = _weights()
    data = _data()
    m = quantgraph.compile(_mlp(w), quantize="int8", calibration=data, calib_mode="minmax", bias_correction=False)
    rep = m.quantization_report()
    assert rep.batches == len(data)
    assert [r.unit for r in rep.layers] == ["mm1", "mm2", "mm3"]
    assert rep.worst(1)[0].unit == "mm3" and "worst" in rep.worst(1)[0].flags
    worst, best = rep.layer("mm3"), rep.layer("mm1")
    assert worst.local_sqnr < best.local_sqnr - 15
    assert worst.output_sqnr < best.output_sqnr

    # mm1 alone, in numpy: u8 input on its calibrated range, s8 per-channel weights, relu output rounded to u8
    x = np.concatenate(data)
    x_scale, x_zp = activation_params(x.min(), x.max(), "uint8")
    assert (best.input_scale, best.input_zero_point) == (pytest.approx(float(x_scale)), x_zp)
    q, s = weight_params(w["w1"], 1)
    ref = np.maximum(x @ w["w1"] + w["b1"], 0)
    h = np.maximum(_fake(x, float(x_scale), x_zp) @ (q.astype(f32) * s) + w["b1"], 0)
    h = _fake(h, best.output_scale, 0)
    assert best.local_sqnr == pytest.approx(_sqnr(ref, h), abs=0.05)
    assert best.calib_range == pytest.approx((min(float(x.min()), 0.0), float(x.max())), rel=1e-6)

    # the first unit has no quantized input before it: cumulative == local; the QDQ graph and the int8 kernels
    # agree on the model output to within a rounding step's worth of SQNR
    assert best.cumulative_sqnr == pytest.approx(best.local_sqnr, abs=1e-6)
    assert rep.layer("mm3").cumulative_sqnr == pytest.approx(rep.simulated_output_sqnr["mm3"], abs=1e-6)
    assert abs(rep.output_sqnr["mm3"] - rep.simulated_output_sqnr["mm3"]) < 1.5
    text = str(rep)
    assert "mm3" in text and "alone@out dB" in text
    assert rep.to_json()["layers"][0]["unit"] == rep.layers[0].unit


def test_report_on_other_data_and_errors():
    data = _data()
    m = quantgraph.compile(_mlp(_weights()), quantize="int8", calibration=iter(data))
    with pytest.raises(InputError, match="data="):
        m.quantization_report()
    rep = m.quantization_report(_data(3, seed=9), sensitivity=False)
    assert rep.batches == 3 and all(r.output_sqnr is None for r in rep.layers)
    with pytest.raises(InputError, match="quantize='int8'"):
        quantgraph.compile(_mlp(_weights())).quantization_report(data)


def test_accuracy_target_in_db_keeps_the_fragile_layer_first_and_meets_the_target():
    g = _mlp(_weights())
    data = _data()
    plain = quantgraph.compile(g, quantize="int8", calibration=data)
    fp32 = quantgraph.compile(g)

    def sqnr(model):
        return min(_sqnr(fp32(x)[0], model(x)[0]) for x in data)

    base = sqnr(plain)
    target = base + 10.0
    m = quantgraph.compile(g, quantize="int8", calibration=data, accuracy_target=target)
    res = m.accuracy_search
    # mm2 produces the outlier channel and mm3 reads it: the one activation scale between them is the damage,
    # and either unit owns it (mm2 requantizes its output to it, mm3 quantizes its input with it)
    first = res.order[0][0]
    assert res.met and first in {"mm2", "mm3"}
    assert first in res.kept and len(res.kept) < 3
    # int16 (W8A16) is tried before fp32 and is enough here (test_int16_precision.py has the numbers)
    assert m.quantization.decisions[first].precision == res.kept[first] == "int16"
    assert m.quantization.decisions["mm1"].precision == "int8"
    pooled = 10 * math.log10(sum(float((fp32(x)[0].astype(np.float64) ** 2).sum()) for x in data)
                             / sum(float(((fp32(x)[0] - m(x)[0]).astype(np.float64) ** 2).sum()) for x in data))
    assert pooled >= target
    assert res.trials[0].k == 0 and not res.trials[0].ok
    assert "met" in str(res) and res.to_json()["met"]

    # a target the default int8 meets: no search, the int8 model as it is
    easy = quantgraph.compile(g, quantize="int8", calibration=data, accuracy_target=base - 5.0)
    assert easy.accuracy_search.met and easy.accuracy_search.kept == {} and len(easy.accuracy_search.trials) == 1


def test_accuracy_target_callable_metric_with_tolerance():
    g = _mlp(_weights())
    data, held = _data(), _data(4, seed=7)
    fp32 = quantgraph.compile(g)
    ref = [fp32(x)[0] for x in held]

    def metric(model):  # higher is better: minus the mean relative error on held-out data
        return -float(np.mean([np.abs(model(x)[0] - r).mean() / np.abs(r).mean() for x, r in zip(held, ref)]))

    plain = quantgraph.compile(g, quantize="int8", calibration=data)
    tol = -metric(plain) / 4
    m = quantgraph.compile(g, quantize="int8", calibration=data, accuracy_target=metric, accuracy_tolerance=tol)
    assert m.accuracy_search.met and metric(m) >= -tol - 1e-12
    assert {"mm2", "mm3"} & set(m.accuracy_search.kept)


def test_accuracy_target_errors():
    g = _mlp(_weights())
    with pytest.raises(ValueError, match="without quantize"):
        quantgraph.compile(g, accuracy_target=30.0)
    with pytest.raises(InputError, match="sequence"):
        quantgraph.compile(g, quantize="int8", calibration=iter(_data()), accuracy_target=300.0)
    with pytest.raises(ValueError, match="accuracy_target"):
        quantgraph.compile(g, quantize="int8", calibration=_data(), accuracy_target="30 dB")


def test_predicted_k_adds_the_noises_and_rescales_them_to_the_measured_model():
    from types import SimpleNamespace

    from quantgraph.compiler.quantize.search import _predicted_k

    ranked = [SimpleNamespace(output_sqnr=db) for db in (20.0, 30.0, 30.0, 40.0)]
    # noise powers 1e-2, 1e-3, 1e-3, 1e-4: all but the first sum to 2.1e-3 (26.8 dB), the last alone to 40 dB
    assert _predicted_k(ranked, 25.0) == 1
    assert _predicted_k(ranked, 29.0) == 2 and _predicted_k(ranked, 35.0) == 3
    # the whole model measured 10x noisier than the alone-noises add up to: every remainder counts 10x
    total = 10 * math.log10(1.0 / (10 * (1e-2 + 2e-3 + 1e-4)))
    assert _predicted_k(ranked, 25.0, total) == 3
    assert _predicted_k(ranked, 25.0, 60.0) == 1   # never rescaled down
