"""Lowering: kernel selection by op + predicate, refusal reasons, weights packed once."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph import config
from quantgraph.compiler.lower import lower, select
from quantgraph.kernels import registry, target
from quantgraph.ir.graph import Graph

rng = np.random.default_rng(0)


def _conv_graph(layout: str = "NCHW", const_w: bool = True) -> Graph:
    g = Graph("conv")
    shape = ("N", 4, 6, 6) if layout == "NCHW" else ("N", 6, 6, 4)
    x = g.add_input("x", shape, "float32")
    wv = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    w = g.add_const(wv, "w") if const_w else g.add_input("w", wv.shape, "float32")
    g.set_outputs([g.add("FusedConv", [x, w], pads=(1, 1, 1, 1), layout=layout)])
    return g


def test_every_table_entry_is_a_registered_op() -> None:
    from quantgraph.ir.ops.registry import get_op

    table = registry.table()
    assert {"Conv", "FusedConv", "MatMul", "Gemm", "Relu", "Softmax", "FusedAttention"} <= set(table)
    for op, kernels in table.items():
        assert get_op(op).name == op
        assert [k.priority for k in kernels] == sorted((k.priority for k in kernels), reverse=True)
        for k in kernels:
            assert set(k.rungs) <= set(target.ISAS), k.name


def test_a_kernel_is_registered_once() -> None:
    k = registry.candidates("Relu")[0]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(k)


def test_forced_rung_gates_isa_kernels() -> None:
    g = _conv_graph("NHWC")
    g2 = Graph("conv_big")
    x = g2.add_input("x", (1, 8, 8, 64), "float32")
    w = g2.add_const(rng.standard_normal((64, 64, 3, 3)).astype(np.float32), "w")
    g2.set_outputs([g2.add("FusedConv", [x, w], pads=(1, 1, 1, 1), layout="NHWC")])
    with config.override(isa="portable"):
        k, why = select(g2.topo()[0], g2)
        assert k is not None and k.name == "conv_f32_im2col"
        avx512 = [c for c in registry.candidates("FusedConv") if c.name == "conv_f32_avx512"][0]
        assert "rung 'portable'" in avx512.refusal(g2.topo()[0], g2)
    if target.select_isa() in registry.AVX512_RUNGS and target.has("avx512f"):
        assert select(g2.topo()[0], g2)[0].name == "conv_f32_avx512"
    assert select(g.topo()[0], g)[0] is not None


def test_conv_weights_are_prepacked_for_the_layout() -> None:
    for layout, shape in (("NCHW", (1, 8, 36)), ("NHWC", (1, 36, 8))):
        (ln,) = lower(_conv_graph(layout))
        assert ln.kernel is not None and ln.kernel.name == "conv_f32_im2col"
        assert ln.packed["w"].shape == shape and ln.packed["w"].flags.c_contiguous


def test_refusal_reasons_are_reported() -> None:
    g = _conv_graph(const_w=False)
    k, why = select(g.topo()[0], g)
    assert k is None and why == "W is not a constant"
    g = Graph("f64")
    x = g.add_input("x", (2, 3), "float64")
    g.set_outputs([g.add("Relu", [x])])
    k, why = select(g.topo()[0], g)
    assert k is None and "float64; unary_f32_numba takes float32" in why
    g = Graph("elu")
    x = g.add_input("x", (2, 3), "float32")
    g.set_outputs([g.add("Elu", [x])])
    assert select(g.topo()[0], g) == (None, "no kernel for this op")


def test_packing_happens_once_per_model_not_per_plan() -> None:
    from quantgraph.compiler.executable import CompiledModel

    g = _conv_graph()
    cm = CompiledModel(g, lower(g), opt_level=2)
    packed = cm._lowered[0].packed["w"]
    cm(rng.standard_normal((1, 4, 6, 6)).astype(np.float32))
    cm(rng.standard_normal((2, 4, 6, 6)).astype(np.float32))
    assert len(cm.plans) == 2
    for plan in cm.plans.values():
        assert any(np.shares_memory(a, packed) for _, args in plan.steps for a in args if isinstance(a, np.ndarray))
