"""Cleanup rules: no-op elimination, transpose/reshape cancellation, Sum -> Add (structure, numerics, refusals)."""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.rules.cleanup import RULES
from quantgraph.ir.builder import GraphBuilder
from tests.compiler.test_pattern import apply, assert_same_outputs, ops


def _one(rule_name: str, gb: GraphBuilder, y: str):
    return apply(gb.output(y).build(), RULES.only(rule_name))


def _x(shape=(2, 3, 4), name="x", dtype="float32"):
    gb = GraphBuilder("t")
    return gb, gb.input(name, shape, dtype)


def test_eliminate_identity() -> None:
    gb, x = _x()
    before, after, p = _one("eliminate_identity", gb, gb.op("Relu", gb.op("Identity", x)))
    assert ops(after) == ["Relu"] and p.counts == {"eliminate_identity": 1}
    assert_same_outputs(before, after)


def test_eliminate_dropout_and_refusals() -> None:
    gb, x = _x()
    before, after, p = _one("eliminate_dropout", gb, gb.op("Relu", gb.op("Dropout", x, outputs=1)[0]))
    assert ops(after) == ["Relu"] and p.counts == {"eliminate_dropout": 1}
    assert_same_outputs(before, after)
    gb, x = _x()
    tm = gb.input("tm", (), "bool")
    _, after, p = _one("eliminate_dropout", gb, gb.op("Relu", gb.op("Dropout", x, "", tm, outputs=1)[0]))
    assert "Dropout" in ops(after) and p.reasons("eliminate_dropout") == ["training_mode is not a constant"]
    gb, x = _x()
    tm = gb.const(np.array(True))
    _, after, p = _one("eliminate_dropout", gb, gb.op("Relu", gb.op("Dropout", x, "", tm, outputs=1)[0]))
    assert p.reasons("eliminate_dropout") == ["training_mode is true"]


def test_eliminate_noop_reshape_and_refusals() -> None:
    gb, x = _x()
    before, after, p = _one("eliminate_noop_reshape", gb,
                            gb.op("Relu", gb.op("Reshape", x, gb.const(np.array([2, 3, 4], np.int64)))))
    assert ops(after) == ["Relu"] and p.counts == {"eliminate_noop_reshape": 1}
    assert_same_outputs(before, after)
    gb, x = _x(("N", 3, 4))
    _, _, p = _one("eliminate_noop_reshape", gb, gb.op("Relu", gb.op("Reshape", x, gb.const(
        np.array([0, 3, 4], np.int64)))))
    assert p.reasons("eliminate_noop_reshape") == ["shapes are not static"]
    gb, x = _x()
    _, _, p = _one("eliminate_noop_reshape", gb, gb.op("Relu", gb.op("Reshape", x, gb.const(
        np.array([6, 4], np.int64)))))
    assert "changes the shape" in p.reasons("eliminate_noop_reshape")[0]


def test_eliminate_noop_transpose_and_refusal() -> None:
    gb, x = _x()
    before, after, p = _one("eliminate_noop_transpose", gb, gb.op("Relu", gb.op("Transpose", x, perm=(0, 1, 2))))
    assert ops(after) == ["Relu"]
    assert_same_outputs(before, after)
    gb, x = _x()
    _, _, p = _one("eliminate_noop_transpose", gb, gb.op("Relu", gb.op("Transpose", x, perm=(0, 2, 1))))
    assert "is not the identity" in p.reasons("eliminate_noop_transpose")[0]


def test_eliminate_noop_cast_and_refusal() -> None:
    gb, x = _x()
    before, after, p = _one("eliminate_noop_cast", gb, gb.op("Relu", gb.op("Cast", x, to="float32")))
    assert ops(after) == ["Relu"]
    assert_same_outputs(before, after)
    gb, x = _x()
    _, _, p = _one("eliminate_noop_cast", gb, gb.op("Relu", gb.op("Cast", x, to="float64")))
    assert "changes the dtype" in p.reasons("eliminate_noop_cast")[0]


