"""Conv / FusedConv fp32 kernels vs the registry reference: layouts, groups, depthwise, strides, pads, activations."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.ir.ops.activation import ACTIVATIONS
from tests.kernels.fp32.helpers import check, one_node

# (N, C, H, W, M, k, group, stride, dilation, pads)
GEOMS = [
    (1, 3, 9, 7, 5, 3, 1, 1, 1, (1, 1, 1, 1)),       # odd spatial sizes, padded 3x3
    (2, 4, 8, 8, 6, 1, 1, 1, 1, (0, 0, 0, 0)),       # 1x1 stride 1: direct GEMM
    (2, 6, 11, 10, 4, 1, 1, 2, 1, (0, 0, 0, 0)),     # 1x1 stride 2
    (1, 5, 13, 9, 7, 3, 1, 2, 2, (2, 1, 0, 2)),      # dilation + asymmetric pads
    (2, 8, 7, 9, 8, 3, 8, 1, 1, (1, 1, 1, 1)),       # depthwise
    (1, 6, 10, 10, 6, 5, 6, 2, 1, (2, 2, 2, 2)),     # depthwise 5x5 stride 2
    (2, 8, 7, 7, 12, 3, 4, 1, 1, (1, 0, 1, 0)),      # grouped
    (1, 6, 6, 6, 4, 1, 2, 1, 1, (0, 0, 0, 0)),       # grouped 1x1
    (1, 3, 15, 15, 8, 7, 1, 2, 1, (3, 3, 3, 3)),     # ResNet stem
]


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _conv_case(geom, layout, act, residual, bias=True, seed=0):
    n, c, h, w, m, k, group, s, d, pads = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c // group, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    oh = (h + pads[0] + pads[2] - d * (k - 1) - 1) // s + 1
    ow = (w + pads[1] + pads[3] - d * (k - 1) - 1) // s + 1
    z = rng.standard_normal((n, m, oh, ow)).astype(np.float32)
    if layout == "NHWC":
        x, z = _nhwc(x), _nhwc(z)
    alpha, beta = {"leaky_relu": (0.1, 0.0), "clip": (-0.5, 0.7), "hardsigmoid": (0.2, 0.5)}.get(act, (0.0, 0.0))
    inputs = [("x", x), ("const:w", wt), ("const:b", b) if bias else (None, None)]
    if residual:
        inputs.append(("z", z))
    return one_node("FusedConv", inputs, strides=(s, s), dilations=(d, d), pads=pads, group=group,
                    activation=act, alpha=alpha, beta=beta, layout=layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("geom", GEOMS, ids=[f"g{i}" for i in range(len(GEOMS))])
def test_fused_conv_geometries_match_reference(geom, layout) -> None:
    g, feeds = _conv_case(geom, layout, "relu", residual=True)
    check(g, feeds, "conv_f32_im2col")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_fused_conv_every_activation(act, layout) -> None:
    g, feeds = _conv_case(GEOMS[0], layout, act, residual=act == "relu")
    check(g, feeds, "conv_f32_im2col")


@pytest.mark.parametrize("geom", [GEOMS[0], GEOMS[1], GEOMS[4], GEOMS[6]], ids=["3x3", "1x1", "dw", "grouped"])
def test_plain_conv_without_bias(geom) -> None:
    n, c, h, w, m, k, group, s, d, pads = geom
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c // group, k, k)).astype(np.float32)
    g, feeds = one_node("Conv", [("x", x), ("const:w", wt)], strides=(s, s), dilations=(d, d), pads=pads,
                        group=group)
    check(g, feeds, "conv_f32_im2col")


def test_conv_with_runtime_weights_falls_back_to_reference() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    wt = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    g, feeds = one_node("Conv", [("x", x), ("w", wt)])
    cm = check(g, feeds)
    assert next(iter(cm.plans.values())).kernels == ["reference"]
