"""The activation table sweep: every row's reference equals its source op, and the fp32 kernel code equals the
reference, so a new row cannot be half-added."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.ir.node import Node
from quantgraph.ir.ops.activation import ACTIVATION_OPS, ACTIVATIONS, activation_of
from quantgraph.ir.ops.registry import get_op, ref
from quantgraph.kernels.epilogue import ACTIVATIONS as INT8_ACTIVATIONS
from quantgraph.kernels.fp32.eltwise_f32 import act_row

rng = np.random.default_rng(3)
X = (rng.standard_normal(257) * 4).astype(np.float32)
#: attributes / constant bounds for the rows whose op has parameters
OP_ARGS = {"leaky_relu": ({"alpha": 0.2}, ()), "hardsigmoid": ({"alpha": 0.3, "beta": 0.4}, ()),
           "clip": ({}, (np.float32(-1.5), np.float32(2.0)))}


def _source_node(row) -> tuple[Node, tuple]:
    attrs, consts = OP_ARGS.get(row.name, ({}, ()))
    d = get_op(row.op)
    names = ("x",) + tuple(f"c{i}" for i in range(len(consts)))
    return Node("n", row.op, names, ("y",), d.complete_attrs("n", {**row.when, **attrs})), consts


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if a.op])
def test_row_reference_equals_its_source_op(name) -> None:
    row = ACTIVATIONS[name]
    node, consts = _source_node(row)
    assert activation_of(node) is row
    values = dict(zip(node.inputs[1:], consts))
    alpha, beta = row.params(node, values.get)
    want = get_op(row.op).run_reference(node, [X, *consts])[0]
    np.testing.assert_array_equal(row.reference(X, alpha, beta), want)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_fp32_kernel_code_matches_the_reference(name) -> None:
    row = ACTIVATIONS[name]
    alpha, beta = {"leaky_relu": (0.2, 0.0), "hardsigmoid": (0.3, 0.4), "clip": (-1.5, 2.0)}.get(name, (0.0, 0.0))
    got = X.copy()
    act_row(got, row.code, alpha, beta)
    np.testing.assert_allclose(got, row.reference(X, alpha, beta), rtol=2e-6, atol=2e-6)


def test_table_is_consistent() -> None:
    assert len({a.code for a in ACTIVATIONS.values()}) == len(ACTIVATIONS)
    assert ACTIVATION_OPS == {a.op for a in ACTIVATIONS.values() if a.op}
    assert INT8_ACTIVATIONS[0] == "none" and set(INT8_ACTIVATIONS) == {n for n, a in ACTIVATIONS.items() if a.int8}
    assert ref("Relu", X).dtype == np.float32
    # the packed fp32 microkernel has register code (EPI_* flags, kernels/jit/f32_gemm.py) for exactly these rows
    assert {n for n, a in ACTIVATIONS.items() if a.in_register} == {"none", "relu", "clip"}
