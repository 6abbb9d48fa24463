"""Activation fusion into FusedConv/FusedMatMul epilogues: every activation kind, SiLU, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.compiler.rules.epilogue import RULES
from quantgraph.ir.builder import GraphBuilder
from tests.compiler.test_pattern import apply, assert_same_outputs, ops

rng = np.random.default_rng(3)


def _producer(gb, kind, dtype="float32", **attrs):
    np_dt = np.dtype(dtype)
    if kind == "conv":
        x = gb.input("x", (2, 3, 5, 5), dtype)
        return gb.op("FusedConv", x, gb.const(rng.standard_normal((4, 3, 3, 3)).astype(np_dt)), pads=(1, 1, 1, 1),
                     **attrs)
    a = gb.input("a", (3, 5), dtype)
    return gb.op("FusedMatMul", a, gb.const(rng.standard_normal((5, 4)).astype(np_dt)), **attrs)


def _c(gb, v):
    return gb.const(np.array(v, np.float32))


ACTS = {
    "Relu": ({}, "relu"), "Sigmoid": ({}, "sigmoid"), "Tanh": ({}, "tanh"), "HardSwish": ({}, "hardswish"),
    "LeakyRelu": ({"alpha": 0.1}, "leaky_relu"), "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, "hardsigmoid"),
    "Gelu": ({}, "gelu"), "Gelu_tanh": ({"approximate": "tanh"}, "gelu_tanh"), "Clip": ({}, "clip"),
    "Erf": ({}, "erf"), "Mish": ({}, "mish"),
}


def test_every_table_op_is_covered_here() -> None:
    from quantgraph.ir.ops.activation import ACTIVATION_OPS

    assert ACTIVATION_OPS == {a.split("_")[0] for a in ACTS}


@pytest.mark.parametrize("kind", ["conv", "matmul"])
@pytest.mark.parametrize("act", sorted(ACTS))
def test_fuse_activation(kind: str, act: str) -> None:
    gb = GraphBuilder("t")
    y = _producer(gb, kind)
    attrs, want = ACTS[act]
    if act == "Clip":
        y = gb.op("Clip", y, _c(gb, 0.0), _c(gb, 6.0))  # ReLU6
    else:
        y = gb.op(act.split("_")[0], y, **attrs)
    before, after, p = apply(gb.output(y).build(), RULES.only("fuse_activation"))
    assert len(after) == 1 and p.counts == {"fuse_activation": 1}
    n = after.topo()[0]
    assert n.attrs["activation"] == want
    if act == "Clip":
        assert (n.attrs["alpha"], n.attrs["beta"]) == (0.0, 6.0)
    assert_same_outputs(before, after, rtol=1e-5, atol=1e-5)


def test_fuse_clip_with_one_bound() -> None:
    gb = GraphBuilder("t")
    y = gb.op("Clip", _producer(gb, "matmul"), _c(gb, -1.0))
    before, after, p = apply(gb.output(y).build(), RULES.only("fuse_activation"))
    assert ops(after) == ["FusedMatMul"] and after.topo()[0].attrs["beta"] == float("inf")
    assert_same_outputs(before, after)


def test_fuse_activation_refusals() -> None:
    gb = GraphBuilder("t")
    y = gb.op("Relu", _producer(gb, "conv", activation="sigmoid"))
    _, after, p = apply(gb.output(y).build(), RULES.only("fuse_activation"))
    assert ops(after) == ["FusedConv", "Relu"] and "already applies sigmoid" in p.reasons("fuse_activation")[0]
    gb = GraphBuilder("t")
    y = gb.op("Relu", _producer(gb, "matmul", dtype="float64"))
    _, _, p = apply(gb.output(y).build(), RULES.only("fuse_activation"))
    assert "fused epilogues are float32" in p.reasons("fuse_activation")[0]
    gb = GraphBuilder("t")
    y = gb.op("Clip", _producer(gb, "matmul"), gb.input("lo", ()))
    _, _, p = apply(gb.output(y).build(), RULES.only("fuse_activation"))
    assert p.reasons("fuse_activation") == ["Clip bounds are not constant scalars"]


@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_fuse_silu(kind: str) -> None:
    gb = GraphBuilder("t")
    f = _producer(gb, kind)
    y = gb.op("Mul", gb.op("Sigmoid", f), f)
    before, after, p = apply(gb.output(y).build(), RULES.only("fuse_silu"))
    assert len(after) == 1 and after.topo()[0].attrs["activation"] == "silu"
    assert_same_outputs(before, after, rtol=1e-5, atol=1e-5)


def test_fuse_silu_refuses_existing_activation() -> None:
    gb = GraphBuilder("t")
    f = _producer(gb, "conv", activation="relu")
    _, _, p = apply(gb.output(gb.op("Mul", f, gb.op("Sigmoid", f))).build(), RULES.only("fuse_silu"))
    assert "already applies relu" in p.reasons("fuse_silu")[0]
