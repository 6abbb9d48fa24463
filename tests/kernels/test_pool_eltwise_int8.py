"""Int8 pooling, add and concat: bit-exact against the numpy references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quantgraph.errors import KernelError
from quantgraph.kernels import PoolSpec, add_requant, avg_pool, concat_requant, global_avg_pool, max_pool
from quantgraph.kernels.reference import (add_requant_reference, avg_pool_reference, concat_requant_reference,
                                          max_pool_reference)

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


def _x(rng, shape, dtype):
    lo = -128 if dtype == "int8" else 0
    return rng.integers(lo, lo + 256, shape).astype(dtype)


@SETTINGS
@given(h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 20), k=st.integers(1, 3), s=st.integers(1, 2),
       pad=st.integers(0, 2), include_pad=st.booleans(), signed=st.booleans(), seed=st.integers(0, 2**16))
def test_pooling_matches_reference(h, w, c, k, s, pad, include_pad, signed, seed):
    assume(pad < k)
    spec = PoolSpec((k, k), (s, s), (pad, pad, pad, pad), count_include_pad=include_pad)
    oh, ow = spec.out_hw(h, w)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(seed)
    dtype = "int8" if signed else "uint8"
    x = _x(rng, (2, h, w, c), dtype)
    assert np.array_equal(max_pool(x, spec), max_pool_reference(x, spec.kernel, spec.strides, spec.pads))
    q = dict(x_scale=0.05, x_zero_point=3, out_scale=0.07, out_zero_point=-2 if signed else 5)
    got = avg_pool(x, spec, **q)
    want = avg_pool_reference(x, spec.kernel, spec.strides, spec.pads, count_include_pad=include_pad, **q)
    assert np.array_equal(got, want)


def test_global_avg_pool_matches_reference():
    rng = np.random.default_rng(0)
    x = _x(rng, (2, 7, 7, 33), "uint8")
    q = dict(x_scale=0.02, x_zero_point=9, out_scale=0.01, out_zero_point=1)
    got = global_avg_pool(x, **q)
    assert got.shape == (2, 1, 1, 33)
    assert np.array_equal(got, avg_pool_reference(x, (7, 7), **q))


@pytest.mark.parametrize("out_dtype,relu", [("uint8", True), ("int8", False)])
def test_add_requant_matches_reference(out_dtype, relu):
    rng = np.random.default_rng(1)
    a, b = _x(rng, (3, 5, 7), "uint8"), _x(rng, (3, 5, 7), "int8")
    q = dict(a_scale=0.1, a_zero_point=4, b_scale=0.03, b_zero_point=-7, out_scale=0.08, out_zero_point=3,
             out_dtype=out_dtype, relu=relu)
    assert np.array_equal(add_requant(a, b, **q), add_requant_reference(a, b, **q))


def test_concat_requant_matches_reference_and_copies_matching_inputs():
    rng = np.random.default_rng(2)
    xs = [_x(rng, (2, 3, 4, c), "uint8") for c in (5, 8, 3)]
    scales, zps = [0.1, 0.05, 0.2], [3, 0, 7]
    got = concat_requant(xs, scales, zps, axis=-1, out_scale=0.05, out_zero_point=0)
    want = concat_requant_reference(xs, scales, zps, axis=-1, out_scale=0.05, out_zero_point=0)
    assert np.array_equal(got, want)
    assert np.array_equal(got[..., 5:13], xs[1])


def test_pool_and_eltwise_refuse_bad_arguments():
    with pytest.raises(KernelError, match="expected 4-D NHWC"):
        max_pool(np.zeros((3, 3, 3), np.uint8), PoolSpec((2, 2)))
    with pytest.raises(KernelError, match="smaller than the kernel"):
        max_pool(np.zeros((1, 3, 3, 1), np.uint8), PoolSpec((2, 2), pads=(2, 0, 0, 0)))
    with pytest.raises(KernelError, match="equal shapes"):
        add_requant(np.zeros(3, np.uint8), np.zeros(4, np.uint8), a_scale=1, a_zero_point=0, b_scale=1,
                    b_zero_point=0, out_scale=1, out_zero_point=0)
    with pytest.raises(KernelError, match="do not concatenate"):
        concat_requant([np.zeros((2, 3), np.uint8), np.zeros((3, 3), np.uint8)], [1, 1], [0, 0], axis=1,
                       out_scale=1, out_zero_point=0)
