"""Attention fusion: the PyTorch-exported multi-head attention core ==> FusedAttention (structure, numerics,
one test per refusal reason)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from quantgraph.bench.models import bert_encoder, sample_inputs
from quantgraph.compiler.api import to_graph
from quantgraph.compiler.pipeline import optimize
from quantgraph.compiler.rules.attention import RULES
from quantgraph.ir import interpreter
from quantgraph.ir.builder import GraphBuilder
from tests.compiler.test_pattern import apply, ops

rng = np.random.default_rng(5)
_I64 = np.int64


def _mha(batch="B", seq=7, heads=3, dh=5, mask=False, scale_op="Div", scale=None, k_perm=(0, 2, 3, 1),
         softmax_axis=-1, k_heads=None, k_dh=None, merge=None, mask_shape=None, kv_split=None, q_split=None):
    """A self-attention core as PyTorch exports it, from three (batch, seq, hidden) inputs."""
    gb = GraphBuilder("mha")
    hidden = heads * dh
    q, v = (gb.input(n, (batch, seq, hidden)) for n in "qv")
    k = gb.input("k", (batch, seq, (k_heads or heads) * (k_dh or dh)))
    split = gb.const(np.array([0, 0, heads, dh], _I64))
    q_split = gb.const(np.array(q_split, _I64)) if q_split else split
    k_split = gb.const(np.array(kv_split or [0, 0, k_heads or heads, k_dh or dh], _I64))
    qh = gb.op("Transpose", gb.op("Reshape", q, q_split), perm=(0, 2, 1, 3))
    kh = gb.op("Transpose", gb.op("Reshape", k, k_split), perm=k_perm)
    vh = gb.op("Transpose", gb.op("Reshape", v, split), perm=(0, 2, 1, 3))
    s = gb.op("MatMul", qh, kh)
    if scale_op == "Div":
        s = gb.op("Div", s, gb.const(np.array(math.sqrt(dh) if scale is None else scale, np.float32)))
    else:
        s = gb.op("Mul", gb.const(np.array(1 / math.sqrt(dh) if scale is None else scale, np.float32)), s)
    if mask:
        s = gb.op("Add", gb.input("mask", mask_shape or (batch, 1, 1, seq)), s)
    p = gb.op("Softmax", s, axis=softmax_axis)
    c = gb.op("Transpose", gb.op("MatMul", p, vh), perm=(0, 2, 1, 3))
    y = gb.op("Reshape", c, gb.const(np.array(merge or [0, 0, hidden], _I64)))
    return gb.output(y).build()


def _feeds(g, seed=0, masked_keys=2):
    r = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        shape = tuple(2 if isinstance(d, str) else d for d in g.tensors[name].shape)
        x = r.standard_normal(shape).astype(np.float32)
        if name == "mask":
            x = np.zeros(shape, np.float32)
            x[..., -masked_keys:] = -10000.0
        feeds[name] = x
    return feeds


def _refusal(g) -> str:
    _, after, p = apply(g, RULES)
    assert "FusedAttention" not in ops(after) and "Softmax" in ops(after)
    reasons = p.reasons("fuse_attention")
    assert reasons, "the rule did not reach its checks"
    return reasons[0]


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("scale_op", ["Div", "Mul"])
def test_fuse_attention_structure_and_numerics(mask: bool, scale_op: str) -> None:
    g = _mha(mask=mask, scale_op=scale_op)
    before, after, p = apply(g, RULES)
    assert ops(after) == ["FusedAttention"] and p.counts == {"fuse_attention": 1}
    n = after.topo()[0]
    assert n.attrs["num_heads"] == 3 and n.attrs["scale"] == pytest.approx(1 / math.sqrt(5), rel=1e-6)
    assert list(n.inputs) == ["q", "k", "v"] + (["mask"] if mask else [])
    feeds = _feeds(before)  # batch 2 (the symbolic batch is fed as 2)
    want, got = interpreter.run(before, feeds), interpreter.run(after, feeds)
    for t in before.outputs:
        assert got[t].shape == (2, 7, 15)
        np.testing.assert_allclose(got[t], want[t], rtol=1e-5, atol=1e-5)


def test_fuse_attention_bert_encoder_at_o2() -> None:
    for mask in (False, True):
        g = to_graph(bert_encoder(layers=4, hidden=96, heads=6, seq=16, batch=2, mask=mask))
        before = g.copy()
        after, reports = optimize(g, 2)
        counts = after.op_counts()
        assert counts == {"FusedAttention": 4, "FusedMatMul": 24, "LayerNormalization": 8}, counts
        assert [r.counts for r in reports if r.name == "fuse_attention"] == [{"fuse_attention": 4}]
        model = bert_encoder(layers=4, hidden=96, heads=6, seq=16, batch=2, mask=mask)
        feeds = sample_inputs(model, batch=2)
        want, got = interpreter.run(before, feeds), interpreter.run(after, feeds)
        np.testing.assert_allclose(got["output"], want["output"], rtol=1e-4, atol=1e-4)


def test_fuse_attention_refuses_non_3d_input() -> None:
    gb = GraphBuilder("mha")
    q, k, v = (gb.input(n, (2, 7, 3, 5)) for n in "qkv")
    split = gb.const(np.array([0, 0, 3, 5], _I64))
    qh = gb.op("Transpose", gb.op("Reshape", q, split), perm=(0, 2, 1, 3))
    kh = gb.op("Transpose", gb.op("Reshape", k, split), perm=(0, 2, 3, 1))
    vh = gb.op("Transpose", gb.op("Reshape", v, split), perm=(0, 2, 1, 3))
    s = gb.op("Softmax", gb.op("Div", gb.op("MatMul", qh, kh), gb.const(np.array(2.0, np.float32))))
    c = gb.op("Transpose", gb.op("MatMul", s, vh), perm=(0, 2, 1, 3))
    g = gb.output(gb.op("Reshape", c, gb.const(np.array([0, 0, 15], _I64)))).build()
    assert _refusal(g) == "q has shape (2, 7, 3, 5); expected 3-D (batch, seq, hidden) with a static hidden size"


def test_fuse_attention_refuses_reshape_that_is_not_a_head_split() -> None:
    # Q's Reshape swaps batch and sequence: (1, 7, 15) -> (7, 1, 3, 5); the graph stays valid by broadcasting
    g = _mha(batch=1, q_split=[7, 1, 3, 5])
    assert _refusal(g) == ("the Reshape of q gives (7, 1, 3, 5); expected (1, 7, 15) split into heads "
                           "(batch, seq, heads, head_size)")


def test_fuse_attention_refuses_different_head_counts() -> None:
    g = _mha(heads=3, dh=4, k_heads=1, seq=6)  # one shared key head (multi-query): scores broadcast over heads
    reason = _refusal(g)
    assert reason == "q, k and v are split into 3, 1 and 3 heads; expected one head count"


def test_fuse_attention_refuses_softmax_over_another_axis() -> None:
    g = _mha(softmax_axis=2)
    assert _refusal(g) == "Softmax normalizes axis 2; attention normalizes the keys (last axis)"


def test_fuse_attention_refuses_non_scalar_scale() -> None:
    g = _mha(scale_op="Div", scale=np.full((7,), 2.0, np.float32))
    assert _refusal(g) == "the scale constant has shape (7,); expected a scalar"


def test_fuse_attention_refuses_division_by_zero() -> None:
    g = _mha(scale_op="Div", scale=np.float32(0.0))
    assert _refusal(g) == "the scores are divided by zero"


def test_fuse_attention_refuses_mask_that_grows_the_scores() -> None:
    g = _mha(batch=1, mask=True, mask_shape=(2, 1, 1, 7))
    assert _refusal(g) == "mask has shape (2, 1, 1, 7); it would grow the scores (1, 3, 7, 7) to (2, 3, 7, 7)"


def test_fuse_attention_refuses_merge_that_is_not_the_heads() -> None:
    g = _mha(batch=2, merge=[0, -1])  # flattens seq and hidden together: (2, 105)
    assert _refusal(g) == "the merging Reshape gives (2, 105); expected the heads merged into (2, 7, 15)"


def test_fuse_attention_refuses_shared_interior_value() -> None:
    g = _mha()
    probs = next(n for n in g.topo() if n.op == "Softmax").outputs[0]
    g.set_outputs(list(g.outputs) + [probs])
    reason = _refusal(g)
    assert "is a graph output" in reason


def test_fuse_attention_does_not_match_other_key_layouts() -> None:
    g = _mha(k_perm=(0, 2, 1, 3), kv_split=[0, 0, 3, 5], seq=5, dh=5)  # Q @ K (no transpose): not attention
    _, after, p = apply(g, RULES)
    assert "FusedAttention" not in ops(after) and p.counts == {}
