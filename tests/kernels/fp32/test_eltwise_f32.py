"""Elementwise, normalization, softmax, pooling and data-movement fp32 kernels vs the registry reference."""
from __future__ import annotations

import numpy as np
import pytest

from tests.kernels.fp32.helpers import check, one_node

rng = np.random.default_rng(0)


def _r(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("op,attrs", [("Relu", {}), ("Sigmoid", {}), ("LeakyRelu", {"alpha": 0.2}),
                                      ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}),
                                      ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Erf", {}), ("Tanh", {})])
def test_unary_numba(op, attrs) -> None:
    g, feeds = one_node(op, [("x", _r(3, 5, 7, scale=3.0))], **attrs)
    check(g, feeds, "unary_f32_numba")


@pytest.mark.parametrize("op", ["Exp", "Neg", "Abs"])
def test_unary_numpy(op) -> None:
    g, feeds = one_node(op, [("x", _r(2, 9))])
    check(g, feeds, "eltwise_f32_numpy")


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
@pytest.mark.parametrize("shapes", [((2, 3, 5), (2, 3, 5)), ((2, 3, 5), (5,)), ((3, 1), (1, 4))])
def test_binary_broadcasting(op, shapes) -> None:
    g, feeds = one_node(op, [("a", _r(*shapes[0])), ("b", _r(*shapes[1]) + (3.0 if op == "Div" else 0.0))])
    check(g, feeds, "eltwise_f32_numpy")


def test_clip_constant_bounds() -> None:
    g, feeds = one_node("Clip", [("x", _r(4, 6, scale=3)), ("const:lo", np.float32(-1)), ("const:hi", np.float32(2))])
    check(g, feeds, "unary_f32_numba")


def test_float64_elementwise_runs_the_reference() -> None:
    g, feeds = one_node("Relu", [("x", rng.standard_normal((3, 4)))])
    cm = check(g, feeds)
    assert next(iter(cm.plans.values())).kernels == ["reference"]


@pytest.mark.parametrize("shape", [(1, 7), (2, 3, 129), (4, 1)])
def test_softmax_last_axis(shape) -> None:
    g, feeds = one_node("Softmax", [("x", _r(*shape, scale=4))], axis=-1)
    check(g, feeds, "softmax_f32_numba")


def test_softmax_other_axis_runs_reference() -> None:
    g, feeds = one_node("Softmax", [("x", _r(3, 4))], axis=0)
    cm = check(g, feeds)
    assert next(iter(cm.plans.values())).kernels == ["reference"]


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm(bias) -> None:
    inputs = [("x", _r(2, 5, 33, scale=2) + 1.0), ("const:s", _r(33))] + ([("const:b", _r(33))] if bias else [])
    g, feeds = one_node("LayerNormalization", inputs, axis=-1, epsilon=1e-5)
    check(g, feeds, "layernorm_f32_numba")


def test_batch_norm_inference() -> None:
    c = 5
    g, feeds = one_node("BatchNormalization", [("x", _r(2, c, 3, 4)), ("const:s", _r(c)), ("const:b", _r(c)),
                                               ("const:m", _r(c)), ("const:v", np.abs(_r(c)) + 0.5)])
    check(g, feeds, "batchnorm_f32_numba")


POOLS = [("MaxPool", {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
         ("MaxPool", {"kernel_shape": (2, 3), "strides": (1, 2)}),
         ("AveragePool", {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
         ("AveragePool", {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "count_include_pad": 1}),
         ("GlobalAveragePool", {}), ("GlobalMaxPool", {})]


@pytest.mark.parametrize("op,attrs", POOLS)
def test_pool_nchw(op, attrs) -> None:
    g, feeds = one_node(op, [("x", _r(2, 3, 9, 11))], **attrs)
    check(g, feeds, "pool_f32_numba")


@pytest.mark.parametrize("op,attrs", POOLS)
def test_fused_pool_nhwc(op, attrs) -> None:
    g, feeds = one_node("FusedPool", [("x", _r(2, 9, 11, 5))], kind=op, layout="NHWC", **attrs)
    check(g, feeds, "pool_f32_numba")


def test_ceil_mode_pool_runs_reference() -> None:
    g, feeds = one_node("MaxPool", [("x", _r(1, 2, 7, 7))], kernel_shape=(2, 2), strides=(2, 2), ceil_mode=1)
    cm = check(g, feeds)
    assert next(iter(cm.plans.values())).kernels == ["reference"]


def test_transpose_concat_reshape() -> None:
    g, feeds = one_node("Transpose", [("x", _r(2, 3, 4))], perm=(2, 0, 1))
    check(g, feeds, "transpose_copy")
    g, feeds = one_node("Concat", [("a", _r(2, 3)), ("b", _r(2, 5))], axis=1)
    check(g, feeds, "concat_copy")
    g, feeds = one_node("Reshape", [("x", _r(2, 6)), ("const:s", np.array([3, 4], np.int64))])
    check(g, feeds, "view")
