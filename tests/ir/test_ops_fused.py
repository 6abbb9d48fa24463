"""The compiler-made ops: FusedConv / FusedMatMul / FusedPool references against the ops they replace."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.interpreter import run
from quantgraph.ir.ops.activation import ACTIVATIONS
from quantgraph.ir.ops.registry import ref

rng = np.random.default_rng(5)


def _nhwc(x):
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_fused_conv_matches_conv_add_act_in_both_layouts(activation: str) -> None:
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    attrs = dict(pads=(1, 1, 1, 1), strides=(2, 2), group=2)
    y = ref("Conv", x, w, b, **attrs)
    z = rng.standard_normal(y.shape).astype(np.float32)
    want = ACTIVATIONS[activation].reference(y + z, 0.1, 2.0)
    got = ref("FusedConv", x, w, b, z, activation=activation, alpha=0.1, beta=2.0, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = ref("FusedConv", _nhwc(x), w, b, _nhwc(z), activation=activation, alpha=0.1, beta=2.0, layout="NHWC",
              **attrs)
    np.testing.assert_allclose(got, _nhwc(want), rtol=1e-5, atol=1e-6)


def test_fused_conv_nhwc_shape_inference() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", ("N", 8, 8, 3))
    y = gb.op("FusedConv", x, gb.const(np.zeros((5, 3, 3, 3), np.float32)), strides=(2, 2), pads=(1, 1, 1, 1),
              layout="NHWC")
    assert gb.graph.tensors[y].shape == ("N", 4, 4, 5)


def test_fused_matmul_bias_residual_activation() -> None:
    a, b = rng.standard_normal((2, 3, 5)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    bias, z = rng.standard_normal(4).astype(np.float32), rng.standard_normal((2, 3, 4)).astype(np.float32)
    got = ref("FusedMatMul", a, b, bias, z, activation="gelu")
    np.testing.assert_allclose(got, ref("Gelu", a @ b + bias + z), rtol=1e-5, atol=1e-6)


def test_fused_matmul_rejects_a_growing_bias() -> None:
    gb = GraphBuilder("t")
    a = gb.input("a", (3, 5))
    with pytest.raises(ShapeError, match="would grow the product"):
        gb.op("FusedMatMul", a, gb.const(np.zeros((5, 4), np.float32)), gb.const(np.zeros((2, 3, 4), np.float32)))


def test_unknown_activation_and_layout_are_errors() -> None:
    gb = GraphBuilder("t")
    a = gb.input("a", (3, 5))
    with pytest.raises(ShapeError, match="activation 'swish7' is unknown"):
        gb.op("FusedMatMul", a, gb.const(np.zeros((5, 4), np.float32)), activation="swish7")
    x = gb.input("x", (1, 3, 4, 4))
    with pytest.raises(ShapeError, match="layout 'NCHW16c' is unknown"):
        gb.op("FusedPool", x, kind="GlobalMaxPool", layout="NCHW16c")


@pytest.mark.parametrize("kind,attrs", [("MaxPool", {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
                                        ("AveragePool", {"kernel_shape": (2, 2), "strides": (2, 2)}),
                                        ("GlobalAveragePool", {}), ("GlobalMaxPool", {})])
def test_fused_pool_matches_pool_in_both_layouts(kind: str, attrs: dict) -> None:
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    want = ref(kind, x, **attrs)
    want = want[0] if isinstance(want, tuple) else want
    np.testing.assert_allclose(ref("FusedPool", x, kind=kind, **attrs), want, rtol=1e-6, atol=1e-6)
    gb = GraphBuilder("t")
    xi = gb.input("x", (2, 7, 7, 3))
    g = gb.output(gb.op("FusedPool", xi, kind=kind, layout="NHWC", **attrs)).build()
    got = run(g, {"x": _nhwc(x)})[g.outputs[0]]
    assert g.tensors[g.outputs[0]].shape == got.shape
    np.testing.assert_allclose(got, _nhwc(want), rtol=1e-6, atol=1e-6)
