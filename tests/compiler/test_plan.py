"""Execution plan: buffer reuse, output aliasing, dynamic batch without recompiling, reference fallback."""
from __future__ import annotations

import numpy as np
import pytest

import quantgraph

from quantgraph.compiler.executable import CompiledModel
from quantgraph.compiler.lower import lower
from quantgraph.compiler.plan import build_plan
from quantgraph.ir import interpreter
from quantgraph.ir.graph import Graph

rng = np.random.default_rng(0)


def _chain(depth: int = 6, batch="N") -> Graph:
    """x -> [FusedConv relu] * depth -> GlobalAveragePool -> Flatten -> Softmax."""
    g = Graph("chain")
    t = g.add_input("x", (batch, 4, 10, 10), "float32")
    for i in range(depth):
        w = g.add_const(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3, f"w{i}")
        b = g.add_const(rng.standard_normal(4).astype(np.float32), f"b{i}")
        t = g.add("FusedConv", [t, w, b], pads=(1, 1, 1, 1), activation="relu")
    t = g.add("Softmax", [g.add("Flatten", [g.add("GlobalAveragePool", [t])])])
    g.set_outputs([t])
    return g


def test_buffer_reuse_reduces_allocated_bytes() -> None:
    g = _chain()
    low = lower(g)
    shapes = {"x": (2, 4, 10, 10)}
    shared = build_plan(g, low, shapes)
    private = build_plan(g, low, shapes, reuse=False)
    assert shared.arena_bytes < private.arena_bytes / 2, (shared.arena_bytes, private.arena_bytes)
    x = rng.standard_normal((2, 4, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(shared.run([x])[0], private.run([x])[0], rtol=1e-6)


def test_elementwise_runs_in_place_when_its_input_dies() -> None:
    g = Graph("inplace")
    x = g.add_input("x", (3, 8), "float32")
    a = g.add("Exp", [x])
    r = g.add("Relu", [a])  # a dies here: Relu writes over it
    g.set_outputs([g.add("Add", [r, x])])
    plan = build_plan(g, lower(g), {"x": (3, 8)})
    relu_step = plan.steps[plan.owners.index(1)]
    assert np.shares_memory(relu_step[1][0], relu_step[1][1])      # Relu reads and writes Exp's buffer
    add_step = plan.steps[plan.owners.index(2)]
    assert not np.shares_memory(add_step[1][1], add_step[1][2])    # x is still live: Add does not overwrite it
    xv = rng.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(plan.run([xv])[0], np.maximum(np.exp(xv), 0) + xv, rtol=1e-6)


def test_outputs_do_not_alias_across_calls() -> None:
    g = _chain()
    cm = CompiledModel(g, lower(g), opt_level=2)
    x1 = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    x2 = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    y1 = cm(x1)[0]
    keep = y1.copy()
    y2 = cm(x2)[0]
    np.testing.assert_array_equal(y1, keep)
    assert not np.shares_memory(y1, y2)
    assert not any(np.shares_memory(y1, p.arena) for p in cm.plans.values())


def test_dynamic_batch_builds_a_second_plan_without_recompiling() -> None:
    from quantgraph.kernels.fp32 import conv_f32, eltwise_f32, norm_f32

    g = _chain()
    cm = CompiledModel(g, lower(g), opt_level=2)
    x1 = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    cm(x1)
    fns = [conv_f32.im2col_nchw, eltwise_f32.epilogue_2d, norm_f32.softmax_rows]
    before = [len(f.signatures) for f in fns]
    x3 = rng.standard_normal((3, 4, 10, 10)).astype(np.float32)
    y3 = cm(x3)[0]
    assert len(cm.plans) == 2
    assert [len(f.signatures) for f in fns] == before
    want = interpreter.run(cm.graph, {"x": x3})[cm.graph.outputs[0]]
    np.testing.assert_allclose(y3, want, rtol=1e-4, atol=1e-6)


def test_op_without_kernel_runs_its_reference() -> None:
    g = Graph("fallback")
    x = g.add_input("x", ("N", 5), "float32")
    e = g.add("Elu", [g.add("Relu", [x])], alpha=0.5)
    g.set_outputs([g.add("Sigmoid", [e])])
    cm = CompiledModel(g, lower(g), opt_level=2)
    xv = rng.standard_normal((2, 5)).astype(np.float32)
    np.testing.assert_allclose(cm(xv)[0], interpreter.run(g, {"x": xv})[g.outputs[0]], rtol=1e-5)
    plan = next(iter(cm.plans.values()))
    assert plan.kernels == ["unary_f32_numba", "reference", "unary_f32_numba"]


def test_data_dependent_shapes_use_cells() -> None:
    g = Graph("nonzero")
    x = g.add_input("x", (6,), "float32")
    nz = g.add("NonZero", [x])
    g.set_outputs([nz])
    cm = CompiledModel(g, lower(g), opt_level=2)
    xv = np.array([0, 1, 0, 2, 3, 0], np.float32)
    np.testing.assert_array_equal(cm(xv)[0], np.array([[1, 3, 4]]))
    xv2 = np.array([1, 1, 0, 0, 0, 0], np.float32)
    np.testing.assert_array_equal(cm(xv2)[0], np.array([[0, 1]]))


def test_graph_output_that_is_an_input_or_constant() -> None:
    g = Graph("passthrough")
    x = g.add_input("x", (2,), "float32")
    c = g.add_const(np.array([1.0, 2.0], np.float32), "c")
    g.set_outputs([x, c, g.add("Add", [x, c])])
    cm = CompiledModel(g, lower(g), opt_level=2)
    xv = np.array([3.0, 4.0], np.float32)
    out = cm(xv)
    np.testing.assert_array_equal(out[0], xv)
    np.testing.assert_array_equal(out[2], xv + [1, 2])
    assert not np.shares_memory(out[0], xv)


@pytest.mark.slow
@pytest.mark.parametrize("opt_level", [2, 3])
def test_optimized_benchmark_models_match_the_interpreter(opt_level) -> None:
    from quantgraph.bench.models import bert_encoder, resnet50, sample_inputs

    for model, batches in ((resnet50(batch="N", image=64), (1, 2)), (bert_encoder(layers=1, seq=16), (1,))):
        cm = quantgraph.compile(model, opt_level=opt_level)
        for batch in batches:
            feeds = sample_inputs(model, batch=batch)
            want = interpreter.run(cm.graph, feeds)
            got = cm.run(feeds)
            for t in cm.graph.outputs:
                scale = float(np.max(np.abs(want[t])))
                np.testing.assert_allclose(got[t], want[t], rtol=1e-4, atol=1e-4 * scale)
    assert cm.graph.op_counts().get("FusedMatMul", 0) > 0


def test_observers_see_every_tensor_before_its_buffer_is_reused() -> None:
    g = _chain(depth=4)
    e = g.add("Exp", [g.outputs[0]])
    r = g.add("Sigmoid", [e])  # runs in place over Exp's buffer: Exp's value must be observed before
    g.set_outputs([g.add("Add", [r, g.outputs[0]])])
    x = rng.standard_normal((2, 4, 10, 10)).astype(np.float32)
    want: dict[str, np.ndarray] = {"x": x}
    interpreter.run(g, {"x": x}, on_tensor=lambda t, v: want.__setitem__(t, v))
    plan = build_plan(g, lower(g), {"x": x.shape})
    assert plan.arena_bytes < plan.naive_bytes  # buffers are shared, so observing late would see other values
    assert np.shares_memory(plan.buffers[e], plan.buffers[r])
    seen: dict[str, np.ndarray] = {}
    names = [t for t in want if g.tensors[t].dtype == "float32"]
    watched = plan.with_observers({t: (lambda v, t=t: seen.__setitem__(t, v.copy())) for t in names})
    out = watched.run([x])
    assert set(seen) == set(names)
    for t in names:
        np.testing.assert_allclose(seen[t], want[t], rtol=1e-4, atol=1e-5, err_msg=t)
    np.testing.assert_array_equal(out[0], plan.run([x])[0])  # the plan it came from is unchanged
    with pytest.raises(KeyError, match="'w0'"):
        plan.with_observers({"w0": print})
