"""Packed fp32 GEMM (AVX-512 and AVX2 kernels from one generator) vs float64 numpy: odd shapes, every epilogue,
thread-count and ISA independence of the bits, the fused-im2col conv driver, rung selection and argument checks.

Each kernel test runs once per ISA under ``config.override(isa=<the lowest rung of that vector width>)``, so the AVX2
kernel is tested on AVX-512 hosts too; a kernel the host cannot run is skipped (the AVX-512 one needs avx512f)."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.ir.ops.activation import ACTIVATIONS
from quantgraph.kernels import target
from quantgraph.kernels.fp32 import gemm_f32_packed as G
from quantgraph.kernels.fp32.eltwise_f32 import ACT_CODES, epilogue

rng = np.random.default_rng(0)
PARAMS = {"leaky_relu": (0.1, 0.0), "clip": (-0.5, 0.7), "hardsigmoid": (0.2, 0.5)}


def _r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _rung(isa: G.FmaIsa) -> str | None:
    """The lowest ISA rung this host runs whose vector width selects ``isa`` (avx2 -> "avx2", avx512 -> "avx512bw")."""
    return next((r for r in reversed(target.available_isas()) if target.ISAS[r].lanes == isa.lanes), None)


@pytest.fixture(params=list(G.FMA_ISAS))
def fma(request):
    """Every packed-GEMM ISA the host can run, with its rung forced (so ``pack_b(b)`` picks it)."""
    isa = G.FMA_ISAS[request.param]
    rung = _rung(isa)
    if rung is None or not all(target.has(f) for f in isa.requires):
        pytest.skip(f"host CPU lacks {list(isa.requires)}")
    with config.override(isa=rung):
        assert G.select() is isa
        yield isa


@pytest.fixture
def threads():
    """Run a callable under 1 and 2 numba threads, restoring the count afterwards."""
    saved = numba.get_num_threads()

    def run(fn):
        outs = []
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            outs.append(fn())
        return outs

    yield run
    numba.set_num_threads(saved)


def _assert_close(got: np.ndarray, a: np.ndarray, b: np.ndarray, extra: np.ndarray | None = None) -> None:
    """|got - A@B| <= 1e-5 * K-scaled magnitude, against a float64 reference."""
    want = a.astype(np.float64) @ b.astype(np.float64)
    if extra is not None:
        want = want + extra
    k = max(1, a.shape[1])
    mag = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64) + 1.0
    assert np.all(np.abs(got - want) <= 1e-5 * np.sqrt(k) * mag), float(np.max(np.abs(got - want) / mag))


# M = 1, M/N/K off the tile multiples (MR 6, NR 16/64, unroll 4, KC 128/256), K = 0, N = 0, M = 0
SHAPES = [(0, 5, 7), (4, 0, 20), (1, 1, 1), (1, 3, 17), (7, 1, 16), (7, 5, 64), (33, 129, 65), (13, 300, 100),
          (61, 257, 31), (100, 513, 130), (5, 1000, 200), (1, 515, 24), (11, 6, 47)]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_odd_shapes_match_float64(fma, m, k, n) -> None:
    a, b = _r(m, k), _r(k, n)
    p = G.pack_b(b)
    assert p.isa == fma.name and p.nr == fma.nr
    _assert_close(G.gemm(a, p), a, b)


def test_strided_a_and_out_slices(fma) -> None:
    """A with a row stride larger than K (im2col / column slice) and out a column slice of a wider buffer."""
    big, b = _r(37, 90), _r(70, 45)
    out = np.full((37, 100), 7.0, np.float32)
    a = big[:, 10:80]
    G.gemm(a, G.pack_b(b), out[:, 20:65])
    _assert_close(out[:, 20:65], a, b)
    assert np.all(out[:, :20] == 7.0) and np.all(out[:, 65:] == 7.0)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_fused_bias_residual_activation_matches_float64(fma, act) -> None:
    """Every activation (in-register: none/relu/clip; post-pass: the rest) after bias and residual, against the
    activation's reference applied to the float64 product."""
    a, b, bias, z = _r(29, 140), _r(140, 70), _r(70), _r(29, 70)
    alpha, beta = PARAMS.get(act, (0.0, 0.0))
    got = G.gemm(a, G.pack_b(b), bias=bias, z=z, act=ACT_CODES[act], alpha=alpha, beta=beta)
    pre = a.astype(np.float64) @ b.astype(np.float64) + bias + z
    want = ACTIVATIONS[act].reference(pre.astype(np.float32), alpha, beta)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64) + 1.0
    assert np.all(np.abs(got - want) <= 1e-5 * np.sqrt(140) * scale + 1e-5), float(np.max(np.abs(got - want)))


