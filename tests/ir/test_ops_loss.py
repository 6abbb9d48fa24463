"""IR training losses (quantgraph/ir/ops/loss.py): NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss against
per-element float64 loops, ignore_index handling, inference and errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import ref

RNG = np.random.default_rng(15)


def _naive_nll(x: np.ndarray, t: np.ndarray, w: np.ndarray | None, ignore: int | None, reduction: str) -> np.ndarray:
    losses, weights = np.zeros(t.shape), np.zeros(t.shape)
    for pos in itertools.product(*[range(d) for d in t.shape]):
        c = t[pos]
        if c == ignore:
            continue
        weights[pos] = 1.0 if w is None else w[c]
        losses[pos] = -x[(pos[0], c) + pos[1:]] * weights[pos]
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / weights.sum()}[reduction]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted, ignore", [(False, None), (True, None), (True, 2), (False, -1)])
def test_nll_and_softmax_cross_entropy_match_loops(reduction: str, weighted: bool, ignore: int | None) -> None:
    x = RNG.standard_normal((3, 4, 2, 5)).astype(np.float32)
    t = RNG.integers(0, 4, (3, 2, 5))
    if ignore is not None:
        t[0, 0, :2] = ignore  # may lie outside [0, C): must not be gathered
    w = RNG.uniform(0.5, 2, 4).astype(np.float32) if weighted else None
    got = ref("NegativeLogLikelihoodLoss", x, t, w, ignore_index=ignore, reduction=reduction)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _naive_nll(x, t, w, ignore, reduction), rtol=1e-5, atol=1e-6)
    loss, log_p = ref("SoftmaxCrossEntropyLoss", x, t, w, ignore_index=ignore, reduction=reduction)
    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    want_log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(log_p, want_log_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, _naive_nll(want_log_p, t, w, ignore, reduction), rtol=1e-5, atol=1e-6)


def test_loss_inference_and_errors() -> None:
    g = Graph("t")
    x, t = g.add_input("x", ("N", 5, "D"), "float32"), g.add_input("t", ("N", "D"), "int64")
    assert g.info(g.add("NegativeLogLikelihoodLoss", [x, t], reduction="none")).shape == ("N", "D")
    loss, log_p = g.add("SoftmaxCrossEntropyLoss", [x, t], outputs=2)
    assert g.info(loss).shape == () and g.info(log_p).shape == ("N", 5, "D")
    bad = g.add_input("bad", ("N", 5, "D"), "int64")
    with pytest.raises(ShapeError, match=r"node 'nll_1' \(NegativeLogLikelihoodLoss\): target has shape"):
        g.add("NegativeLogLikelihoodLoss", [x, bad], name="nll_1")
