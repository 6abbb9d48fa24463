"""ONNX import of normalization and softmax ops at old opsets: BatchNormalization's spatial/is_test/
consumed_inputs, softmax's pre-13 2-D coercion, GroupNormalization-18's per-group parameters."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import quantgraph

from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.importer import import_onnx
from tests.frontends.test_onnx_nn import compare, one_node_model

RNG = np.random.default_rng(6)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _bn_params(*shape: int) -> dict[str, np.ndarray]:
    return {"s": _x(*shape), "b": _x(*shape), "m": _x(*shape), "v": np.abs(_x(*shape)) + 0.5}


@pytest.mark.parametrize("opset, attrs", [(6, {"is_test": 1, "spatial": 1}), (7, {"spatial": 1}),
                                          (9, {"momentum": 0.8}), (15, {"training_mode": 0})])
def test_batch_norm_old_versions(opset: int, attrs: dict) -> None:
    model = one_node_model("BatchNormalization", opset, [2, 3, 4, 4], _bn_params(3), ["X", "s", "b", "m", "v"],
                           epsilon=1e-3, **attrs)
    compare(model, _x(2, 3, 4, 4))


def test_batch_norm_opset1_consumed_inputs() -> None:
    model = one_node_model("BatchNormalization", 1, [2, 3, 4], _bn_params(3), ["X", "s", "b", "m", "v"],
                           consumed_inputs=[0, 0, 0, 1, 1], is_test=1)
    (bn,) = import_onnx(model).nodes
    assert bn.op == "BatchNormalization"


def test_batch_norm_spatial0_per_activation_folds_to_mul_add() -> None:
    p = _bn_params(3, 2, 2)
    model = one_node_model("BatchNormalization", 7, [2, 3, 2, 2], p, ["X", "s", "b", "m", "v"], spatial=0)
    assert [n.op for n in import_onnx(model).nodes] == ["Mul", "Add"]
    x = _x(2, 3, 2, 2)
    got = compare(model, x)[0]
    want = (x - p["m"]) / np.sqrt(p["v"] + 1e-5) * p["s"] + p["b"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset, n_out, attrs", [(15, 3, {"training_mode": 1, "momentum": 0.7}),
                                                 (14, 3, {"training_mode": 1}), (9, 5, {"momentum": 0.6}),
                                                 (7, 5, {"spatial": 1}), (6, 5, {"is_test": 0})])
def test_batch_norm_training_mode_matches_onnxruntime(opset: int, n_out: int, attrs: dict) -> None:
    model = one_node_model("BatchNormalization", opset, [2, 3, 4, 5], _bn_params(3), ["X", "s", "b", "m", "v"],
                           n_out=n_out, **attrs)
    assert [n.op for n in import_onnx(model).nodes] == ["BatchNormalizationTraining"]
    x = _x(2, 3, 4, 5)
    if opset >= 7:
        compare(model, x, rtol=1e-4, atol=1e-5)
    got = quantgraph.compile(model, opt_level=0)(x)
    mean, var = x.mean(axis=(0, 2, 3), dtype=np.float64), x.var(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_allclose(got[0].mean(axis=(0, 2, 3)), _bn_params_seen(model, "b"), atol=1e-5)
    momentum = attrs.get("momentum", 0.9)
    np.testing.assert_allclose(got[1], _bn_params_seen(model, "m") * momentum + mean * (1 - momentum), rtol=1e-5)
    if n_out > 2:
        np.testing.assert_allclose(got[2], _bn_params_seen(model, "v") * momentum + var * (1 - momentum), rtol=1e-5)


def _bn_params_seen(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_batch_norm_training_spatial0_is_unsupported() -> None:
    model = one_node_model("BatchNormalization", 7, [2, 3, 4], _bn_params(3, 4), ["X", "s", "b", "m", "v"],
                           n_out=5, spatial=0)
    with pytest.raises(UnsupportedOpError, match="training mode with spatial=0 .* is not supported"):
        import_onnx(model)


def test_batch_norm_training_flag_zero_stays_inference() -> None:
    model = one_node_model("BatchNormalization", 15, [2, 3, 4], _bn_params(3), ["X", "s", "b", "m", "v"],
                           training_mode=0)
    assert [n.op for n in import_onnx(model).nodes] == ["BatchNormalization"]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset, shape, attrs", [(7, [2, 3, 4], {}), (11, ["N", 3, 4, 5], {"axis": 1}),
                                                 (11, [2, 3, 4], {"axis": -1}), (9, [2, 3, 4, 5], {"axis": 0})])
def test_softmax_family_pre13_coerces_to_2d(op: str, opset: int, shape: list, attrs: dict) -> None:
    model = one_node_model(op, opset, shape, {}, ["X"], **attrs)
    compare(model, _x(*[2 if isinstance(d, str) else d for d in shape]))


def test_softmax_pre13_symbolic_tail_uses_shape_op() -> None:
    model = one_node_model("Softmax", 11, [2, 3, "W"], {}, ["X"], axis=1)
    assert [n.op for n in import_onnx(model).nodes] == ["Reshape", "Softmax", "Shape", "Reshape"]
    compare(model, _x(2, 3, 5))


def test_lrn_and_instance_norm_opset7() -> None:
    compare(one_node_model("LRN", 7, [1, 5, 3, 3], {}, ["X"], size=3, alpha=0.01, beta=0.6, bias=1.5),
            _x(1, 5, 3, 3))
    compare(one_node_model("InstanceNormalization", 7, [2, 3, 4, 4], {"s": _x(3), "b": _x(3)}, ["X", "s", "b"],
                           epsilon=1e-4), _x(2, 3, 4, 4))


def test_group_norm_opset18_per_group_params() -> None:
    model = one_node_model("GroupNormalization", 18, [2, 4, 3], {"s": _x(2), "b": _x(2)}, ["X", "s", "b"],
                           num_groups=2)
    compare(model, _x(2, 4, 3), rtol=1e-4, atol=1e-4, reference=True)


def test_lp_normalization_and_mvn_opset9() -> None:
    compare(one_node_model("LpNormalization", 7, [2, 3, 4], {}, ["X"], axis=1, p=1), _x(2, 3, 4))
    compare(one_node_model("MeanVarianceNormalization", 9, [2, 3, 4, 4], {}, ["X"]), _x(2, 3, 4, 4),
            rtol=1e-4, atol=1e-4)
