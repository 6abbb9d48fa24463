"""Int16 GEMM: bit-exact on every ISA rung, including the wrapping (-32768)^2 pair."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.kernels import Epilogue, gemm_s16s16s32, gemm_u8s8s32, pack_weights
from quantgraph.kernels.reference import gemm_reference
from tests.kernels.conftest import ISAS


@settings(max_examples=8, deadline=None, derandomize=True)
@given(m=st.integers(1, 20), k=st.integers(1, 40), n=st.integers(1, 70), zp=st.integers(-300, 300),
       seed=st.integers(0, 2**16))
def test_gemm_int16_matches_reference_on_every_isa(m, k, n, zp, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-32768, 32768, (m, k)).astype(np.int16)
    w = rng.integers(-32768, 32768, (k, n)).astype(np.int16)
    p = pack_weights(w, a_dtype="int16", a_zero_point=zp)
    want = gemm_reference(a, w, a_zero_point=zp)
    for isa in ISAS:
        with config.override(isa=isa):
            assert np.array_equal(gemm_s16s16s32(a, p), want), isa


def test_gemm_int16_extremes_wrap_identically(isa):
    a = np.full((3, 6), -32768, np.int16)
    w = np.full((6, 33), -32768, np.int16)
    assert np.array_equal(gemm_s16s16s32(a, pack_weights(w, a_dtype="int16")), gemm_reference(a, w))


def test_gemm_int16_epilogue_and_layout_checks():
    rng = np.random.default_rng(0)
    a = rng.integers(-1000, 1000, (5, 7)).astype(np.int16)
    w = rng.integers(-1000, 1000, (7, 9)).astype(np.int16)
    epi = Epilogue(out_dtype="float32", scale=1e-3, activation="relu")
    p = pack_weights(w, a_dtype="int16")
    assert np.array_equal(gemm_s16s16s32(a, p, epi), gemm_reference(a, w, epilogue=epi))
    with pytest.raises(KernelError, match="packed as 'k2n32'; want '(k4n32|amx)'"):
        gemm_u8s8s32(a.astype(np.uint8), p)


def test_gemm_int16_large_k_at_int16_qmax_does_not_overflow(isa):
    """An int16 group's worst case: K=4608 products of |x| = int16_qmax(K) and |w| = 127 (s8 weights widened)
    plus a bias fit int32 exactly, so every rung equals the int64 sum (no wrap)."""
    from quantgraph.compiler.quantize.quantize import int16_qmax
    k, n, bias = 4608, 40, 10 ** 6
    q = int16_qmax(k, bias)
    rng = np.random.default_rng(3)
    a = rng.choice([-q, q], (4, k)).astype(np.int16)
    a[0] = q
    w = rng.choice([-127, 127], (k, n)).astype(np.int8).astype(np.int16)
    w[:, 0] = 127
    b = np.full(n, bias, np.int32)
    got = gemm_s16s16s32(a, pack_weights(w, a_dtype="int16", bias_s32=b))
    want = a.astype(np.int64) @ w.astype(np.int64) + bias
    assert want.max() <= 2 ** 31 - 1 and want[0, 0] == k * 127 * q + bias
    assert np.array_equal(got.astype(np.int64), want)
