"""CompiledModel.summary() and profile()."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quantgraph.compiler.executable import CompiledModel
from quantgraph.compiler.lower import lower
from quantgraph.ir.graph import Graph


@dataclass
class _Report:
    name: str
    changed: bool
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0


def _graph() -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", ("N", 3), "float32")
    w = g.add_const(np.ones((3, 4), np.float32), "w")
    y = g.add("FusedMatMul", [x, w], activation="relu")
    g.set_outputs([g.add("Elu", [y])])
    return g


def test_summary_reports_counts_fusions_kernels_and_time() -> None:
    reports = [_Report("fuse_epilogues", True, {"matmul_to_fused": 1, "fuse_activation": 1}, 0.002),
               _Report("eliminate_dead_code", False)]
    g = _graph()
    cm = CompiledModel(g, lower(g), opt_level=2, optimized_from={"MatMul": 1, "Relu": 1, "Elu": 1},
                       pass_reports=reports)
    x = np.ones((2, 3), np.float32)
    prof = cm.profile(x, repeats=2)
    assert set(prof["per_op"]) == {"FusedMatMul", "Elu"} and prof["total"] > 0
    text = cm.summary()
    for piece in ("op counts", "MatMul", "FusedMatMul", "fuse_epilogues", "matmul_to_fused: 1",
                  "matmul_f32_blas x1", "reference x1", "no kernel for this op", "time per op type", "Elu"):
        assert piece in text, piece


def test_summary_before_profiling_and_at_opt_level_0() -> None:
    g = _graph()
    cm = CompiledModel(g, lower(g), opt_level=2)
    assert "call profile(*inputs) first" in cm.summary()
    cm0 = CompiledModel(_graph(), opt_level=0)
    cm0.profile(np.ones((1, 3), np.float32), repeats=1)
    text = cm0.summary()
    assert "reference interpreter" in text and "interpreter" in text
