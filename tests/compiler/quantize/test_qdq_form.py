"""The QDQ graph kept for export and artifacts stores its weights as integers only (quantize/qdq_form.py)."""
from __future__ import annotations

import os

import numpy as np

import quantgraph
from quantgraph import models
from quantgraph.compiler.quantize.qdq_form import integer_weights
from quantgraph.ir import interpreter
from quantgraph.ir.graph import Graph


def test_export_graph_holds_integer_weights_only(tmp_path: os.PathLike) -> None:
    _, _, calib = models.load_digits_sample()
    m = quantgraph.compile(models.path("digits_cnn.onnx"), quantize="int8", calibration=[calib[:100], calib[100:]])
    g = m.export_graph
    weight_dq = [n for n in g if n.op == "DequantizeLinear" and g.tensors[n.inputs[0]].const is not None]
    assert len(weight_dq) == 4   # 3 convs + the Gemm
    assert all(g.tensors[n.inputs[0]].const.dtype == np.int8 for n in weight_dq)
    read = {t for n in g for t in n.inputs if t}
    unread = [t for t, i in g.tensors.items() if i.const is not None and t not in read and t not in g.outputs]
    assert unread == []
    # no float weight of the size of a conv's is left anywhere
    assert max(i.const.size for i in g.tensors.values() if i.const is not None and i.dtype == "float32") <= 64
    fp32 = os.path.getsize(models.path("digits_cnn.onnx"))
    assert os.path.getsize(m.export_onnx(tmp_path / "int8.onnx")) < 0.5 * fp32


def test_quantize_of_constants_folds_to_the_same_integers() -> None:
    g = Graph("q")
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    g.add_input("x", (2, 4), "float32")
    s, z = g.add_const(np.array(0.02, np.float32)), g.add_const(np.array(0, np.int8))
    q = g.add("QuantizeLinear", [g.add_const(w), s, z])
    y = g.add("MatMul", ["x", g.add("DequantizeLinear", [q, s, z])])
    g.set_outputs([y])
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    before = interpreter.run(g, {"x": x})[y]
    assert integer_weights(g) == 1
    assert not [n for n in g if n.op == "QuantizeLinear"]
    np.testing.assert_array_equal(interpreter.run(g, {"x": x})[y], before)