@pytest.mark.parametrize("act", ["none", "relu", "clip", "sigmoid", "gelu"])
@pytest.mark.parametrize("has_bias,has_z", [(True, False), (False, True), (True, True), (False, False)])
@pytest.mark.parametrize("m,k,n", [(29, 64, 128), (13, 300, 70), (7, 129, 192), (61, 31, 257), (1, 9, 40)])
def test_in_kernel_epilogue_is_bit_identical_to_post_pass(fma, threads, m, k, n, has_bias, has_z, act) -> None:
    """bias / residual / ReLU / clip applied to the registers on the last K block (full panels) or in the post-pass
    (N-tail panel, other activations) give exactly (pre + bias) + z, then the activation, in float32; and the same
    bits for one and two threads."""
    a, b = _r(m, k), _r(k, n)
    bias = _r(n) if has_bias else None
    z = _r(m, n) if has_z else None
    alpha, beta = PARAMS.get(act, (0.0, 0.0))
    p = G.pack_b(b)
    want = G.gemm(a, p)
    if has_bias:
        want = want + bias
    if has_z:
        want = want + z
    epilogue(want, None, 0, None, ACT_CODES[act], alpha, beta)
    for got in threads(lambda: G.gemm(a, p, bias=bias, z=z, act=ACT_CODES[act], alpha=alpha, beta=beta)):
        assert np.array_equal(got, want), float(np.max(np.abs(got - want)))


# (40, 2000, 70): rows x K over PANEL_MAJOR_A, so the regular packing runs K-block-major there and panel-major below
THIN_SHAPES = [(1, 1, 1), (1, 37, 300), (3, 1, 9), (5, 33, 17), (12, 200, 96), (12, 129, 100), (13, 100, 40),
               (20, 64, 48), (30, 20, 100), (40, 2000, 70)]


@pytest.mark.parametrize("act", ["none", "relu", "clip", "sigmoid"])
@pytest.mark.parametrize("m,k,n", THIN_SHAPES)
def test_thin_gemm_gives_the_bits_of_the_regular_one(fma, threads, m, k, n, act) -> None:
    """B packed thin (narrow panels, whole-K tiles, the recurrent GEMMs of small batches): for any rows (past the
    12-row tile, the 8/4/2/1 tails, the N-tail panel) and every epilogue, the very bits of the regular packing, for
    one and two threads; and close to float64."""
    if not fma.thin_nr:
        with pytest.raises(KernelError, match="no thin GEMM"):
            G.pack_b(_r(k, n), thin=True)
        assert not G.thin_for(m)
        return
    a, b, bias, z = _r(m, k), _r(k, n), _r(n), _r(m, n)
    alpha, beta = PARAMS.get(act, (0.0, 0.0))
    thin = G.pack_b(b, thin=True)
    assert thin.thin and thin.nr == fma.thin_nr and thin.data.size == thin.panels * k * fma.thin_nr
    assert not G.thin_for(None) and not G.thin_for(0)
    np.testing.assert_array_equal(G.unpack_b(thin), b)
    want = G.gemm(a, G.pack_b(b), bias=bias, z=z, act=ACT_CODES[act], alpha=alpha, beta=beta)
    for got in threads(lambda: G.gemm(a, thin, bias=bias, z=z, act=ACT_CODES[act], alpha=alpha, beta=beta)):
        assert np.array_equal(got, want), float(np.max(np.abs(got - want)))
    _assert_close(G.gemm(a, thin), a, b)


