"""Packed AVX-512 fp32 GEMM vs float64 numpy: odd shapes, thread-count independence, fallback and argument checks."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.kernels.fp32 import gemm_f32_avx512 as G
from quantgraph.kernels.fp32.eltwise_f32 import ACT_CODES
from tests.kernels.conftest import requires
from tests.kernels.fp32.helpers import check, one_node

rng = np.random.default_rng(0)
avx512 = requires("avx512f")


def _r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _assert_close(got: np.ndarray, a: np.ndarray, b: np.ndarray, extra: np.ndarray | None = None) -> None:
    """|got - A@B| <= 1e-5 * K-scaled magnitude, against a float64 reference."""
    want = a.astype(np.float64) @ b.astype(np.float64)
    if extra is not None:
        want = want + extra
    k = max(1, a.shape[1])
    mag = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64) + 1.0
    assert np.all(np.abs(got - want) <= 1e-5 * np.sqrt(k) * mag), float(np.max(np.abs(got - want) / mag))


SHAPES = [(0, 5, 7), (4, 0, 20), (1, 1, 1), (1, 3, 17), (7, 1, 16), (7, 5, 64), (33, 129, 65), (13, 300, 100),
          (61, 257, 31), (100, 513, 130), (5, 1000, 200)]


@avx512
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_odd_shapes_match_float64(m, k, n) -> None:
    a, b = _r(m, k), _r(k, n)
    _assert_close(G.gemm(a, G.pack_b(b)), a, b)


@avx512
def test_strided_a_and_out_slices() -> None:
    """A with a row stride larger than K (im2col / column slice) and out a column slice of a wider buffer."""
    big, b = _r(37, 90), _r(70, 45)
    out = np.full((37, 100), 7.0, np.float32)
    a = big[:, 10:80]
    G.gemm(a, G.pack_b(b), out[:, 20:65])
    _assert_close(out[:, 20:65], a, b)
    assert np.all(out[:, :20] == 7.0) and np.all(out[:, 65:] == 7.0)


@avx512
@pytest.mark.parametrize("act", ["none", "relu", "gelu", "clip"])
def test_fused_bias_residual_activation(act) -> None:
    a, b, bias, z = _r(29, 140), _r(140, 70), _r(70), _r(29, 70)
    alpha, beta = (-0.5, 0.7) if act == "clip" else (0.0, 0.0)
    got = G.gemm(a, G.pack_b(b), bias=bias, z=z, act=ACT_CODES[act], alpha=alpha, beta=beta)
    pre = np.empty_like(got)
    G.gemm(a, G.pack_b(b), pre, bias=bias, z=z)
    _assert_close(pre, a, b, bias.astype(np.float64) + z)
    ref = pre.copy()
    from quantgraph.kernels.fp32.eltwise_f32 import epilogue

    epilogue(ref, None, 0, None, ACT_CODES[act], alpha, beta)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@avx512
@pytest.mark.parametrize("act", ["none", "relu", "clip", "sigmoid"])
@pytest.mark.parametrize("has_bias,has_z", [(True, False), (False, True), (True, True), (False, False)])
@pytest.mark.parametrize("m,k,n", [(29, 64, 128), (13, 300, 70), (7, 129, 192), (61, 31, 257)])
def test_in_kernel_epilogue_is_bit_identical_to_post_pass(m, k, n, has_bias, has_z, act) -> None:
    """bias / residual / ReLU / clip applied to the registers on the last K block (full panels) or in the post-pass
    (N-tail panel, other activations) give exactly (pre + bias) + z, then the activation, in float32; and the same
    bits for one and two threads."""
    a, b = _r(m, k), _r(k, n)
    bias = _r(n) if has_bias else None
    z = _r(m, n) if has_z else None
    alpha, beta = (-0.5, 0.7) if act == "clip" else (0.0, 0.0)
    p = G.pack_b(b)
    want = G.gemm(a, p)
    if has_bias:
        want = want + bias
    if has_z:
        want = want + z
    from quantgraph.kernels.fp32.eltwise_f32 import epilogue

    epilogue(want, None, 0, None, ACT_CODES[act], alpha, beta)
    saved = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            got = G.gemm(a, p, bias=bias, z=z, act=ACT_CODES[act], alpha=alpha, beta=beta)
            assert np.array_equal(got, want), (threads, float(np.max(np.abs(got - want))))
    finally:
        numba.set_num_threads(saved)


@avx512
def test_results_identical_for_one_and_two_threads() -> None:
    a, b = _r(203, 700), _r(700, 190)
    p = G.pack_b(b)
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = G.gemm(a, p)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = G.gemm(a, p)
    finally:
        numba.set_num_threads(saved)
    assert np.array_equal(one, two)


def test_pack_roundtrip() -> None:
    b = _r(9, 70)
    p = G.pack_b(b)
    assert p.data.shape == (p.panels * 9 * G.NR,) and np.array_equal(G.unpack_b(p), b)


@pytest.mark.parametrize("forced", ["portable", "avx2"])
def test_forced_non_avx512_isa_falls_back_to_numpy(forced) -> None:
    g, feeds = one_node("MatMul", [("a", _r(5, 96)), ("const:b", _r(96, 80))])
    with config.override(isa=forced):
        assert not G.available()
        check(g, feeds, "matmul_f32_blas")


@avx512
def test_lowering_picks_packed_kernel_for_large_constant_weights() -> None:
    g, feeds = one_node("MatMul", [("a", _r(3, 5, 96)), ("const:b", _r(96, 80))])
    check(g, feeds, "matmul_f32_avx512")
    g, feeds = one_node("MatMul", [("a", _r(5, 96)), ("b", _r(96, 80))])  # runtime B (attention) stays on numpy
    check(g, feeds, "matmul_f32_blas")


BAD = {
    "float64 A": lambda p: (np.zeros((4, 96)), p, np.zeros((4, 80), np.float32)),
    "unpacked B": lambda p: (_r(4, 96), _r(96, 80), np.zeros((4, 80), np.float32)),
    "K mismatch": lambda p: (_r(4, 95), p, np.zeros((4, 80), np.float32)),
    "out shape": lambda p: (_r(4, 96), p, np.zeros((4, 81), np.float32)),
    "1-D A": lambda p: (_r(96), p, np.zeros((1, 80), np.float32)),
    "strided columns": lambda p: (_r(4, 192)[:, ::2], p, np.zeros((4, 80), np.float32)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_raise_kernel_error_before_jit(case, monkeypatch) -> None:
    def boom(*args):
        raise AssertionError("JIT code ran")

    monkeypatch.setattr(G, "_gemm_driver", boom)
    a, p, out = BAD[case](G.pack_b(_r(96, 80)))
    with pytest.raises(KernelError, match="gemm_f32_avx512"):
        G.bind(a, p, out, node="fc", op="MatMul")


def test_bad_bias_and_residual_raise() -> None:
    p = G.pack_b(_r(96, 80))
    a, out = _r(4, 96), np.zeros((4, 80), np.float32)
    with pytest.raises(KernelError, match="bias"):
        G.bind(a, p, out, bias=_r(79))
    with pytest.raises(KernelError, match="Z is"):
        G.bind(a, p, out, z=_r(4, 79))


# -- im2col fused into the GEMM tasks (bind_conv) -----------------------------------------------------------------
CONV_CASES = [  # (N, H, W, C, M, kh, kw, stride, dilation, pads (t, l, b, r))
    (1, 9, 9, 16, 64, 3, 3, 1, 1, (1, 1, 1, 1)),
    (2, 11, 8, 24, 70, 3, 3, 2, 1, (1, 1, 1, 1)),      # batch, stride, N tail
    (1, 12, 12, 40, 130, 3, 3, 1, 2, (2, 2, 2, 2)),    # dilation, K tail (360 = 2*128 + 104)
    (3, 7, 7, 33, 64, 1, 1, 2, 1, (0, 0, 0, 0)),       # 1x1 stride 2, odd channels
    (1, 10, 10, 20, 64, 5, 3, 1, 1, (2, 0, 1, 1)),     # asymmetric kernel/padding
    (1, 15, 15, 3, 64, 7, 7, 2, 1, (3, 3, 3, 3)),      # 3 channels: short runs
]


def _conv_ref(x, w, s, d, pads):
    """float64 NHWC conv; w (kh, kw, C, M)."""
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    t, l, b, r = pads
    xp = np.zeros((n, h + t + b, wd + l + r, c))
    xp[:, t:t + h, l:l + wd] = x
    oh = (h + t + b - d * (kh - 1) - 1) // s + 1
    ow = (wd + l + r - d * (kw - 1) - 1) // s + 1
    y = np.zeros((n, oh, ow, m))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * d:i * d + s * (oh - 1) + 1:s, j * d:j * d + s * (ow - 1) + 1:s]
            y += patch @ w[i, j].astype(np.float64)
    return y


@avx512
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_fused_im2col_matches_float64(case, contiguous) -> None:
    n, h, wd, c, m, kh, kw, s, d, pads = case
    x, w = _r(n, h, wd, c), _r(kh, kw, c, m)
    if not contiguous:  # a channel slice of a wider tensor: no flat fast path
        wide = _r(n, h, wd, c + 5)
        wide[..., 2:2 + c] = x
        x = wide[..., 2:2 + c]
    want = _conv_ref(x, w, s, d, pads)
    oh, ow = want.shape[1], want.shape[2]
    bias, z = _r(m), _r(n * oh * ow, m)
    out = np.full((n * oh * ow, m), np.nan, np.float32)
    fn, args = G.bind_conv(x, G.pack_b(w.reshape(-1, m)), out, bias, z, ACT_CODES["relu"], 0.0, 0.0, oh, ow, kh, kw,
                           (s, s, d, d, pads[0], pads[1]))
    assert fn is G._conv_driver
    fn(*args)
    ref = np.maximum(want.reshape(-1, m) + bias + z, 0.0)
    k = kh * kw * c
    assert np.all(np.abs(out - ref) <= 1e-5 * np.sqrt(k) * (np.abs(ref) + k)), float(np.max(np.abs(out - ref)))


@avx512
def test_conv_fused_im2col_identical_for_one_and_two_threads_and_to_separate_im2col() -> None:
    from quantgraph.kernels.fp32 import conv_f32

    n, h, c, m = 2, 14, 32, 96
    x, w = _r(n, h, h, c), _r(m, c, 3, 3)
    g = conv_f32.ConvGeom(c, m, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1)
    wp = conv_f32.pack_conv(w, g, "NHWC")
    gp = G.pack_b(wp[0])
    fused = np.empty((n * h * h, m), np.float32)
    fn, args = G.bind_conv(x, gp, fused, None, None, 0, 0.0, 0.0, h, h, 3, 3, (1, 1, 1, 1, 1, 1))
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        fn(*args)
        one = fused.copy()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        fn(*args)
    finally:
        numba.set_num_threads(saved)
    assert np.array_equal(one, fused)
    sep = np.empty_like(fused)
    cols = np.empty((h * h, 9 * c), np.float32)
    for i in range(n):
        conv_f32.im2col_nhwc(x[i], cols, 0, c, h, h, 3, 3, 1, 1, 1, 1, 1, 1)
        G.gemm(cols, gp, sep[i * h * h:(i + 1) * h * h])
    assert np.array_equal(sep, fused)


@pytest.mark.parametrize("m,n", [(1, 64), (49, 512), (196, 256), (784, 128), (3136, 64), (12544, 64)])
def test_blocking_covers_rows_evenly(m, n) -> None:
    mc, pg, nmc = G.blocking(m, n, 256)
    tiles = -(-m // G.MR)
    bounds = [(ci * tiles // nmc) * G.MR for ci in range(nmc + 1)]
    sizes = [min(b, m) - min(a, m) for a, b in zip(bounds, bounds[1:])]
    assert sum(sizes) == m and max(sizes) <= mc and max(sizes) - min(sizes) <= G.MR + 5
    assert nmc == 1 or nmc >= 16 or nmc % 2 == 0 or nmc == tiles
