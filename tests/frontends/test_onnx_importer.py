"""ONNX import: constants, names, versioned converters, and clear errors for bad models."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import quantgraph
from quantgraph.errors import ModelLoadError, UnsupportedOpError
from quantgraph.frontends.onnx import load_onnx
from quantgraph.ir import verify


def make_model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports)


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def add_relu_model(opset=17):
    w = numpy_helper.from_array(np.array([1.0, -2.0, 3.0], np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "w"], ["s"], name="add"), helper.make_node("Relu", ["s"], ["y"])]
    return make_model(nodes, [vi("x", ["N", 3])], [vi("y", ["N", 3])], [w], opset)


def test_import_keeps_names_constants_and_symbolic_dims() -> None:
    g = load_onnx(add_relu_model())
    verify(g)
    assert g.inputs == ["x"] and g.outputs == ["y"]
    assert g.tensors["x"].shape == ("N", 3)
    np.testing.assert_array_equal(g.tensors["w"].const, [1, -2, 3])
    assert [n.op for n in g.topo()] == ["Add", "Relu"]
    assert g.producer("s").name == "add" and g.producer("y").name == "Relu_1"


def test_import_from_path_and_bytes(tmp_path) -> None:
    m = add_relu_model()
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    for src in (str(p), p, m.SerializeToString()):
        assert load_onnx(src).same_as(load_onnx(m))


def test_missing_truncated_and_garbage_files(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="model file '.*nope.onnx' does not exist"):
        load_onnx(tmp_path / "nope.onnx")
    data = add_relu_model().SerializeToString()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="trunc.onnx"):
        load_onnx(trunc)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffthis is not a protobuf\x13\x37" * 10)
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        load_onnx(junk)
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_onnx(tmp_path)


def test_every_unsupported_node_is_listed_once() -> None:
    nodes = [helper.make_node("FancyOp", ["x"], ["a"], name="fancy_1", domain="com.example"),
             helper.make_node("Relu", ["a"], ["b"], name="ok"),
             helper.make_node("TfIdfVectorizer", ["x"], ["c"], name="tfidf_7")]
    m = make_model(nodes, [vi("x", [2])], [vi("b", [2]), vi("c", [2])], domains=["com.example"])
    with pytest.raises(UnsupportedOpError) as e:
        load_onnx(m)
    msg = str(e.value)
    assert "2 unsupported node(s)" in msg
    assert "'fancy_1' (FancyOp, domain 'com.example', opset 1): no converter" in msg
    assert "'tfidf_7' (TfIdfVectorizer, domain 'ai.onnx', opset 17)" in msg
    assert "'ok'" not in msg


def test_op_newer_than_model_opset_names_supported_versions() -> None:
    m = make_model([helper.make_node("Gelu", ["x"], ["y"], name="g")], [vi("x", [2])], [vi("y", [2])], opset=18)
    with pytest.raises(UnsupportedOpError, match=r"'g' \(Gelu, domain 'ai.onnx', opset 18\): supported since 20"):
        load_onnx(m)


def test_unknown_attribute_and_unsupported_dtype() -> None:
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="r", bogus=3)], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(UnsupportedOpError, match=r"node 'r' \(Relu\): attribute\(s\) bogus not supported"):
        load_onnx(m)
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2], TensorProto.FLOAT8E4M3FN)],
                   [vi("y", [2], TensorProto.FLOAT8E4M3FN)])
    with pytest.raises(UnsupportedOpError, match="graph input 'x' has element type float8e4m3fn"):
        load_onnx(m)


def test_nodes_out_of_order_are_reported() -> None:
    nodes = [helper.make_node("Relu", ["s"], ["y"], name="late"), helper.make_node("Relu", ["x"], ["s"])]
    m = make_model(nodes, [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(ModelLoadError, match=r"node 'late' \(Relu\): input 's' is not produced by an earlier node"):
        load_onnx(m)


def test_pass_through_output_gets_an_identity() -> None:
    # an output that is just a graph input must still appear under its own name
    m = make_model([helper.make_node("Max", ["x"], ["y"], name="max1")], [vi("x", [3])], [vi("y", [3])])
    g = load_onnx(m)
    assert g.outputs == ["y"] and g.producer("y") is not None
    x = np.array([1, -2, 3], np.float32)
    np.testing.assert_array_equal(quantgraph.compile(m)(x)[0], x)


@pytest.mark.parametrize("opset", [6, 11, 13])
def test_clip_converter_by_opset(opset: int) -> None:
    if opset < 11:
        nodes = [helper.make_node("Clip", ["x"], ["y"], min=-1.0, max=2.0)]
        inits = []
    else:
        nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])]
        inits = [numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
                 numpy_helper.from_array(np.array(2.0, np.float32), "hi")]
    m = make_model(nodes, [vi("x", [5])], [vi("y", [5])], inits, opset=opset)
    x = np.array([-3, -1, 0, 2, 5], np.float32)
    np.testing.assert_array_equal(quantgraph.compile(m)(x)[0], np.clip(x, -1, 2))


def test_legacy_broadcast_with_axis() -> None:
    # opset 6: Add(A (2,3,4), B (3,), broadcast=1, axis=1) adds B along axis 1
    b = numpy_helper.from_array(np.array([10, 20, 30], np.float32), "b")
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], broadcast=1, axis=1)]
    m = make_model(nodes, [vi("a", [2, 3, 4])], [vi("y", [2, 3, 4])], [b], opset=6)
    a = np.zeros((2, 3, 4), np.float32)
    np.testing.assert_array_equal(quantgraph.compile(m)(a)[0], a + np.array([10, 20, 30], np.float32)[:, None])


def test_dims_declared_minus_one_or_without_value_import_as_symbols() -> None:
    m = make_model([helper.make_node("Add", ["x", "z"], ["y"])],
                   [vi("x", [-1, 3, None, "x_dim3"]), vi("z", [-1, 3, None, "x_dim3"])], [vi("y", [-1, 3, None, None])])
    g = load_onnx(m)
    x, z = g.tensors["x"].shape, g.tensors["z"].shape
    assert x[1] == 3 and x[3] == "x_dim3" and all(isinstance(d, str) for d in x[:1] + x[2:] + z[:1] + z[2:])
    # each dynamic dim without a name is its own symbol, distinct from every other and from the named ones
    assert len({x[0], x[2], z[0], z[2], "x_dim3"}) == 5


def _classifier() -> onnx.ModelProto:
    """A text-direction classifier as PaddlePaddle exports it: input (-1, 3, ?, ?)."""
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    fc = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["l"]), helper.make_node("Softmax", ["l"], ["y"], axis=1)]
    return make_model(nodes, [vi("x", [-1, 3, None, None])], [vi("y", [-1, 2])], [w, fc])


@pytest.mark.parametrize("opt_level", [0, 3])
def test_model_with_minus_one_batch_runs_every_batch(opt_level: int) -> None:
    model = _classifier()
    compiled = quantgraph.compile(model, opt_level=opt_level)
    ref = ReferenceEvaluator(model)
    rng = np.random.default_rng(2)
    for shape in ((1, 3, 8, 8), (3, 3, 8, 8), (3, 3, 5, 12)):  # before: "dim 0 must be -1" for every batch
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(compiled(x)[0], ref.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
