"""Int8 GEMM: bit-exact against the numpy int32 reference on every ISA rung, with tails, zero points, epilogues."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.kernels import Epilogue, cache_info, gemm_u8s8s32, pack_weights, unpack_weights
from quantgraph.kernels.reference import gemm_reference
from tests.kernels.conftest import BEST, ISAS, requires

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


def _operands(rng, m, k, n, a_dtype="uint8"):
    lo, hi = (0, 256) if a_dtype == "uint8" else (-128, 128)
    a = rng.integers(lo, hi, (m, k)).astype(a_dtype)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    return a, w


def _full_epilogue(rng, m, n, out_dtype, residual_dtype, activation):
    res = None
    if residual_dtype == "float32":
        res = rng.standard_normal((m, n)).astype(np.float32)
    elif residual_dtype is not None:
        res = rng.integers(-128, 128, (m, n)).astype(residual_dtype) if residual_dtype == "int8" else \
            rng.integers(0, 256, (m, n)).astype(residual_dtype)
    return Epilogue(out_dtype=out_dtype, scale=(rng.random(n) * 2e-3 + 1e-4).astype(np.float32),
                    bias=rng.standard_normal(n).astype(np.float32), residual=res,
                    residual_scale=0.05 if residual_dtype != "float32" else 1.0,
                    residual_zero_point=7 if residual_dtype == "uint8" else 0, activation=activation,
                    clip_min=-1.5, clip_max=2.5, out_scale=0.03, out_zero_point=-5 if out_dtype == "int8" else 9)


@pytest.mark.parametrize("layout,kg", [("k4n32", 10), ("amx", 16)])
def test_pack_unpack_roundtrip(layout, kg):
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (37, 70)).astype(np.int8)
    p = pack_weights(w, layout=layout)
    assert p.layout == layout and p.kg == kg and p.n_panels == 3
    assert p.data.ctypes.data % 64 == 0
    assert np.array_equal(unpack_weights(p), w)
    assert np.array_equal(p.col_sum, w.astype(np.int32).sum(0))
    other = p.as_layout("amx" if layout == "k4n32" else "k4n32")
    assert np.array_equal(unpack_weights(other), w) and p.as_layout(other.layout) is other
    assert np.array_equal(other.bias_s32, p.bias_s32)


def test_amx_layout_tiles_are_contiguous():
    """An AMX B tile (16 K-groups x 16 columns x 4 bytes) is one contiguous KiB: byte (g, j, t) of the first tile
    of panel 0, K-step 0 is W[4g + t, j]; the second tile holds columns 16..31."""
    w = np.random.default_rng(1).integers(-128, 128, (64, 32)).astype(np.int8)
    d = pack_weights(w, layout="amx").data.reshape(2, 16, 16, 4)
    assert np.array_equal(d[0], w[:, :16].reshape(16, 4, 16).transpose(0, 2, 1))
    assert np.array_equal(d[1], w[:, 16:].reshape(16, 4, 16).transpose(0, 2, 1))


def test_pack_refuses_wrong_layout():
    with pytest.raises(KernelError, match="layout 'amx' does not hold int16"):
        pack_weights(np.zeros((4, 4), np.int16), a_dtype="int16", layout="amx")
    with pytest.raises(KernelError, match="layout 'nope'"):
        pack_weights(np.zeros((4, 4), np.int8), layout="nope")


@SETTINGS
@given(m=st.integers(1, 40), k=st.integers(1, 80), n=st.integers(1, 80), zp=st.integers(0, 255),
       signed=st.booleans(), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_gemm_matches_reference_on_every_isa(m, k, n, zp, signed, with_bias, seed):
    rng = np.random.default_rng(seed)
    a_dtype = "int8" if signed else "uint8"
    zp = zp - 128 if signed else zp
    a, w = _operands(rng, m, k, n, a_dtype)
    bias = rng.integers(-2**20, 2**20, n).astype(np.int32) if with_bias else None
    p = pack_weights(w, a_dtype=a_dtype, a_zero_point=zp, bias_s32=bias)
    want = gemm_reference(a, w, a_zero_point=zp, bias_s32=bias)
    for isa in ISAS:
        with config.override(isa=isa):
            got = gemm_u8s8s32(a, p)
        assert got.dtype == np.int32
        assert np.array_equal(got, want), f"isa {isa}, shape {(m, k, n)}"


@pytest.mark.parametrize("m,k,n", [(1, 4, 1), (1, 3, 33), (8, 4096 + 3, 32), (17, 64, 96), (64, 260, 100)])
def test_gemm_extreme_values_do_not_saturate(isa, m, k, n):
    """255 * 127 pairs overflow s16: the vpmaddubsw rungs must still be exact."""
    a = np.full((m, k), 255, np.uint8)
    w = np.where(np.arange(k * n).reshape(k, n) % 3 == 0, -128, 127).astype(np.int8)
    got = gemm_u8s8s32(a, pack_weights(w))
    assert np.array_equal(got, gemm_reference(a, w))


@pytest.mark.parametrize("isa_name", sorted({BEST, "portable"}))
@pytest.mark.parametrize("out_dtype,residual_dtype,activation", [
    ("float32", None, "none"),
    ("uint8", "uint8", "relu"),
    ("int8", "float32", "clip"),
    ("uint8", None, "relu"),
    ("float32", "int8", "clip"),
])
def test_gemm_epilogue_is_bit_exact(isa_name, out_dtype, residual_dtype, activation):
    rng = np.random.default_rng(1)
    m, k, n = 29, 75, 70
    a, w = _operands(rng, m, k, n)
    epi = _full_epilogue(rng, m, n, out_dtype, residual_dtype, activation)
    p = pack_weights(w, a_zero_point=11)
    with config.override(isa=isa_name):
        got = gemm_u8s8s32(a, p, epi)
    want = gemm_reference(a, w, a_zero_point=11, epilogue=epi)
    assert got.dtype == want.dtype == np.dtype(out_dtype)
    assert np.array_equal(got, want)


def test_gemm_per_tensor_scale_and_preallocated_out():
    rng = np.random.default_rng(2)
    a, w = _operands(rng, 9, 20, 40)
    epi = Epilogue(out_dtype="int8", scale=0.01, out_scale=0.2, out_zero_point=3)
    out = np.full((9, 40), 99, np.int8)
    res = gemm_u8s8s32(a, pack_weights(w), epi, out=out)
    assert res is out
    assert np.array_equal(out, gemm_reference(a, w, epilogue=epi))


def test_gemm_threads_give_identical_results():
    rng = np.random.default_rng(3)
    a, w = _operands(rng, 100, 300, 200)
    epi = _full_epilogue(rng, 100, 200, "uint8", "uint8", "relu")
    p = pack_weights(w, a_zero_point=5)
    with config.override(threads=1):
        one = gemm_u8s8s32(a, p, epi)
    with config.override(threads=2):
        two = gemm_u8s8s32(a, p, epi)
    assert np.array_equal(one, two)


def _no_jit_lookup(fn):
    before = cache_info()
    with pytest.raises(KernelError) as err:
        fn()
    after = cache_info()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"]), "JIT code was reached"
    return str(err.value)


def test_gemm_refuses_unpacked_weights():
    a = np.zeros((4, 8), np.uint8)
    msg = _no_jit_lookup(lambda: gemm_u8s8s32(a, np.zeros((8, 4), np.int8), node="fc_1"))
    assert "node 'fc_1' (QGemm)" in msg and "not pre-packed" in msg and ("k4n32" in msg or "'amx'" in msg)


def test_gemm_refuses_bad_arguments():
    p = pack_weights(np.zeros((8, 4), np.int8))
    assert "float32" in _no_jit_lookup(lambda: gemm_u8s8s32(np.zeros((4, 8), np.float32), p))
    assert "packed for uint8" in _no_jit_lookup(lambda: gemm_u8s8s32(np.zeros((4, 8), np.int8), p))
    assert "expected (M>=1, K=8)" in _no_jit_lookup(lambda: gemm_u8s8s32(np.zeros((4, 9), np.uint8), p))
    assert "expected (M>=1, K=8)" in _no_jit_lookup(lambda: gemm_u8s8s32(np.zeros((0, 8), np.uint8), p))
    assert "expected int32(4, 4)" in _no_jit_lookup(
        lambda: gemm_u8s8s32(np.zeros((4, 8), np.uint8), p, out=np.zeros((4, 4), np.float32)))
    assert "residual has shape" in _no_jit_lookup(lambda: gemm_u8s8s32(
        np.zeros((4, 8), np.uint8), p, Epilogue(out_dtype="float32", residual=np.zeros((4, 5), np.uint8))))
    assert "out_dtype 'int32' cannot" in _no_jit_lookup(
        lambda: gemm_u8s8s32(np.zeros((4, 8), np.uint8), p, Epilogue(activation="relu")))
    with config.override(isa="sse9"):
        assert "unknown ISA" in _no_jit_lookup(lambda: gemm_u8s8s32(np.zeros((4, 8), np.uint8), p))


def test_pack_weights_refuses_bad_input():
    with pytest.raises(KernelError, match="2-D int8 or int16"):
        pack_weights(np.zeros((4, 4), np.uint8))
    with pytest.raises(KernelError, match="cannot multiply"):
        pack_weights(np.zeros((4, 4), np.int8), a_dtype="int16")


@requires("amx")
@pytest.mark.parametrize("m,k,n", [(32, 64, 32), (80, 128, 70), (49, 576, 64), (100, 192, 100), (64, 100, 64),
                                   (16, 64, 32), (1, 4096, 40), (33, 1100, 600), (130, 2112, 96), (17, 5, 3),
                                   (64, 4096, 600), (16, 192, 96), (16, 128, 128), (48, 320, 160), (8, 1152, 224)])
def test_amx_blocks_match_reference(m, k, n):
    """AMX strips: 32- and 16-row blocks (fused epilogue, pipelined behind the next panel's K loop), ragged row
    blocks (1..31 rows), the N-tail panel, K padded to 64, K-steps in pairs with an odd last step (16-row strips),
    K split into chunks (partial sums reloaded from the buffer) and panel blocks (pblk < panels)."""
    rng = np.random.default_rng(m + k + n)
    a, w = _operands(rng, m, k, n)
    epi = _full_epilogue(rng, m, n, "uint8", "uint8", "relu")
    p = pack_weights(w, a_zero_point=3, layout="k4n32")  # converted to the amx layout on first use
    with config.override(isa="amx"):
        assert np.array_equal(gemm_u8s8s32(a, p), gemm_reference(a, w, a_zero_point=3))
        assert np.array_equal(gemm_u8s8s32(a, p, epi), gemm_reference(a, w, a_zero_point=3, epilogue=epi))


@requires("amx")
@pytest.mark.parametrize("m", [1, 16, 40])
def test_amx_copies_shifted_misaligned_and_strided_a(m):
    """The AMX kernel prepares A per task (s8 shift, K padding, 64-byte aligned rows): s8 activations, A starting
    off a cache line, and a non-contiguous view all match the reference."""
    rng = np.random.default_rng(m)
    k, n = 200, 96
    a_s8, w = _operands(rng, m, k, n, "int8")
    big = rng.integers(0, 256, (m, 2 * k)).astype(np.uint8)
    with config.override(isa="amx"):
        p8 = pack_weights(w, a_dtype="int8", a_zero_point=-4)
        assert np.array_equal(gemm_u8s8s32(a_s8, p8), gemm_reference(a_s8, w, a_zero_point=-4))
        p = pack_weights(w[:k - 8], a_zero_point=5)  # K = 192: no padding, so misaligned A could be read in place
        raw = np.empty(m * (k - 8) + 64, np.uint8)
        off = 1 if raw.ctypes.data % 64 != 63 else 2
        shifted = raw[off:off + m * (k - 8)].reshape(m, k - 8)  # C-contiguous, rows off cache-line boundaries
        shifted[...] = big[:, :k - 8]
        view = big[:, :2 * (k - 8) - 1:2] if m == 1 else big[:, 1:k - 7]  # not C-contiguous
        assert not view.flags.c_contiguous and shifted.ctypes.data % 64
        for a in (view, shifted):
            assert np.array_equal(gemm_u8s8s32(a, p), gemm_reference(a, w[:k - 8], a_zero_point=5))


def test_bound_layer_rechecks_a_and_out():
    """run_gemm binds a layer once per epilogue; later calls with another A shape, dtype, weights or out are checked
    (and rebound) rather than trusted."""
    rng = np.random.default_rng(7)
    a, w = _operands(rng, 6, 40, 50)
    w2 = rng.integers(-128, 128, (40, 50)).astype(np.int8)
    epi = _full_epilogue(rng, 6, 50, "float32", None, "none")
    p, p2 = pack_weights(w), pack_weights(w2)
    assert np.array_equal(gemm_u8s8s32(a, p, epi), gemm_reference(a, w, epilogue=epi))
    assert np.array_equal(gemm_u8s8s32(a, p2, epi), gemm_reference(a, w2, epilogue=epi))
    with pytest.raises(KernelError, match="expected float32"):
        gemm_u8s8s32(a, p, epi, out=np.zeros((6, 50), np.uint8))
    with pytest.raises(KernelError, match=r"expected \(M>=1, K=40\)"):
        gemm_u8s8s32(a[:, :39], p, epi)
    with pytest.raises(KernelError, match="A is int8"):
        gemm_u8s8s32(a.view(np.int8), p, epi)
    epi3 = _full_epilogue(rng, 3, 50, "float32", None, "none")
    assert np.array_equal(gemm_u8s8s32(a[:3], p, epi3), gemm_reference(a[:3], w, epilogue=epi3))