def test_thin_gemm_reads_strided_a_out_and_residual(fma) -> None:
    """Row strides of A, out and z that differ from K and N (the GRU's z = xw[:, :2h] of a wider buffer)."""
    if not fma.thin_nr:
        pytest.skip(f"{fma.name} has no thin GEMM")
    m, k, n = 11, 70, 40
    abig, zbig, obig = _r(m, k + 9), _r(m, n + 24), np.full((m, n + 5), 7.0, np.float32)
    a, z, out = abig[:, 3:3 + k], zbig[:, :n], obig[:, 2:2 + n]
    b, bias = _r(k, n), _r(n)
    want = G.gemm(np.ascontiguousarray(a), G.pack_b(b), bias=bias, z=np.ascontiguousarray(z))
    G.gemm(a, G.pack_b(b, thin=True), out=out, bias=bias, z=z)
    assert np.array_equal(out, want)
    assert np.all(obig[:, :2] == 7.0) and np.all(obig[:, 2 + n:] == 7.0)  # nothing written beside the slice


def test_prefetch_tiles_prefetch_each_b_line_ahead() -> None:
    """A ``prefetch`` tile issues one ``llvm.prefetch`` per 64-byte line of the B row (that many bytes ahead) per k
    step; the plain tile none; both under their own function names."""
    from llvmlite import ir

    from quantgraph.kernels.intrinsics.fma_f32 import UNROLL, build_tile_function, tile_kernel

    mod = ir.Module()
    plain, pf = build_tile_function(mod, "avx512", 12, 16), build_tile_function(mod, "avx512", 12, 16, 4096)
    assert plain.name != pf.name
    calls = [str(i) for blk in pf.blocks for i in blk.instructions if "llvm.prefetch" in str(i)]
    assert len(calls) == UNROLL + 1  # 16 floats = one line per k: the unrolled main loop and the remainder loop
    assert all("i32 0, i32 3, i32 1" in c for c in calls)
    geps = [str(i) for blk in pf.blocks for i in blk.instructions if str(i).lstrip().split("=")[-1].strip()
            .startswith("getelementptr")]
    assert sum("i64 1024" in g for g in geps) == len(calls)  # 4096 bytes = 1024 floats past the row
    assert not any("llvm.prefetch" in str(i) for blk in plain.blocks for i in blk.instructions)
    with pytest.raises(ValueError, match="prefetch"):
        tile_kernel("avx512", 12, 16, -1)


def test_thin_packing_is_refused_by_the_conv_driver(fma) -> None:
    if not fma.thin_nr:
        pytest.skip(f"{fma.name} has no thin GEMM")
    x, packed = _r(1, 5, 5, 8), G.pack_b(_r(72, 16), thin=True)
    with pytest.raises(KernelError, match="packed thin"):
        G.bind_conv(x, packed, np.zeros((9, 16), np.float32), None, None, 0, 0.0, 0.0, 3, 3, 3, 3,
                    (1, 1, 1, 1, 0, 0))


def test_results_identical_for_one_and_two_threads(fma, threads) -> None:
    a, b = _r(203, 700), _r(700, 190)
    p = G.pack_b(b)
    one, two = threads(lambda: G.gemm(a, p))
    assert np.array_equal(one, two)


@pytest.mark.skipif(not all(target.has(f) for isa in G.FMA_ISAS.values() for f in isa.requires),
                    reason="host CPU cannot run every packed-GEMM ISA")
@pytest.mark.parametrize("m,k,n", [(203, 700, 190), (1, 37, 300), (50, 1000, 17)])
def test_every_isa_gives_the_same_bits(m, k, n) -> None:
    """One FMA per product in k order on every ISA: the AVX2 and AVX-512 kernels agree exactly (also fused)."""
    a, b, bias, z = _r(m, k), _r(k, n), _r(n), _r(m, n)
    outs = [G.gemm(a, G.pack_b(b, isa), bias=bias, z=z, act=ACT_CODES["relu"]) for isa in G.FMA_ISAS]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_each_isa_has_its_own_intrinsics_functions_and_cache_file() -> None:
    """``llvm.fma.v16f32`` / ``v8f32`` and per-ISA function names in the IR; one generated driver file per ISA, so
    the Numba caches of the ISAs never collide (compiling nothing: the modules are only imported)."""
    from llvmlite import ir

    from quantgraph.kernels.intrinsics.fma_f32 import build_tile_function

    for isa, lanes, other in (("avx512", 16, 8), ("avx2", 8, 16)):
        module = ir.Module()
        fn = build_tile_function(module, isa, 6, 2 * lanes)
        text = str(module)
        assert fn.name == f"quantgraph.tile.f32.{isa}.6x{2 * lanes}.epi"
        assert f"llvm.fma.v{lanes}f32" in text and f"v{other}f32" not in text
    files = {isa: G.drivers(isa).__file__ for isa in G.FMA_ISAS}
    assert len(set(files.values())) == len(files), files
    assert all(f"ISA = {isa!r}" in open(path).read() for isa, path in files.items())


