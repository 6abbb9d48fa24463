"""MatMul / Gemm / FusedMatMul fp32 kernels vs the registry reference on odd shapes."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.ir.ops.activation import ACTIVATIONS
from tests.kernels.fp32.helpers import check, one_node

rng = np.random.default_rng(0)


def _r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


CASES = [((1, 7), (7, 5), True), ((3, 13, 9), (9, 17), True), ((2, 3, 5, 4), (2, 3, 4, 6), False),
         ((33, 65), (65, 3), False)]


@pytest.mark.parametrize("a_shape,b_shape,const_b", CASES)
def test_matmul(a_shape, b_shape, const_b) -> None:
    g, feeds = one_node("MatMul", [("a", _r(*a_shape)), ("const:b" if const_b else "b", _r(*b_shape))])
    check(g, feeds, "matmul_f32_blas")


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_fused_matmul_bias_residual_activation(act) -> None:
    alpha, beta = {"leaky_relu": (0.1, 0.0), "clip": (-0.5, 0.7), "hardsigmoid": (0.2, 0.5)}.get(act, (0.0, 0.0))
    g, feeds = one_node("FusedMatMul", [("a", _r(2, 7, 9)), ("const:b", _r(9, 11)), ("const:bias", _r(11)),
                                        ("z", _r(2, 7, 11))], activation=act, alpha=alpha, beta=beta)
    check(g, feeds, "matmul_f32_blas")


def test_fused_matmul_broadcast_bias_goes_through_numpy_add() -> None:
    g, feeds = one_node("FusedMatMul", [("a", _r(5, 3)), ("const:b", _r(3, 4)), ("const:bias", _r(5, 1))])
    check(g, feeds, "matmul_f32_blas")


@pytest.mark.parametrize("ta,tb,alpha,beta,c_shape", [(0, 0, 1.0, 1.0, (5,)), (1, 0, 0.5, 2.0, (3, 5)),
                                                      (0, 1, 1.0, 0.5, (1, 5)), (1, 1, 2.0, 1.0, None)])
def test_gemm(ta, tb, alpha, beta, c_shape) -> None:
    a = _r(7, 3) if ta else _r(3, 7)
    b = _r(5, 7) if tb else _r(7, 5)
    inputs = [("a", a), ("const:b", b)] + ([("const:c", _r(*c_shape))] if c_shape else [])
    g, feeds = one_node("Gemm", inputs, transA=ta, transB=tb, alpha=alpha, beta=beta)
    check(g, feeds, "gemm_f32_blas")


def test_gemm_runtime_b_and_c() -> None:
    g, feeds = one_node("Gemm", [("a", _r(4, 6)), ("b", _r(3, 6)), ("c", _r(4, 3))], transB=1, alpha=0.3, beta=1.5)
    check(g, feeds, "gemm_f32_blas")
