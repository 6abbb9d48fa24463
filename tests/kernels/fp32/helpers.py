"""Build one-node graphs and compare the planned kernels (opt_level 2) with the registry reference."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from quantgraph.compiler.executable import CompiledModel
from quantgraph.compiler.lower import lower
from quantgraph.ir import interpreter
from quantgraph.ir.graph import Graph

RTOL = {"float32": 1e-4}


def one_node(op: str, inputs: Sequence[tuple[str, Any]], **attrs: Any) -> tuple[Graph, dict[str, np.ndarray]]:
    """inputs: (name, array) for graph inputs, ("const:name", array) for constants, (None, None) for absent."""
    g = Graph(op.lower())
    names, feeds = [], {}
    for name, value in inputs:
        if name is None:
            names.append("")
        elif name.startswith("const:"):
            names.append(g.add_const(np.asarray(value), name[6:]))
        else:
            names.append(g.add_input(name, value.shape, value.dtype))
            feeds[name] = value
    y = g.add(op, names, **attrs)
    g.set_outputs([y] if isinstance(y, str) else [y[0]])
    return g, feeds


def check(g: Graph, feeds: dict[str, np.ndarray], kernel: str | None = None, rtol: float = 1e-4) -> CompiledModel:
    want = interpreter.run(g, feeds)
    cm = CompiledModel(g, lower(g), opt_level=2)
    got = cm.run(feeds)
    for t in g.outputs:
        scale = max(1.0, float(np.max(np.abs(want[t])))) if want[t].size else 1.0
        np.testing.assert_allclose(got[t], want[t], rtol=rtol, atol=rtol * scale, err_msg=t)
    if kernel is not None:
        plan = next(iter(cm.plans.values()))
        assert kernel in plan.kernels, plan.kernels
    return cm
