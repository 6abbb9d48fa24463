"""FusedAttention fp32 kernel (BLAS on strided head views + fused softmax) vs the registry reference."""
from __future__ import annotations

import numpy as np
import pytest

from tests.kernels.fp32.helpers import check, one_node

rng = np.random.default_rng(0)


def _r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# (batch, q_len, kv_len, heads, head_size, head_size_v)
SHAPES = [(1, 1, 1, 1, 8, 8), (1, 7, 7, 3, 5, 5), (2, 7, 7, 1, 13, 13), (2, 5, 9, 3, 17, 6), (1, 33, 33, 2, 24, 24),
          (1, 128, 128, 6, 64, 64)]


@pytest.mark.parametrize("mask_shape", [None, "b11k", "bqk", "k"])
@pytest.mark.parametrize("b,sq,skv,h,d,dv", SHAPES)
def test_fused_attention_kernel(b, sq, skv, h, d, dv, mask_shape) -> None:
    inputs = [("q", _r(b, sq, h * d)), ("k", _r(b, skv, h * d)), ("v", _r(b, skv, h * dv))]
    if mask_shape is not None:
        shape = {"b11k": (b, 1, 1, skv), "bqk": (b, 1, sq, skv), "k": (skv,)}[mask_shape]
        mask = np.where(rng.random(shape) < 0.25, np.float32(-10000.0), _r(*shape) * np.float32(0.1))
        inputs.append(("mask", mask.astype(np.float32)))
    g, feeds = one_node("FusedAttention", inputs, num_heads=h, scale=float(1 / np.sqrt(d)))
    check(g, feeds, "attention_f32_blas", rtol=1e-5)


def test_fused_attention_kernel_constant_mask_and_large_logits() -> None:
    q, k = _r(1, 9, 12) * 8, _r(1, 9, 12) * 8  # logits spread over ~[-200, 200]: exp underflows to exact 0
    g, feeds = one_node("FusedAttention", [("q", q), ("k", k), ("v", _r(1, 9, 12)),
                                           ("const:mask", np.triu(np.full((9, 9), -1e9, np.float32), 1))],
                        num_heads=2, scale=1.0)
    check(g, feeds, "attention_f32_blas", rtol=1e-5)


def test_exp_rows_accuracy() -> None:
    from numba import njit

    from quantgraph.kernels.fp32.expf import exp_nonpos_row

    @njit
    def run(x):
        exp_nonpos_row(x, x.size)

    x = np.concatenate([np.linspace(-100, 0, 20001), [-np.inf, -87.2, -1e-30, 0.0]]).astype(np.float32)
    y = x.copy()
    run(y)
    want = np.exp(x.astype(np.float64))
    normal = want > 1e-37
    assert np.max(np.abs(y[normal] - want[normal]) / want[normal]) < 3e-7
    assert np.all(y[x < -87.3] == 0.0)


def test_fused_attention_kernel_refuses_float64() -> None:
    from quantgraph.compiler.lower import select

    g, _ = one_node("FusedAttention", [("q", _r(1, 3, 4).astype(np.float64)), ("k", _r(1, 3, 4).astype(np.float64)),
                                       ("v", _r(1, 3, 4).astype(np.float64))], num_heads=2, scale=0.5)
    k, reason = select(g.topo()[0], g)
    assert k is None and "float32 only" in reason
