"""Pipeline instrumentation (reports, verify, dumps, PassError, disabled passes) and the named levels."""
from __future__ import annotations

import os

import numpy as np
import pytest

from quantgraph import config
from quantgraph.compiler.pipeline import PassContext, Pipeline, build, fusions_applied, optimize
from quantgraph.compiler.rewrite import record
from quantgraph.errors import PassError
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.graph import Graph
from tests.compiler.test_pattern import assert_same_outputs, ops


def _graph() -> Graph:
    gb = GraphBuilder("t")
    x = gb.input("x", ("N", 3, 6, 6))
    w = gb.const(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = gb.op("Relu", gb.op("Identity", gb.op("Conv", x, w, pads=(1, 1, 1, 1))))
    return gb.output(gb.op("Flatten", y, axis=1)).build()


def test_reports_record_changes_counts_and_time() -> None:
    def count_nodes(g: Graph) -> Graph:
        record("seen", len(g))
        return g

    _, reports = Pipeline("p", [count_nodes]).run(_graph())
    (r,) = reports
    assert r.name == "count_nodes" and not r.changed and r.counts == {"seen": 4} and r.seconds >= 0
    assert "count_nodes" in str(r)


def test_o0_is_empty_and_o2_fuses() -> None:
    g = _graph()
    before = g.copy()
    out, reports = optimize(g.copy(), 0)
    assert reports == [] and ops(out) == ops(before)
    out, reports = optimize(g, 2)
    assert ops(out) == ["FusedConv", "Flatten"] and out.topo()[0].attrs["activation"] == "relu"
    applied = fusions_applied(reports)
    assert applied["conv_to_fused"] == 1 and applied["fuse_activation"] == 1 and applied["eliminate_identity"] == 1
    assert any(r.name == "fuse_epilogues" and r.changed for r in reports)
    assert_same_outputs(before, out)


def test_levels_are_cumulative() -> None:
    names = [[p.__name__ for p in build(i)] for i in range(4)]
    assert names[0] == [] and names[1][:3] == ["realize_quantized", "realize_float_out", "fold_constants"]
    # graphs stay typed without whole-graph re-inference; constant folding runs at most twice
    assert all("infer_shapes" not in n and n.count("fold_constants") <= 2 for n in names)
    assert names[2][:len(names[1])] == names[1] and names[3][:len(names[2])] == names[2]
    assert "convert_layout" in names[3] and "convert_layout" not in names[2]
    with pytest.raises(ValueError):
        optimize(_graph(), 5)


def test_failure_names_the_pass_and_those_before() -> None:
    def ok(g: Graph) -> Graph:
        return g

    def broken(g: Graph) -> Graph:
        raise RuntimeError("boom")

    with pytest.raises(PassError, match=r"pass 'broken' failed after \[ok\]: RuntimeError: boom") as info:
        Pipeline("p", [ok, broken]).run(_graph())
    assert isinstance(info.value.__cause__, RuntimeError)


def test_verify_catches_a_pass_that_breaks_the_graph() -> None:
    def corrupt(g: Graph) -> Graph:
        n = g.topo()[0]
        g.set_tensor(g.tensors[n.outputs[0]].with_(dtype="int64"))
        return g

    with pytest.raises(PassError, match="pass 'corrupt' failed"):
        Pipeline("p", [corrupt]).run(_graph(), PassContext(verify=True))
    Pipeline("p", [corrupt]).run(_graph(), PassContext(verify=False))


def test_pass_returning_none_is_an_error() -> None:
    with pytest.raises(PassError, match="returned None"):
        Pipeline("p", [lambda g: None]).run(_graph())


def test_disabled_passes_are_skipped() -> None:
    _, reports = build(2).run(_graph(), PassContext(disabled=frozenset({"fuse_epilogues"})))
    assert "fuse_epilogues" not in [r.name for r in reports]


def test_dumps_one_file_per_pass(tmp_path) -> None:
    with config.override(dump_dir=str(tmp_path)):
        _, reports = optimize(_graph(), 1)
    files = sorted(os.listdir(tmp_path))
    assert files[0] == "00_realize_quantized.txt" and len(files) == len(reports)
    assert "graph t" in (tmp_path / files[-1]).read_text()


def test_qparams_survive_fusion_and_layout_conversion() -> None:
    from quantgraph.ir.tensor import QuantParams

    gb = GraphBuilder("q")
    x = gb.input("x", (1, 3, 6, 6))
    rng = np.random.default_rng(1)
    w1 = gb.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    w2 = gb.const(rng.standard_normal((5, 4, 1, 1)).astype(np.float32))
    mid = gb.op("Relu", gb.op("Conv", x, w1, pads=(1, 1, 1, 1)))
    g = gb.output(gb.op("Conv", mid, w2)).build()
    per_tensor = QuantParams((0.02,), (0,), "uint8")
    per_channel = QuantParams((0.1, 0.2, 0.3, 0.4), (0, 0, 0, 0), "int8", axis=1)
    g.set_tensor(g.tensors[x].with_(qparams=per_tensor))
    g.set_tensor(g.tensors[mid].with_(qparams=per_channel))
    out, _ = optimize(g, 3)
    first, second = [n for n in out.topo() if n.op == "FusedConv"]
    assert first.attrs["activation"] == "relu" and first.attrs["layout"] == "NHWC"
    # the fused conv's output replaced Relu's; its NHWC twin moved the channel axis last
    assert out.tensors[first.outputs[0]].qparams == QuantParams(per_channel.scale, per_channel.zero_point, "int8", 3)
    assert out.tensors[first.inputs[0]].qparams == per_tensor  # the input's Transpose to NHWC
