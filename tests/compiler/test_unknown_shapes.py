"""Rewrites on graphs whose shapes are not fully known (dynamic batch/sequence/hidden dims, unknown rank), as real
exported models have them: every rule refuses what it cannot handle, nothing raises, the numerics do not change; and
a rule that does raise is a PassError in tests but only a skipped rewrite (with a warning) for users."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import quantgraph
from quantgraph import config
from quantgraph.bench.models import bert_encoder, resnet50, sample_inputs
from quantgraph.compiler.passes.infer_shapes import infer_shapes
from quantgraph.compiler.pipeline import optimize
from quantgraph.compiler.rules import norm
from quantgraph.errors import PassError
from quantgraph.ir.graph import Graph
from quantgraph.ir.interpreter import run

RNG = np.random.default_rng(3)


def _forget_input_shapes(graph: Graph, how: str) -> Graph:
    """The graph with its input shapes replaced (rank unknown / every dim unknown / every dim a symbol), re-inferred."""
    g = graph.copy()
    for name in g.inputs:
        info = g.tensors[name]
        shape = {"rank": None, "dims": tuple(None for _ in info.shape),
                 "symbols": tuple(f"{name}_{i}" for i in range(len(info.shape)))}[how]
        g.set_tensor(info.with_(shape=shape))
    return infer_shapes(g)


@pytest.mark.parametrize("how", ["rank", "dims", "symbols"])
@pytest.mark.parametrize("build", [lambda: resnet50(image=32), lambda: bert_encoder(layers=1, mask=True)],
                         ids=["resnet50", "bert"])
def test_every_rule_refuses_or_fires_on_unknown_input_shapes(build, how: str) -> None:
    model = build()
    graph = quantgraph.load_onnx(model)
    feeds = sample_inputs(model, batch=2)
    want = run(graph, feeds)
    assert config.get().strict  # a rule that raises fails this test instead of being skipped
    after, _ = optimize(_forget_input_shapes(graph, how), 3)
    got = run(after, feeds)
    for k in graph.outputs:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)
    assert len(after) < len(graph)  # still optimized (the products fuse whatever the shapes)


def _written_out_layer_norm(hidden: int = 16) -> onnx.ModelProto:
    """x (-1, -1, ?) -> LayerNorm written out as PyTorch/Paddle export it -> MatMul: the hidden size is dynamic."""
    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    inits = [const("axes", np.array([-1], np.int64)), const("two", np.array(2.0, np.float32)),
             const("eps", np.array(1e-5, np.float32)),
             const("gamma", (1 + 0.1 * RNG.standard_normal(hidden)).astype(np.float32)),
             const("beta", RNG.standard_normal(hidden).astype(np.float32)),
             const("w", RNG.standard_normal((hidden, 4)).astype(np.float32))]
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["mean"]), helper.make_node("Sub", ["x", "mean"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq", "axes"], ["var"]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["std"]),
             helper.make_node("Div", ["d", "std"], ["n"]), helper.make_node("Mul", ["n", "gamma"], ["s"]),
             helper.make_node("Add", ["s", "beta"], ["ln"]), helper.make_node("MatMul", ["ln", "w"], ["y"])]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, -1, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, -1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("opt_level", [2, 3])
def test_layer_norm_over_a_dynamic_hidden_dim_compiles_and_runs(opt_level: int) -> None:
    """The PP-OCR recognizer failure: `layer_norm` crashed in np.broadcast_to on the dynamic trailing dim."""
    model = _written_out_layer_norm()
    compiled = quantgraph.compile(model, opt_level=opt_level)
    assert "LayerNormalization" not in compiled.graph.op_counts()  # refused: the normalized dim is not static
    ref = ReferenceEvaluator(model)
    for shape in ((1, 3, 16), (3, 5, 16)):
        x = RNG.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(compiled(x)[0], ref.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)


def _static_layer_norm_model() -> onnx.ModelProto:
    model = _written_out_layer_norm()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (2, 5, 16)):
        d.dim_value = v
    return model


def _raising(m):  # noqa: ANN001 - a Match
    raise TypeError("'<' not supported between instances of 'NoneType' and 'int'")


def test_a_rule_that_raises_fails_compile_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(norm.layer_norm, "fn", _raising)
    with pytest.raises(PassError, match=r"pass 'recognize_patterns' failed .*rule 'layer_norm' raised TypeError: "
                                        r"'<' not supported") as info:
        quantgraph.compile(_static_layer_norm_model(), opt_level=2)
    assert info.value.node is not None and info.value.op is not None


def test_a_rule_that_raises_is_skipped_for_users_and_the_model_compiles(monkeypatch, caplog) -> None:
    model = _static_layer_norm_model()
    assert "LayerNormalization" in quantgraph.compile(model, opt_level=2).graph.op_counts()  # the rule works...
    monkeypatch.setattr(norm.layer_norm, "fn", _raising)  # ...until it raises
    with config.override(strict=False), caplog.at_level(logging.WARNING, logger="quantgraph.compiler.rewrite"):
        compiled = quantgraph.compile(model, opt_level=2)
    assert "LayerNormalization" not in compiled.graph.op_counts()
    warned = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and all("rule 'layer_norm' raised TypeError" in w and "this rewrite is skipped" in w
                          for w in warned)
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(compiled(x)[0], ReferenceEvaluator(model).run(None, {"x": x})[0], rtol=1e-4,
                               atol=1e-4)