def test_eliminate_noop_pad_and_refusal() -> None:
    gb, x = _x()
    before, after, p = _one("eliminate_noop_pad", gb, gb.op("Relu", gb.op("Pad", x, gb.const(np.zeros(6, np.int64)))))
    assert ops(after) == ["Relu"]
    assert_same_outputs(before, after)
    gb, x = _x()
    _, _, p = _one("eliminate_noop_pad", gb, gb.op("Relu", gb.op("Pad", x, gb.const(np.ones(6, np.int64)))))
    assert p.reasons("eliminate_noop_pad") == ["pads are not all zero"]


def _slice(gb, x, starts, ends, steps=None):
    i64 = lambda v: gb.const(np.array(v, np.int64))  # noqa: E731
    args = [x, i64(starts), i64(ends)] + ([i64([0, 1, 2]), i64(steps)] if steps is not None else [])
    return gb.op("Relu", gb.op("Slice", *args))


def test_eliminate_noop_slice_and_refusals() -> None:
    gb, x = _x()
    before, after, p = _one("eliminate_noop_slice", gb, _slice(gb, x, [0, 0, 0], [2, 3, 4]))
    assert ops(after) == ["Relu"]
    assert_same_outputs(before, after)
    gb, x = _x()
    _, _, p = _one("eliminate_noop_slice", gb, _slice(gb, x, [0, 0, 0], [2, 3, 2]))
    assert "changes the shape" in p.reasons("eliminate_noop_slice")[0]
    gb, x = _x()
    _, _, p = _one("eliminate_noop_slice", gb, _slice(gb, x, [-1, -1, -1], [-10, -10, -10], [-1, -1, -1]))
    assert p.reasons("eliminate_noop_slice") == ["steps are not all 1"]


def test_cancel_transposes_to_identity_and_to_one_transpose() -> None:
    gb, x = _x((2, 3, 4, 5))
    t = gb.op("Transpose", gb.op("Transpose", x, perm=(0, 2, 3, 1)), perm=(0, 3, 1, 2))
    before, after, p = _one("cancel_transposes", gb, gb.op("Relu", t))
    assert ops(after) == ["Relu"] and p.counts == {"cancel_transposes": 1}
    assert_same_outputs(before, after)
    gb, x = _x((2, 3, 4, 5))
    t = gb.op("Transpose", gb.op("Transpose", x, perm=(0, 2, 3, 1)), perm=(1, 0, 2, 3))
    before, after, p = _one("cancel_transposes", gb, gb.op("Relu", t))
    assert ops(after) == ["Transpose", "Relu"]
    assert_same_outputs(before, after)


def test_cancel_transposes_refuses_unknown_rank() -> None:
    gb, x = _x(None)
    t = gb.op("Transpose", gb.op("Transpose", x))
    _, _, p = _one("cancel_transposes", gb, gb.op("Relu", t))
    assert p.reasons("cancel_transposes") == ["rank is unknown"]


def test_cancel_reshapes_and_refusal() -> None:
    gb, x = _x()
    r = gb.op("Reshape", gb.op("Flatten", x, axis=1), gb.const(np.array([4, 6], np.int64)))
    before, after, p = _one("cancel_reshapes", gb, gb.op("Relu", r))
    assert ops(after) == ["Reshape", "Relu"] and p.counts == {"cancel_reshapes": 1}
    assert_same_outputs(before, after)
    gb, x = _x(("N", 3, 4))
    s = gb.input("s", (2,), "int64")
    r = gb.op("Reshape", gb.op("Flatten", x, axis=1), s)
    _, _, p = _one("cancel_reshapes", gb, gb.op("Relu", r))
    assert "not constant" in p.reasons("cancel_reshapes")[0]


def test_sum_to_add() -> None:
    gb, x = _x()
    y = gb.input("y", (2, 3, 4))
    before, after, p = _one("sum_to_add", gb, gb.op("Sum", x, y))
    assert ops(after) == ["Add"] and p.counts == {"sum_to_add": 1}
    assert_same_outputs(before, after)


def test_eliminate_dropout_refuses_an_empty_training_mode() -> None:
    gb, x = _x()
    tm = gb.const(np.zeros(0, bool))  # odd constant: crashed reading its first value
    _, after, p = _one("eliminate_dropout", gb, gb.op("Relu", gb.op("Dropout", x, "", tm, outputs=1)[0]))
    assert "Dropout" in ops(after)
    assert p.reasons("eliminate_dropout") == ["training_mode has 0 values; expected a scalar"]
