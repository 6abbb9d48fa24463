"""Property test: random small ONNX graphs of elementwise, conv and matmul ops.

For each graph: the imported IR verifies, survives a JSON/.npz round trip unchanged, and the reference interpreter
agrees with onnxruntime (when installed) on random inputs.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import quantgraph
from quantgraph.frontends.onnx import load_onnx
from quantgraph.ir import load, save, verify

UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Softplus", "LeakyRelu", "HardSigmoid", "Erf"]
BINARY_CONST = ["Add", "Sub", "Mul", "Max", "Min"]


@st.composite
def random_model(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = draw(st.integers(1, 4))
    h = draw(st.integers(3, 7))
    w = draw(st.integers(3, 7))
    nodes, inits = [], []
    shapes = {"x": (1, c, h, w)}
    live = ["x"]
    steps = draw(st.integers(1, 6))
    for i in range(steps):
        src = live[draw(st.integers(0, len(live) - 1))]
        shape = shapes[src]
        kind = draw(st.sampled_from(["unary", "const", "conv", "matmul", "join"]))
        out = f"t{i}"
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [src], [out]))
            shapes[out] = shape
        elif kind == "const":
            cshape = draw(st.sampled_from([shape, shape[-1:], (1,) * len(shape), ()]))
            inits.append(numpy_helper.from_array(rng.standard_normal(cshape).astype(np.float32), f"c{i}"))
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY_CONST)), [src, f"c{i}"], [out]))
            shapes[out] = shape
        elif kind == "conv" and len(shape) == 4:
            cin = shape[1]
            group = draw(st.sampled_from([g for g in (1, cin) if cin % g == 0]))
            cout = group * draw(st.integers(1, 3))
            k = draw(st.sampled_from([1, 3] if min(shape[2:]) >= 3 else [1]))
            pad = draw(st.integers(0, k // 2))
            stride = draw(st.integers(1, 2))
            inits.append(numpy_helper.from_array(
                rng.standard_normal((cout, cin // group, k, k)).astype(np.float32), f"w{i}"))
            inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}"))
            nodes.append(helper.make_node("Conv", [src, f"w{i}", f"b{i}"], [out], kernel_shape=[k, k],
                                          pads=[pad] * 4, strides=[stride] * 2, group=group))
            oh = (shape[2] + 2 * pad - k) // stride + 1
            ow = (shape[3] + 2 * pad - k) // stride + 1
            shapes[out] = (1, cout, oh, ow)
        elif kind == "matmul":
            n = draw(st.integers(1, 6))
            inits.append(numpy_helper.from_array(rng.standard_normal((shape[-1], n)).astype(np.float32), f"m{i}"))
            nodes.append(helper.make_node("MatMul", [src, f"m{i}"], [out]))
            shapes[out] = shape[:-1] + (n,)
        else:
            same = [t for t in live if shapes[t] == shape]
            other = same[draw(st.integers(0, len(same) - 1))]
            nodes.append(helper.make_node("Add", [src, other], [out]))
            shapes[out] = shape
        live.append(out)
    final = live[-1]
    graph = helper.make_graph(nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shapes["x"])],
                              [helper.make_tensor_value_info(final, TensorProto.FLOAT, shapes[final])], inits)
    # IR version 8 keeps the model loadable by older onnxruntime releases
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal(shapes["x"]).astype(np.float32)
    return model, x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_model())
def test_random_graph_round_trips_and_matches_onnxruntime(tmp_path_factory, case) -> None:
    model, x = case
    onnx.checker.check_model(model)
    g = load_onnx(model)
    verify(g)
    path = tmp_path_factory.mktemp("rt") / "g"
    jpath, _ = save(g, path)
    g2 = load(jpath)
    assert g2.same_as(g)
    ours = quantgraph.compile(g2, opt_level=0)(x)[0]
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    assert ours.shape == want.shape and ours.dtype == want.dtype
    np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-5)
