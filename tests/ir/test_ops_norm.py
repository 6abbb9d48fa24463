"""IR normalization and softmax ops (quantgraph/ir/ops/norm.py): inference, errors and references against
float64 textbook formulas."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import ref

RNG = np.random.default_rng(2)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _infer(op: str, x_shape: Any, *consts: np.ndarray | None, outputs: int | None = None, **attrs: Any) -> list:
    g = Graph("t")
    ins = [g.add_input("x", x_shape, "float32")] + [None if c is None else g.add_const(c) for c in consts]
    out = g.add(op, ins, name="norm_1", outputs=outputs, **attrs)
    return [g.info(t) for t in ((out,) if isinstance(out, str) else out)]


def test_batch_norm_matches_formula_and_checks_params() -> None:
    x, s, b, m = _rand(2, 3, 4, 4), _rand(3), _rand(3), _rand(3)
    v = np.abs(_rand(3)) + 0.1
    want = (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-3) * s[:, None, None] + b[:, None, None]
    got = ref("BatchNormalization", x, s, b, m, v, epsilon=1e-3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert _infer("BatchNormalization", ("N", 3, None), s, b, m, v)[0].shape == ("N", 3, None)
    with pytest.raises(ShapeError, match=r"node 'norm_1' \(BatchNormalization\): input_var has shape \(4,\)"):
        _infer("BatchNormalization", (1, 3, 2, 2), s, b, m, np.ones(4, np.float32))


def test_lrn_matches_channel_window_sum() -> None:
    x = _rand(1, 6, 2, 3)
    size, alpha, beta, bias = 3, 1e-2, 0.75, 2.0
    sq = np.zeros_like(x, dtype=np.float64)
    for c in range(6):  # window [c - 1, c + 1] clipped to the channels
        sq[:, c] = (x[:, max(0, c - 1):c + 2].astype(np.float64) ** 2).sum(1)
    want = x / (bias + alpha / size * sq) ** beta
    np.testing.assert_allclose(ref("LRN", x, size=size, alpha=alpha, beta=beta, bias=bias), want, rtol=1e-5)
    # even sizes put the extra channel after c: window [c - 1, c + 2] for size 4
    even = ref("LRN", x, size=4, alpha=1.0, beta=1.0, bias=0.0)
    np.testing.assert_allclose(even[:, 0], x[:, 0] / ((x[:, 0:3] ** 2).sum(1) / 4), rtol=1e-5)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family_single_axis(axis: int) -> None:
    x = _rand(3, 4, 5)
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    soft = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(ref("Softmax", x, axis=axis), soft, rtol=1e-5)
    np.testing.assert_allclose(ref("LogSoftmax", x, axis=axis), np.log(soft), rtol=1e-5, atol=1e-6)
    hard = ref("Hardmax", x, axis=axis)
    assert hard.dtype == np.float32 and (hard.sum(axis=axis) == 1).all()
    np.testing.assert_array_equal(hard.argmax(axis), x.argmax(axis))


def test_hardmax_ties_pick_first_and_axis_errors() -> None:
    assert ref("Hardmax", np.array([[2.0, 2.0, 1.0]], np.float32)).tolist() == [[1.0, 0.0, 0.0]]
    with pytest.raises(ShapeError, match=r"\(Softmax\): axis 3 is out of range for input of rank 3"):
        _infer("Softmax", ("N", 4, 5), axis=3)
    assert _infer("LogSoftmax", None)[0].shape is None


def test_layer_norm_outputs_and_stats_shape() -> None:
    x, s, b = _rand(2, 3, 4), _rand(3, 4), _rand(4)
    y, mean, inv = ref("LayerNormalization", x, s, b, axis=1, epsilon=1e-5)
    xd = x.astype(np.float64)
    mu = xd.mean(axis=(1, 2), keepdims=True)
    sd = np.sqrt(xd.var(axis=(1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, (xd - mu) / sd * s + b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inv, 1 / sd, rtol=1e-5)
    infos = _infer("LayerNormalization", ("N", "S", 4), s[0], None, outputs=3, axis=-1)
    assert [i.shape for i in infos] == [("N", "S", 4), ("N", "S", 1), ("N", "S", 1)]
    with pytest.raises(ShapeError, match="Scale has shape \\(5,\\); LayerNormalization expects it to broadcast"):
        _infer("LayerNormalization", (2, 4), np.ones(5, np.float32))
    with pytest.raises(UnsupportedOpError, match="stash_type 7 is not supported"):
        _infer("LayerNormalization", (2, 4), s[0], stash_type=7)


def test_layer_norm_float16_accumulates_in_float32() -> None:
    x = (RNG.standard_normal((2, 64)) * 10 + 100).astype(np.float16)
    y = ref("LayerNormalization", x, np.ones(64, np.float16), axis=-1)[0]
    xd = x.astype(np.float64)
    want = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-5)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), want, atol=1e-2)


def test_rms_instance_group_norm() -> None:
    x, scale, bias = _rand(2, 4, 3, 3), _rand(4), _rand(4)
    xd = x.astype(np.float64)
    rms = ref("RMSNormalization", x, scale[None, :, None, None] * np.ones((1, 1, 3, 3), np.float32), axis=1)
    want = xd / np.sqrt((xd ** 2).mean(axis=(1, 2, 3), keepdims=True) + 1e-5) * scale[:, None, None]
    np.testing.assert_allclose(rms, want, rtol=1e-4, atol=1e-5)
    inst = ref("InstanceNormalization", x, scale, bias)
    norm = (xd - xd.mean((2, 3), keepdims=True)) / np.sqrt(xd.var((2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(inst, norm * scale[:, None, None] + bias[:, None, None], rtol=1e-4, atol=1e-5)
    grp = ref("GroupNormalization", x, scale, bias, num_groups=2)
    gx = xd.reshape(2, 2, -1)
    gnorm = ((gx - gx.mean(-1, keepdims=True)) / np.sqrt(gx.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(grp, gnorm * scale[:, None, None] + bias[:, None, None], rtol=1e-4, atol=1e-5)
    with pytest.raises(ShapeError, match=r"\(GroupNormalization\): num_groups is 3 but X has 4 channels"):
        _infer("GroupNormalization", ("N", 4, 3), scale, bias, num_groups=3)
    with pytest.raises(ShapeError, match=r"\(InstanceNormalization\): scale has shape \(3,\)"):
        _infer("InstanceNormalization", ("N", 4, 3), scale[:3], bias)


def test_lp_and_mean_variance_normalization() -> None:
    x = _rand(2, 3, 4, 5)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(ref("LpNormalization", x, axis=1, p=1), xd / np.abs(xd).sum(1, keepdims=True),
                               rtol=1e-5)
    np.testing.assert_allclose(ref("LpNormalization", x), xd / np.linalg.norm(xd, axis=-1, keepdims=True),
                               rtol=1e-5)
    assert (ref("LpNormalization", np.zeros((2, 3), np.float32)) == 0).all()  # no NaN for a zero row
    mvn = ref("MeanVarianceNormalization", x)
    axes = (0, 2, 3)
    np.testing.assert_allclose(mvn, (xd - xd.mean(axes, keepdims=True)) / (xd.std(axes, keepdims=True) + 1e-9),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ShapeError, match=r"\(LpNormalization\): p is 3"):
        _infer("LpNormalization", (2, 3), p=3)
    with pytest.raises(ShapeError, match=r"\(MeanVarianceNormalization\): axes value 4 is out of range"):
        _infer("MeanVarianceNormalization", (2, 3, 4, 5), axes=(0, 4))