def test_pack_roundtrip(fma) -> None:
    b = _r(9, 70)
    p = G.pack_b(b)
    assert p.data.shape == (p.panels * 9 * fma.nr,) and np.array_equal(G.unpack_b(p), b)


BAD = {
    "float64 A": lambda p: (np.zeros((4, 96)), p, np.zeros((4, 80), np.float32)),
    "unpacked B": lambda p: (_r(4, 96), _r(96, 80), np.zeros((4, 80), np.float32)),
    "K mismatch": lambda p: (_r(4, 95), p, np.zeros((4, 80), np.float32)),
    "out shape": lambda p: (_r(4, 96), p, np.zeros((4, 81), np.float32)),
    "1-D A": lambda p: (_r(96), p, np.zeros((1, 80), np.float32)),
    "strided columns": lambda p: (_r(4, 192)[:, ::2], p, np.zeros((4, 80), np.float32)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_raise_kernel_error_before_jit(fma, case, monkeypatch) -> None:
    def boom(*args):
        raise AssertionError("JIT code was loaded")

    monkeypatch.setattr(G, "drivers", boom)
    a, p, out = BAD[case](G.pack_b(_r(96, 80)))
    with pytest.raises(KernelError, match="gemm_f32_packed" if case == "unpacked B" else fma.kernel):
        G.bind(a, p, out, node="fc", op="MatMul")


def test_bad_bias_and_residual_raise(fma) -> None:
    p = G.pack_b(_r(96, 80))
    a, out = _r(4, 96), np.zeros((4, 80), np.float32)
    with pytest.raises(KernelError, match="bias"):
        G.bind(a, p, out, bias=_r(79))
    with pytest.raises(KernelError, match="Z is"):
        G.bind(a, p, out, z=_r(4, 79))


# -- rung selection -----------------------------------------------------------------------------------------------
ZEN3 = frozenset({"sse4.2", "avx", "avx2", "fma", "f16c", "bmi2"})  # AVX2 + FMA, no AVX-512, no VNNI


@pytest.mark.parametrize("rung", list(target.ISAS))
def test_forced_rung_selects_the_kernel_of_its_vector_width(rung) -> None:
    if not target.has(rung):
        pytest.skip(f"host CPU cannot run rung {rung}")
    want = {16: "avx512", 8: "avx2", 0: None}[target.ISAS[rung].lanes]
    with config.override(isa=rung):
        got = G.select()
        assert (got and got.name) == want
        for name in G.FMA_ISAS:
            assert (G.refusal(name) is None) == (name == want), G.refusal(name)


def test_zen3_host_runs_avx2_and_refuses_avx512_rungs(monkeypatch) -> None:
    monkeypatch.setattr(target, "host_features", lambda: ZEN3)
    with config.override(isa=None):
        assert G.select() is G.FMA_ISAS["avx2"]
    with config.override(isa="avx2"):
        assert G.select() is G.FMA_ISAS["avx2"]
        assert "runs gemm_f32_avx2" in G.refusal("avx512")
    for rung in ("avx512vnni", "avx512bw", "amx"):
        with config.override(isa=rung), pytest.raises(KernelError, match=f"forced ISA '{rung}' needs CPU features"):
            G.select()
    with pytest.raises(KernelError, match=r"gemm_f32_avx512' needs CPU features \['avx512f'\]"):
        G.bind(_r(4, 96), G.pack_b(_r(96, 80), "avx512"), np.zeros((4, 80), np.float32))


def test_avx2_rung_without_fma_has_no_packed_kernel(monkeypatch) -> None:
    monkeypatch.setattr(target, "host_features", lambda: ZEN3 - {"fma"})
    with config.override(isa="avx2"):
        assert G.select() is None
        assert "lacks ['fma']" in G.refusal("avx2")
        with pytest.raises(KernelError, match="lacks"):
            G.pack_b(_r(3, 4))


# -- im2col fused into the GEMM tasks (bind_conv) -----------------------------------------------------------------
CONV_CASES = [  # (N, H, W, C, M, kh, kw, stride, dilation, pads (t, l, b, r))
    (1, 9, 9, 16, 64, 3, 3, 1, 1, (1, 1, 1, 1)),
    (2, 11, 8, 24, 70, 3, 3, 2, 1, (1, 1, 1, 1)),      # batch, stride, N tail
    (1, 12, 12, 40, 130, 3, 3, 1, 2, (2, 2, 2, 2)),    # dilation, K tail (360 = 2*128 + 104 = 256 + 104)
    (3, 7, 7, 33, 64, 1, 1, 2, 1, (0, 0, 0, 0)),       # 1x1 stride 2, odd channels
    (1, 10, 10, 20, 64, 5, 3, 1, 1, (2, 0, 1, 1)),     # asymmetric kernel/padding
    (1, 15, 15, 3, 64, 7, 7, 2, 1, (3, 3, 3, 3)),      # 3 channels: short runs
    (1, 6, 6, 8, 24, 3, 3, 1, 1, (1, 1, 1, 1)),        # 8 channels: one ymm run per tap
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


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_fused_im2col_matches_float64(fma, case, contiguous) -> None:
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
    assert fn is G.drivers(fma)._conv_driver
    fn(*args)
    ref = np.maximum(want.reshape(-1, m) + bias + z, 0.0)
    k = kh * kw * c
    assert np.all(np.abs(out - ref) <= 1e-5 * np.sqrt(k) * (np.abs(ref) + k)), float(np.max(np.abs(out - ref)))


def test_conv_fused_im2col_identical_for_one_and_two_threads_and_to_separate_im2col(fma, threads) -> None:
    from quantgraph.kernels.fp32 import conv_f32

    n, h, c, m = 2, 14, 32, 96
    x, w = _r(n, h, h, c), _r(m, c, 3, 3)
    g = conv_f32.ConvGeom(c, m, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1)
    wp = conv_f32.pack_conv(w, g, "NHWC")
    gp = G.pack_b(wp[0])
    fused = np.empty((n * h * h, m), np.float32)
    fn, args = G.bind_conv(x, gp, fused, None, None, 0, 0.0, 0.0, h, h, 3, 3, (1, 1, 1, 1, 1, 1))

    def run():
        fn(*args)
        return fused.copy()

    one, two = threads(run)
    assert np.array_equal(one, two)
    sep = np.empty_like(fused)
    cols = np.empty((h * h, 9 * c), np.float32)
    for i in range(n):
        conv_f32.im2col_nhwc(x[i], cols, 0, c, h, h, 3, 3, 1, 1, 1, 1, 1, 1)
        G.gemm(cols, gp, sep[i * h * h:(i + 1) * h * h])
    assert np.array_equal(sep, one)


@pytest.mark.parametrize("isa", list(G.FMA_ISAS))
@pytest.mark.parametrize("m,n", [(1, 64), (49, 512), (196, 256), (784, 128), (3136, 64), (12544, 64)])
def test_blocking_covers_rows_evenly(isa, m, n) -> None:
    mr = G.FMA_ISAS[isa].mr
    mc, pg, nmc = G.blocking(m, n, 256, isa)
    tiles = -(-m // mr)
    bounds = [(ci * tiles // nmc) * mr for ci in range(nmc + 1)]
    sizes = [min(b, m) - min(a, m) for a, b in zip(bounds, bounds[1:])]
    assert sum(sizes) == m and max(sizes) <= mc and max(sizes) - min(sizes) <= mr + 5
    assert nmc == 1 or nmc >= 16 or nmc % 2 == 0 or nmc == tiles
