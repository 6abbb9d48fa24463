"""convert_layout: NHWC chains with one transpose per boundary; numerics unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.compiler.passes.convert_layout import convert_layout
from quantgraph.compiler.pipeline import optimize
from quantgraph.compiler.rewrite import collect_counts
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.verify import verify
from tests.compiler.test_pattern import assert_same_outputs, ops

rng = np.random.default_rng(4)


def _fc(gb, x, cin, cout, **attrs):
    w = gb.const((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32))
    return gb.op("FusedConv", x, w, gb.const(rng.standard_normal(cout).astype(np.float32)), pads=(1, 1, 1, 1),
                 **attrs)


def _run(g):
    before = g.copy()
    with collect_counts() as counts:
        convert_layout("NHWC")(g)
    verify(g)
    assert_same_outputs(before, g, rtol=1e-5, atol=1e-5)
    return counts


def test_chain_converts_with_one_transpose_at_each_boundary() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", ("N", 3, 8, 8))
    a = _fc(gb, x, 3, 4, activation="relu")
    b = _fc(gb, a, 4, 4)
    s = gb.op("Relu", gb.op("Add", a, b))                     # agnostic ops join the chain
    p = gb.op("MaxPool", s, kernel_shape=(2, 2), strides=(2, 2), outputs=1)[0]
    cat = gb.op("Concat", p, gb.op("AveragePool", s, kernel_shape=(2, 2), strides=(2, 2)), axis=1)
    y = gb.op("Flatten", cat, axis=1)                         # NCHW reader: needs the data back
    g = gb.output(y).build()
    counts = _run(g)
    assert ops(g).count("Transpose") == 2
    assert {n.attrs["layout"] for n in g.topo() if n.op in ("FusedConv", "FusedPool")} == {"NHWC"}
    assert next(n for n in g.topo() if n.op == "Concat").attrs["axis"] == 3
    assert counts["MaxPool->NHWC"] == 1 and counts["Transpose"] == 2


def test_global_pool_then_flatten_needs_no_transpose_back() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3, 6, 6))
    y = gb.op("Flatten", gb.op("GlobalAveragePool", _fc(gb, x, 3, 5)), axis=1)
    g = gb.output(y).build()
    counts = _run(g)
    assert ops(g) == ["Transpose", "FusedConv", "FusedPool", "Flatten"] and counts["absorbed_by_flatten"] == 1


def test_graph_output_keeps_name_and_layout() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3, 6, 6))
    y = _fc(gb, x, 3, 4)
    g = gb.output(y).build()
    _run(g)
    assert g.outputs == [y] and g.producer(y).op == "Transpose" and g.tensors[y].shape == (2, 4, 6, 6)


def test_per_channel_constants_are_permuted() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3, 6, 6))
    y = gb.op("Add", gb.op("Mul", _fc(gb, x, 3, 4), gb.const(rng.standard_normal((4, 1, 1)).astype(np.float32))),
              gb.const(np.float32(0.5)))
    g = gb.output(gb.op("Relu", y)).build()
    _run(g)
    assert ops(g).count("Transpose") == 2 and ops(g).index("Mul") < ops(g).index("Transpose", 1)


def test_no_anchor_no_change() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3, 6, 6))
    g = gb.output(gb.op("Relu", x)).build()
    _run(g)
    assert ops(g) == ["Relu"]


def test_only_nhwc_is_supported() -> None:
    with pytest.raises(ValueError, match="only NHWC"):
        convert_layout("NCHW16c")


def test_resnet50_after_o3_has_one_transpose() -> None:
    import quantgraph
    from quantgraph.bench.models import resnet50

    g, _ = optimize(quantgraph.load_onnx(resnet50(image=64)), 3)
    counts = g.op_counts()
    assert counts.get("Transpose") == 1 and g.producer(g.topo()[0].outputs[0]) is not None
    assert g.topo()[0].op == "Transpose" and g.topo()[0].inputs == ("input",)
    assert all(n.attrs["layout"] == "NHWC" for n in g.topo() if n.op in ("FusedConv", "FusedPool"))
