"""IR indexing ops (quantgraph/ir/ops/indexing.py): gathers/scatters with negative indices, reductions with repeated
indices, data-dependent shapes, errors."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import ref
from tests.ir.test_ops_shape import run_checked, shape_of

RNG = np.random.default_rng(1)


def test_gather_negative_indices_and_shape() -> None:
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    idx = np.array([[0, -1], [2, 1]], np.int64)
    (got,) = run_checked("Gather", x, idx, axis=1)
    np.testing.assert_array_equal(got, x[:, [[0, 3], [2, 1]]])
    assert shape_of("Gather", ("N", 4, 5), idx, axis=-1) == ("N", 4, 2, 2)
    assert shape_of("Gather", ("N", 4), np.array(1, np.int64), axis=1) == ("N",)
    with pytest.raises(ShapeError, match=r"\(Gather\): indices has dtype float32"):
        shape_of("Gather", (3,), np.array([0.0], np.float32))
    with pytest.raises(ShapeError, match="index 4 is out of range"):
        ref("Gather", x, np.array([4]), axis=1)


def test_gather_elements_and_nd() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    idx = np.array([[0, -1], [1, 2], [3, 0]], np.int64)
    np.testing.assert_array_equal(run_checked("GatherElements", x, idx, axis=1)[0],
                                  np.take_along_axis(x, idx % 4, axis=1))
    data = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    ind = np.array([[[1, -1]], [[0, 2]]], np.int64)  # batch_dims=1: per batch, index (row, col)
    (got,) = run_checked("GatherND", data, ind, batch_dims=1)
    np.testing.assert_array_equal(got, np.array([[data[0, 1, 3]], [data[1, 0, 2]]]))
    assert shape_of("GatherND", ("N", 3, 4), np.zeros((5, 2), np.int64)) == (5, 4)
    with pytest.raises(ShapeError, match=r"\(GatherND\): indices .* do not fit data"):
        shape_of("GatherND", (3, 4), np.zeros((5, 3), np.int64))


@pytest.mark.parametrize("reduction, ufunc", [("add", np.add), ("mul", np.multiply), ("max", np.maximum),
                                              ("min", np.minimum)])
def test_scatter_reductions_accumulate_repeated_indices(reduction: str, ufunc: np.ufunc) -> None:
    data = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    idx = np.array([[1, 1], [0, -1]], np.int64)
    upd = np.array([[2, 3], [4, 5]], np.float32)
    (got,) = run_checked("ScatterElements", data, idx, upd, axis=1, reduction=reduction)
    want = data.copy()
    for (r, c), u in zip([(0, 1), (0, 1), (1, 0), (1, 2)], upd.reshape(-1)):
        want[r, c] = ufunc(want[r, c], u)
    np.testing.assert_array_equal(got, want)
    (got_nd,) = run_checked("ScatterND", data, np.array([[0, 1], [0, 1], [1, -1]], np.int64),
                            np.array([2, 3, 5], np.float32), reduction=reduction)
    want_nd = data.copy()
    for (r, c), u in zip([(0, 1), (0, 1), (1, 2)], [2, 3, 5]):
        want_nd[r, c] = ufunc(want_nd[r, c], u)
    np.testing.assert_array_equal(got_nd, want_nd)


def test_scatter_errors() -> None:
    with pytest.raises(UnsupportedOpError, match="reduction 'mean' is not supported"):
        shape_of("ScatterElements", (2, 3), np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32),
                 reduction="mean")
    with pytest.raises(ShapeError, match=r"\(ScatterND\): updates has shape \(2,\); expected \(3, 3\)"):
        shape_of("ScatterND", (2, 3), np.zeros((3, 1), np.int64), np.zeros((2,), np.float32))


def test_nonzero_and_compress_have_data_dependent_dims() -> None:
    assert shape_of("NonZero", ("N", 3)) == (2, None)
    x = np.array([[1, 0, 2], [0, 0, 3]], np.float32)
    (got,) = run_checked("NonZero", x)
    np.testing.assert_array_equal(got, np.array(np.nonzero(x)))
    cond = np.array([True, False, True])
    assert shape_of("Compress", ("N", 3), cond, axis=1) == ("N", None)
    assert shape_of("Compress", ("N", 3), cond) == (None,)
    np.testing.assert_array_equal(run_checked("Compress", x, cond, axis=-1)[0], x[:, [0, 2]])
    np.testing.assert_array_equal(run_checked("Compress", x, cond)[0], np.array([1, 2], np.float32))


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 2])
def test_trilu_matches_numpy(upper: int, k: int | None) -> None:
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    (got,) = run_checked("Trilu", x, None if k is None else np.array(k, np.int64), upper=upper)
    np.testing.assert_array_equal(got, (np.triu if upper else np.tril)(x, k or 0))


def test_trilu_rejects_rank_1() -> None:
    with pytest.raises(ShapeError, match=r"\(Trilu\): .* needs rank >= 2"):
        shape_of("Trilu", (4,))


@pytest.mark.parametrize("batch_axis, time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis: int, time_axis: int) -> None:
    x = RNG.standard_normal((4, 4, 2)).astype(np.float32)
    lens = np.array([4, 3, 1, 0], np.int64)
    (got,) = run_checked("ReverseSequence", x, lens, batch_axis=batch_axis, time_axis=time_axis)
    want = x.copy()
    for b, n in enumerate(lens):
        src = [slice(None)] * 3
        src[batch_axis], src[time_axis] = b, slice(0, n)
        want[tuple(src)] = x[tuple(src)][::-1]
    np.testing.assert_array_equal(got, want)
    g = Graph("t")
    xi = g.add_input("x", (4, 5), "float32")
    with pytest.raises(ShapeError, match=r"sequence_lens has shape \(3,\); expected \(5,\)"):
        g.add("ReverseSequence", [xi, g.add_const(np.zeros(3, np.int64))])
