"""The benchmark MobileNetV2 (bench/models.py) is a valid ONNX model and our fp32 compile matches onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from quantgraph.bench.models import mobilenet_v2, sample_inputs
from quantgraph.compiler.api import compile as qg_compile


def test_mobilenet_v2_structure() -> None:
    model = mobilenet_v2(image=64, width=0.5)
    onnx.checker.check_model(model, full_check=True)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if next(a.i for a in n.attribute if a.name == "group") > 1]
    # torchvision: stem + 17 blocks (16 with an expand conv) x (depthwise + project) + last 1x1 = 52 convolutions
    assert (len(convs), len(depthwise)) == (52, 17)
    assert sum(n.op_type == "Add" for n in model.graph.node) == 10  # the stride-1, cin == cout blocks
    assert sum(n.op_type == "Clip" for n in model.graph.node) == 35


def test_mobilenet_v2_matches_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    model = mobilenet_v2(image=64, width=0.5, classes=100)
    feeds = sample_inputs(model, batch=2, seed=3)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    assert np.isfinite(ref).all() and 0.05 < ref.std() < 20  # the weight scaling keeps activations O(1)
    got = qg_compile(model)(feeds["input"])[0]
    err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    assert err < 1e-4, err
