"""Benchmark model builders (ResNet-50, BERT encoder): valid ONNX, our interpreter matches onnxruntime, and O2/O3 fuse
them to the expected op counts with unchanged numerics."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import quantgraph
from quantgraph.bench.models import bert_encoder, resnet50, sample_inputs
from quantgraph.ir import interpreter

ort = pytest.importorskip("onnxruntime")


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("build", [lambda: resnet50(image=64), lambda: bert_encoder(layers=1, mask=True),
                                   lambda: bert_encoder()], ids=["resnet50_64", "bert_1layer_mask", "bert_4layer"])
def test_builder_matches_onnxruntime(build) -> None:
    model = build()
    onnx.checker.check_model(model)
    feeds = sample_inputs(model, batch=1)
    got = interpreter.run(quantgraph.load_onnx(model), feeds)["output"]
    np.testing.assert_allclose(got, _ort_run(model, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_resnet50_224_matches_onnxruntime() -> None:
    model = resnet50()
    feeds = sample_inputs(model, batch=1)
    got = interpreter.run(quantgraph.load_onnx(model), feeds)["output"]
    np.testing.assert_allclose(got, _ort_run(model, feeds), rtol=1e-4, atol=1e-4)


# -- fusion counts and numerics at O2 / O3 ------------------------------------------------------------------------
def _optimized(model: onnx.ModelProto, level: int):
    from quantgraph.compiler.pipeline import optimize

    g = quantgraph.load_onnx(model)
    before = g.copy()
    after, reports = optimize(g, level)
    return before, after, reports


def _same(before, after, feeds, rtol=1e-4, atol=1e-4) -> None:
    want, got = interpreter.run(before, feeds), interpreter.run(after, feeds)
    for k in before.outputs:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol)


def test_resnet50_fuses_to_one_node_per_conv() -> None:
    model = resnet50(image=64)
    before, after, reports = _optimized(model, 2)
    counts = after.op_counts()
    print("ResNet-50 before:", before.op_counts(), "\nResNet-50 after O2:", counts)
    assert before.op_counts()["Conv"] == 53
    assert counts == {"FusedConv": 53, "FusedMatMul": 1, "MaxPool": 1, "GlobalAveragePool": 1, "Flatten": 1}
    acts = [n.attrs["activation"] for n in after.topo() if n.op == "FusedConv"]
    assert acts.count("relu") == 49 and sum(1 for n in after.topo() if n.op == "FusedConv" and len(n.inputs) > 3
                                            and n.inputs[3]) == 16
    _same(before, after, sample_inputs(model, batch=2))


@pytest.mark.slow
def test_resnet50_o3_numerics() -> None:
    model = resnet50(image=64)
    before, after, _ = _optimized(model, 3)
    print("ResNet-50 after O3:", after.op_counts())
    assert after.op_counts() == {"FusedConv": 53, "FusedMatMul": 1, "FusedPool": 2, "Flatten": 1, "Transpose": 1}
    _same(before, after, sample_inputs(model, batch=2))


def test_bert_encoder_recognizes_layernorm_and_gelu() -> None:
    model = bert_encoder(layers=2, mask=True)
    before, after, reports = _optimized(model, 2)
    counts = after.op_counts()
    print("BERT before:", before.op_counts(), "\nBERT after O2:", counts)
    assert counts["LayerNormalization"] == 4 and counts["FusedMatMul"] == 12 and counts["FusedAttention"] == 2
    assert "Erf" not in counts and "ReduceMean" not in counts and "Gelu" not in counts
    assert sum(n.attrs["activation"] == "gelu" for n in after.topo() if n.op == "FusedMatMul") == 2
    assert sum(1 for n in after.topo() if n.op == "FusedMatMul" and len(n.inputs) > 3 and n.inputs[3]) == 4
    _same(before, after, sample_inputs(model, batch=2))


def _light_cases():
    from tests.conformance.cases import model_cases

    return [c for c in model_cases() if c.kind == "light"]


@pytest.mark.slow
@pytest.mark.parametrize("case", _light_cases(), ids=lambda c: c.name)
@pytest.mark.parametrize("level", [2, 3])
def test_light_models_same_outputs_after_optimization(case, level: int) -> None:
    """The optimized graph computes what the imported one does (both on the interpreter).

    A softmax output is compared through its logits (relative to their magnitude) and only where it is well
    conditioned: the light models' logits reach 1e9..1e31 and are equal in exact arithmetic, so their softmax is
    decided by the rounding of the summation order (tests/conformance/conditioning.py).
    """
    from quantgraph.compiler.pipeline import optimize
    from tests.conformance.conditioning import (assert_logits_close, assert_softmax_where_comparable, comparable,
                                                softmax_outputs, with_outputs)

    rtol, atol = 1e-4, 1e-5
    softmaxes = softmax_outputs(case.proto())
    g = quantgraph.load_onnx(with_outputs(case.proto(), [s.logits for s in softmaxes]))
    before = g.copy()
    after, _ = optimize(g, level)
    ins, _ = case.data()[0]
    feeds = dict(zip(before.inputs, ins))
    want, got = interpreter.run(before, feeds), interpreter.run(after, feeds)
    outputs = before.outputs[:len(case.proto().graph.output)]
    logits = {outputs[s.index]: s for s in softmaxes}
    for k in outputs:
        if k in logits:
            s = logits[k]
            assert_logits_close(got[s.logits], want[s.logits], rtol, atol, k)
            mask = comparable(want[s.logits], s.axis, s.opset, rtol, atol)
            assert_softmax_where_comparable(got[k], want[k], mask, s.axis, s.opset, rtol, atol, k)
        else:
            np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol)
    assert len(after) < len(before)
