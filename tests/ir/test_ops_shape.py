"""IR shape/data-movement ops (quantgraph/ir/ops/shape.py, indexing.py, resize.py): inference with symbolic,
unknown and constant-driven shapes, error messages, and references vs numpy."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir import interpreter
from quantgraph.ir.graph import Graph

RNG = np.random.default_rng(0)


def shape_of(op: str, x_shape: Any, *consts: Any, dtype: str = "float32", **attrs: Any) -> Any:
    """Inferred output shape of ``op`` on a graph input of ``x_shape`` and constant further inputs."""
    g = Graph("t")
    ins = [g.add_input("x", x_shape, dtype)] + [None if c is None else g.add_const(np.asarray(c)) for c in consts]
    return g.info(g.add(op, ins, **attrs)).shape


def run_checked(op: str, x: np.ndarray, *consts: Any, **attrs: Any) -> list[np.ndarray]:
    """Run ``op`` in a graph with the interpreter checking every output against the inferred type."""
    g = Graph("t")
    consts_ = [None if c is None else g.add_const(np.asarray(c)) for c in consts]
    ins = [g.add_input("x", x.shape, str(x.dtype))] + consts_
    outs = g.add(op, ins, **attrs)
    outs = [outs] if isinstance(outs, str) else list(outs)
    g.set_outputs(outs)
    res = interpreter.run(g, {"x": x}, check_types=True)
    return [res[o] for o in outs]


# -- Reshape / Flatten / Transpose ------------------------------------------------------------------------------
def test_reshape_copies_symbolic_batch_and_infers_minus_one() -> None:
    assert shape_of("Reshape", ("N", 512, 1, 1), np.array([0, -1], np.int64)) == ("N", 512)
    assert shape_of("Reshape", ("N", 3, 4), np.array([-1, 4], np.int64)) == (None, 4)  # N*12/4 is not a single symbol
    assert shape_of("Reshape", (2, 3, 4), np.array([4, -1], np.int64)) == (4, 6)


def test_reshape_runtime_shape_gives_unknown_dims_of_known_rank() -> None:
    g = Graph("t")
    x = g.add_input("x", (2, 3), "float32")
    s = g.add_input("s", (3,), "int64")
    assert g.info(g.add("Reshape", [x, s])).shape == (None, None, None)


def test_reshape_allowzero_keeps_zero_dims() -> None:
    x = np.zeros((0, 3), np.float32)
    (y,) = run_checked("Reshape", x, np.array([3, 0], np.int64), allowzero=1)
    assert y.shape == (3, 0)
    (y,) = run_checked("Reshape", np.zeros((2, 3), np.float32), np.array([0, 3], np.int64))
    assert y.shape == (2, 3)


@pytest.mark.parametrize("target, msg", [((-1, -1), "more than one -1"), ((4, 4), "24 elements"),
                                         ((5, -1), "not a multiple of 5")])
def test_reshape_errors_name_node_and_op(target: tuple, msg: str) -> None:
    with pytest.raises(ShapeError, match=rf"node 'Reshape' \(Reshape\): .*{msg}"):
        shape_of("Reshape", (2, 3, 4), np.array(target, np.int64))


def test_flatten_symbolic_and_reference() -> None:
    assert shape_of("Flatten", ("N", 3, 4)) == ("N", 12)
    assert shape_of("Flatten", ("N", 3, 4), axis=0) == (1, None)
    assert shape_of("Flatten", ("N", 3, 4), axis=-1) == (None, 4)
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_checked("Flatten", x, axis=2)[0], x.reshape(6, 4))
    with pytest.raises(ShapeError, match="axis 4 is out of range"):
        shape_of("Flatten", (2, 3, 4), axis=4)


def test_transpose_default_reverses_and_bad_perm_raises() -> None:
    assert shape_of("Transpose", ("N", 3, 4)) == (4, 3, "N")
    assert shape_of("Transpose", ("N", 3, 4), perm=(0, 2, 1)) == ("N", 4, 3)
    with pytest.raises(ShapeError, match=r"\(Transpose\): perm \(0, 0, 1\) is not a permutation"):
        shape_of("Transpose", (2, 3, 4), perm=(0, 0, 1))


# -- Squeeze / Unsqueeze ----------------------------------------------------------------------------------------
def test_squeeze_inference() -> None:
    assert shape_of("Squeeze", ("N", 1, 4, 1), np.array([1, -1], np.int64)) == ("N", 4)
    assert shape_of("Squeeze", (2, 1, 4)) == (2, 4)
    assert shape_of("Squeeze", ("N", 1, 4)) is None  # whether N is 1 is unknown
    with pytest.raises(ShapeError, match=r"\(Squeeze\): cannot squeeze axis 0 .*its size is 2"):
        shape_of("Squeeze", (2, 1, 4), np.array([0], np.int64))


def test_unsqueeze_inference_and_reference() -> None:
    assert shape_of("Unsqueeze", ("N", 4), np.array([0, -1], np.int64)) == (1, "N", 4, 1)
    g = Graph("t")
    x = g.add_input("x", ("N", 4), "float32")
    a = g.add_input("a", (2,), "int64")
    assert g.info(g.add("Unsqueeze", [x, a])).shape == (None, None, None, None)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    assert run_checked("Unsqueeze", x, np.array([1, 3], np.int64))[0].shape == (3, 1, 4, 1)
    with pytest.raises(ShapeError, match="repeat an axis"):
        shape_of("Unsqueeze", (3, 4), np.array([1, 1], np.int64))


# -- Concat / Split ---------------------------------------------------------------------------------------------
def test_concat_inference_and_errors() -> None:
    g = Graph("t")
    a, b = g.add_input("a", ("N", 3), "float32"), g.add_input("b", (None, 5), "float32")
    assert g.info(g.add("Concat", [a, b], axis=1)).shape == ("N", 8)
    assert g.info(g.add("Concat", [a, a], axis=0)).shape == (None, 3)
    with pytest.raises(ShapeError, match=r"\(Concat\): inputs .* differ in dim 1"):
        g.add("Concat", [a, b], axis=0)
    c = g.add_input("c", (2, 3), "int64")
    with pytest.raises(ShapeError, match="different dtypes"):
        g.add("Concat", [a, c], axis=0)


@pytest.mark.parametrize("attrs, consts, want", [
    ({"num_outputs": 3}, [], [3, 3, 1]),
    ({}, [np.array([2, 5], np.int64)], [2, 5]),
])
def test_split_uneven_and_explicit(attrs: dict, consts: list, want: list) -> None:
    x = np.arange(14, dtype=np.float32).reshape(2, 7)
    g = Graph("t")
    ins = [g.add_input("x", (2, 7), "float32")] + [g.add_const(c) for c in consts]
    outs = g.add("Split", ins, outputs=len(want), axis=-1, **attrs)
    assert [g.info(o).shape for o in outs] == [(2, w) for w in want]
    got = run_checked("Split", x, *consts, outputs=len(want), axis=-1, **attrs)
    np.testing.assert_array_equal(np.concatenate(got, axis=1), x)
    assert [a.shape[1] for a in got] == want


def test_split_errors() -> None:
    g = Graph("t")
    x = g.add_input("x", (2, 7), "float32")
    with pytest.raises(ShapeError, match=r"\(Split\): split \(2, 4\) sums to 6"):
        g.add("Split", [x, g.add_const(np.array([2, 4], np.int64))], outputs=2, axis=1)
    with pytest.raises(ShapeError, match="cannot be split into 2 equal parts"):
        g.add("Split", [x], outputs=2, axis=1)


# -- Slice ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([1, 0], [3, 10], None, None),
    ([-1], [-1000], [1], [-1]),                   # reverse, end clamped below 0
    ([2 ** 62], [-(2 ** 62)], [-1], [-2]),        # huge start clamped to the last index
    ([0, 1], [2 ** 63 - 1, 4], [0, 2], [2, 2]),
])
def test_slice_matches_numpy(starts: list, ends: list, axes: list | None, steps: list | None) -> None:
    x = RNG.standard_normal((4, 5, 6)).astype(np.float32)
    consts = [np.array(v, np.int64) for v in (starts, ends)] + [
        None if v is None else np.array(v, np.int64) for v in (axes, steps)]
    (got,) = run_checked("Slice", x, *consts)
    index = [slice(None)] * 3
    for i, (s, e) in enumerate(zip(starts, ends)):
        a = (axes or range(len(starts)))[i]
        index[a] = slice(s, None if e < -x.shape[a] else e, (steps or [1] * 9)[i])
    np.testing.assert_array_equal(got, x[tuple(index)])


def test_slice_inference_symbolic_and_runtime() -> None:
    full = np.array([2 ** 63 - 1], np.int64)
    assert shape_of("Slice", ("N", 8), np.array([0], np.int64), full) == ("N", 8)
    assert shape_of("Slice", ("N", 8), np.array([1], np.int64), np.array([-1], np.int64), np.array([1])) == ("N", 6)
    g = Graph("t")
    x = g.add_input("x", ("N", 8, 3), "float32")
    s, e = g.add_input("s", (1,), "int64"), g.add_input("e", (1,), "int64")
    assert g.info(g.add("Slice", [x, s, e, g.add_const(np.array([1], np.int64))])).shape == ("N", None, 3)
    assert g.info(g.add("Slice", [x, s, e])).shape == (None, 8, 3)


def test_slice_zero_step_raises() -> None:
    with pytest.raises(ShapeError, match=r"\(Slice\): steps \(0,\) contain 0"):
        shape_of("Slice", (4,), np.array([0]), np.array([3]), np.array([0]), np.array([0]))


# -- Expand / Tile / Pad / CenterCropPad ------------------------------------------------------------------------
def test_expand_and_tile() -> None:
    assert shape_of("Expand", ("N", 1, 4), np.array([1, 3, 1], np.int64)) == ("N", 3, 4)
    assert shape_of("Expand", (2, 1), np.array([2, 1, 5], np.int64)) == (2, 2, 5)
    with pytest.raises(ShapeError, match=r"\(Expand\): input \(2, 3\) cannot be expanded"):
        shape_of("Expand", (2, 3), np.array([4], np.int64))
    x = RNG.standard_normal((2, 1)).astype(np.float32)
    np.testing.assert_array_equal(run_checked("Expand", x, np.array([3, 1, 4], np.int64))[0],
                                  np.broadcast_to(x, (3, 2, 4)))
    assert shape_of("Tile", ("N", 3), np.array([1, 2], np.int64)) == ("N", 6)
    np.testing.assert_array_equal(run_checked("Tile", x, np.array([2, 3], np.int64))[0], np.tile(x, (2, 3)))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_match_numpy(mode: str) -> None:
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    (got,) = run_checked("Pad", x, np.array([1, 2, 2, 1], np.int64), np.array(1.5, np.float32), mode=mode)
    kw = {"constant_values": 1.5} if mode == "constant" else {}
    np.testing.assert_array_equal(got, np.pad(x, [(1, 2), (2, 1)], mode=mode, **kw))


def test_pad_negative_pads_crop_and_axes_input() -> None:
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    (got,) = run_checked("Pad", x, np.array([-1, 2], np.int64), None, np.array([1], np.int64))
    np.testing.assert_array_equal(got, np.pad(x[:, 1:], [(0, 0), (0, 2)]))
    assert shape_of("Pad", ("N", 4), np.array([0, 1, 0, 1], np.int64)) == ("N", 6)
    with pytest.raises(ShapeError, match=r"\(Pad\): pads has 3 values"):
        shape_of("Pad", (3, 4), np.array([1, 1, 1], np.int64))
    with pytest.raises(UnsupportedOpError, match="mode 'mirror' is not supported"):
        shape_of("Pad", (3, 4), np.array([1, 1, 1, 1], np.int64), mode="mirror")


def test_center_crop_pad_odd_differences() -> None:
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    (got,) = run_checked("CenterCropPad", x, np.array([3, 8], np.int64))
    assert got.shape == (3, 8)
    np.testing.assert_array_equal(got[:, 1:6], x[0:3])  # crop keeps rows 0..2, pad puts 1 column before
    assert shape_of("CenterCropPad", ("N", 5, 6), np.array([4], np.int64), axes=(-1,)) == ("N", 5, 4)


# -- Shape / Size -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("start, end", [(0, None), (1, None), (-2, None), (0, -1), (5, None), (2, 1)])
def test_shape_start_end(start: int, end: int | None) -> None:
    x = np.zeros((2, 3, 4), np.float32)
    (got,) = run_checked("Shape", x, start=start, end=end)
    np.testing.assert_array_equal(got, np.array(x.shape[slice(start, end)], np.int64))
    assert shape_of("Shape", ("N", 3, 4), start=start, end=end) == (len(x.shape[slice(start, end)]),)


def test_size() -> None:
    (got,) = run_checked("Size", np.zeros((2, 3, 4), np.float32))
    assert got.dtype == np.int64 and got.shape == () and got == 24
