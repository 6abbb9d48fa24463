"""fp32 lowering under each forced ISA rung: which kernel a conv / matmul / Gemm gets, and a compiled small CNN
(every packed path: fused-im2col conv, 1x1 conv in place, residual, pooling, Gemm) matching the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import quantgraph
from quantgraph import config
from quantgraph.compiler.lower import lower
from quantgraph.ir import interpreter
from quantgraph.ir.graph import Graph
from quantgraph.kernels import target

rng = np.random.default_rng(0)
# rung -> suffix of the conv/matmul/gemm kernel it lowers to ("im2col"/"blas": numpy/OpenBLAS)
RUNGS = {"avx512vnni": ("avx512", "avx512"), "avx2": ("avx2", "avx2"), "portable": ("im2col", "blas")}


def _w(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _forced(rung: str):
    if not target.has(rung):
        pytest.skip(f"host CPU cannot run rung {rung}")
    return config.override(isa=rung)


def _kernels(g: Graph) -> dict[str, str]:
    return {ln.node.op: ln.kernel.name if ln.kernel else "reference" for ln in lower(g)}


@pytest.mark.parametrize("rung", list(RUNGS))
def test_forced_rung_picks_the_conv_matmul_and_gemm_kernel(rung) -> None:
    conv, mm = RUNGS[rung]
    g = Graph("ops")
    x = g.add_input("x", ("N", 8, 8, 16), "float32")
    y = g.add("FusedConv", [x, g.add_const(_w(64, 16, 3, 3), "w")], pads=(1, 1, 1, 1), layout="NHWC",
              activation="relu")
    a = g.add_input("a", ("M", 96), "float32")
    g.set_outputs([y, g.add("MatMul", [a, g.add_const(_w(96, 80), "b")]),
                   g.add("Gemm", [a, g.add_const(_w(80, 96), "c")], transB=1)])
    with _forced(rung):
        got = _kernels(g)
    assert got == {"FusedConv": f"conv_f32_{conv}", "MatMul": f"matmul_f32_{mm}", "Gemm": f"gemm_f32_{mm}"}, got


def test_unforced_host_picks_its_best_packed_kernel() -> None:
    from quantgraph.kernels.fp32 import gemm_f32_packed

    g = Graph("mm")
    a = g.add_input("a", ("M", 96), "float32")
    g.set_outputs([g.add("MatMul", [a, g.add_const(_w(96, 80), "b")])])
    with config.override(isa=None):
        best = gemm_f32_packed.select()
        assert _kernels(g)["MatMul"] == (f"matmul_f32_{best.name}" if best else "matmul_f32_blas")


def _small_cnn() -> Graph:
    """stem 7x7/2 on 3 channels (fused im2col, short runs), 3x3 convs (fused im2col), a 1x1 projection (GEMM on
    the activation in place), a residual Add + Relu (fused into the conv epilogue), MaxPool, GlobalAveragePool,
    Flatten, Gemm (packed, as FusedMatMul) and a Sigmoid-activated 1x1 conv (post-pass activation)."""
    g = Graph("small_cnn")
    x = g.add_input("x", ("N", 3, 32, 32), "float32")

    def conv(t, w, b=True, **attrs):
        ins = [t, g.add_const(w)] + ([g.add_const(_w(w.shape[0]))] if b else [])
        return g.add("Conv", ins, **attrs)

    s = g.add("Relu", [conv(x, _w(32, 3, 7, 7), strides=(2, 2), pads=(3, 3, 3, 3))])
    s = g.add("MaxPool", [s], kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))[0]
    h = g.add("Relu", [conv(s, _w(48, 32, 3, 3), pads=(1, 1, 1, 1))])
    h = conv(h, _w(64, 48, 3, 3), pads=(1, 1, 1, 1))
    proj = conv(s, _w(64, 32, 1, 1), b=False)
    r = g.add("Relu", [g.add("Add", [h, proj])])
    r = g.add("Sigmoid", [conv(r, _w(64, 64, 1, 1))])
    p = g.add("Flatten", [g.add("GlobalAveragePool", [r])])
    g.set_outputs([g.add("Gemm", [p, g.add_const(_w(100, 64)), g.add_const(_w(100))], transB=1)])
    return g


@pytest.mark.parametrize("rung", list(RUNGS))
def test_compiled_small_cnn_matches_interpreter_on_each_rung(rung) -> None:
    conv, mm = RUNGS[rung]
    g = _small_cnn()
    feeds = {"x": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    want = interpreter.run(g, feeds)[g.outputs[0]]
    with _forced(rung):
        cm = quantgraph.compile(g, opt_level=3)
        got = cm(feeds["x"])[0]
    kernels = set(next(iter(cm.plans.values())).kernels)
    assert {f"conv_f32_{conv}", f"matmul_f32_{mm}"} <= kernels, kernels  # the Gemm is fused into a FusedMatMul
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))))
