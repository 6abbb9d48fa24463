"""Int8 NHWC convolution: bit-exact against the numpy reference on every path (im2col, 1x1 GEMM, depthwise)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.kernels import Epilogue
from quantgraph.kernels.conv_int8 import ConvSpec, conv_u8s8, pack_conv_weights
from quantgraph.kernels.reference import conv_reference
from tests.kernels.conftest import BEST


def _case(rng, n, h, w, c, m, k, s, p, d, g, x_dtype, zp):
    lo = -128 if x_dtype == "int8" else 0
    x = rng.integers(lo, lo + 256, (n, h, w, c)).astype(x_dtype)
    wt = rng.integers(-128, 128, (m, c // g, *k)).astype(np.int8)
    spec = ConvSpec(k, s, p, d, g)
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    return x, wt, spec, bias


def _ref(x, wt, spec, zp, bias, epi=Epilogue()):
    return conv_reference(x, wt, strides=spec.strides, pads=spec.pads, dilations=spec.dilations, group=spec.group,
                          x_zero_point=zp, bias_s32=bias, epilogue=epi)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9), cg=st.integers(1, 6), mg=st.integers(1, 9),
       g=st.sampled_from([1, 1, 2, 3]), kh=st.integers(1, 3), kw=st.integers(1, 3), s=st.integers(1, 2),
       pad=st.integers(0, 2), dil=st.integers(1, 2), signed=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_matches_reference_on_best_and_portable_isa(n, h, w, cg, mg, g, kh, kw, s, pad, dil, signed, seed):
    rng = np.random.default_rng(seed)
    spec_try = ConvSpec((kh, kw), (s, s), (pad, pad, pad, pad), (dil, dil), g)
    oh, ow = spec_try.out_hw(h, w)
    assume(oh >= 1 and ow >= 1)
    x_dtype = "int8" if signed else "uint8"
    zp = int(rng.integers(-128, 128)) if signed else int(rng.integers(0, 256))
    x, wt, spec, bias = _case(rng, n, h, w, cg * g, mg * g, (kh, kw), (s, s), (pad,) * 4, (dil, dil), g, x_dtype, zp)
    packed = pack_conv_weights(wt, spec, x_dtype=x_dtype, x_zero_point=zp, bias_s32=bias)
    want = _ref(x, wt, spec, zp, bias)
    # NOTE: the ISA-specific part of a conv is the GEMM microkernel, which test_gemm_int8 checks on every rung;
    # here the best rung and the portable twin keep the cold (compile-bound) test run short.
    for isa in sorted({BEST, "portable"}):
        with config.override(isa=isa):
            got = conv_u8s8(x, packed)
        assert np.array_equal(got, want), f"isa {isa}, path {packed.path}, spec {spec}"


@pytest.mark.parametrize("isa_name", [BEST])  # NOTE: the portable epilogue is covered by test_gemm_int8
@pytest.mark.parametrize("geom", [
    dict(k=(3, 3), s=(1, 1), p=(1, 1, 1, 1), g=1, c=13, m=40),     # im2col, K and N tails
    dict(k=(1, 1), s=(1, 1), p=(0, 0, 0, 0), g=1, c=16, m=70),     # 1x1 as GEMM
    dict(k=(1, 1), s=(2, 2), p=(0, 0, 0, 0), g=1, c=8, m=32),      # strided 1x1
    dict(k=(3, 3), s=(2, 2), p=(1, 1, 1, 1), g=24, c=24, m=24),    # depthwise
    dict(k=(7, 7), s=(2, 2), p=(3, 3, 3, 3), g=1, c=3, m=16),      # ResNet stem
])
def test_conv_epilogue_is_bit_exact(isa_name, geom):
    rng = np.random.default_rng(4)
    x, wt, spec, bias = _case(rng, 2, 10, 9, geom["c"], geom["m"], geom["k"], geom["s"], geom["p"], (1, 1),
                              geom["g"], "uint8", 5)
    oh, ow = spec.out_hw(10, 9)
    m = geom["m"]
    epi = Epilogue(out_dtype="uint8", scale=(rng.random(m) * 1e-3).astype(np.float32),
                   bias=rng.standard_normal(m).astype(np.float32),
                   residual=rng.integers(0, 256, (2, oh, ow, m)).astype(np.uint8), residual_scale=0.05,
                   residual_zero_point=3, activation="relu", out_scale=0.02, out_zero_point=1)
    packed = pack_conv_weights(wt, spec, x_zero_point=5, bias_s32=bias)
    with config.override(isa=isa_name):
        got = conv_u8s8(x, packed, epi)
        epi_f = Epilogue(out_dtype="float32", scale=0.01, activation="clip", clip_min=-3.0, clip_max=3.0)
        got_f = conv_u8s8(x, packed, epi_f)
    assert np.array_equal(got, _ref(x, wt, spec, 5, bias, epi))
    assert np.array_equal(got_f, _ref(x, wt, spec, 5, bias, epi_f))


def test_conv_paths_are_chosen_by_geometry():
    w = np.zeros((8, 8, 1, 1), np.int8)
    assert pack_conv_weights(w, ConvSpec((1, 1))).path == "gemm1x1"
    assert pack_conv_weights(w, ConvSpec((1, 1), (2, 2))).path == "im2col"
    assert pack_conv_weights(np.zeros((8, 1, 3, 3), np.int8), ConvSpec((3, 3), group=8)).path == "depthwise"


def test_conv_threads_give_identical_results():
    rng = np.random.default_rng(5)
    x, wt, spec, bias = _case(rng, 2, 14, 14, 32, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "uint8", 0)
    packed = pack_conv_weights(wt, spec, bias_s32=bias)
    with config.override(threads=1):
        one = conv_u8s8(x, packed)
    with config.override(threads=2):
        two = conv_u8s8(x, packed)
    assert np.array_equal(one, two)


def test_conv_refuses_bad_arguments():
    packed = pack_conv_weights(np.zeros((4, 3, 3, 3), np.int8), ConvSpec((3, 3)))
    with pytest.raises(KernelError, match="not pre-packed"):
        conv_u8s8(np.zeros((1, 5, 5, 3), np.uint8), np.zeros((4, 3, 3, 3), np.int8), node="conv_7")
    with pytest.raises(KernelError, match=r"expected \(N>=1, H, W, C=3\) NHWC"):
        conv_u8s8(np.zeros((1, 3, 5, 5), np.uint8), packed)  # NCHW by mistake
    with pytest.raises(KernelError, match="expected 4-D NHWC uint8"):
        conv_u8s8(np.zeros((1, 5, 5, 3), np.float32), packed)
    with pytest.raises(KernelError, match="too small"):
        conv_u8s8(np.zeros((1, 2, 2, 3), np.uint8), packed)
    with pytest.raises(KernelError, match="expected 4-D int8"):
        pack_conv_weights(np.zeros((4, 3, 3), np.int8), ConvSpec((3, 3)))
    with pytest.raises(KernelError, match="divisible by group"):
        pack_conv_weights(np.zeros((5, 1, 3, 3), np.int8), ConvSpec((3, 3), group=2))


@pytest.mark.parametrize("mo", [96, 60])  # 32 channels per group (full panel) and 20 (N tail)
def test_grouped_conv_with_full_epilogue(mo):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (2, 9, 8, 12)).astype(np.uint8)
    wt = rng.integers(-128, 128, (mo, 4, 3, 3)).astype(np.int8)
    spec = ConvSpec((3, 3), (1, 2), (1, 0, 1, 2), (1, 1), 3)
    oh, ow = spec.out_hw(9, 8)
    epi = Epilogue(out_dtype="int8", scale=(rng.random(mo) * 1e-3).astype(np.float32),
                   bias=rng.standard_normal(mo).astype(np.float32),
                   residual=rng.integers(-128, 128, (2, oh, ow, mo)).astype(np.int8), residual_scale=0.05,
                   activation="clip", clip_min=-2.0, clip_max=2.0, out_scale=0.03, out_zero_point=-3)
    bias = rng.integers(-100, 100, mo).astype(np.int32)
    packed = pack_conv_weights(wt, spec, x_zero_point=4, bias_s32=bias)
    with config.override(isa=BEST):
        got = conv_u8s8(x, packed, epi)
    assert np.array_equal(got, _ref(x, wt, spec, 4, bias, epi))
