"""IR ops of quantgraph/ir/ops/misc.py: inference (symbolic/unknown dims, constant shapes), errors, references."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import get_op, ref


def _graph() -> Graph:
    return Graph("t")


def _info(g: Graph, t: str) -> tuple:
    i = g.info(t)
    return i.shape, i.dtype


# -- Identity / Dropout ------------------------------------------------------------------------------------------

def test_identity_keeps_symbolic_dims() -> None:
    g = _graph()
    x = g.add_input("x", ("N", None, 3), "float16")
    assert _info(g, g.add("Identity", [x])) == (("N", None, 3), "float16")


def test_dropout_inference_passes_input_and_all_true_mask() -> None:
    g = _graph()
    x = g.add_input("x", ("N", 4), "float32")
    y, mask = g.add("Dropout", [x])
    assert _info(g, y) == (("N", 4), "float32") and _info(g, mask) == (("N", 4), "bool")
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    out, m = ref("Dropout", data, np.array(0.3, np.float32), np.array(False))
    np.testing.assert_array_equal(out, data)
    assert m.dtype == np.bool_ and m.all()


def test_dropout_runtime_training_mode_scales_kept_values_reproducibly() -> None:
    x = np.ones((4, 50), np.float32)
    out, mask = ref("Dropout", x, np.array(0.75, np.float32), np.array(True), seed=3)
    assert 0 < mask.sum() < mask.size  # some dropped, some kept
    np.testing.assert_allclose(out, np.where(mask, 4.0, 0.0))
    again, _ = ref("Dropout", x, np.array(0.75, np.float32), np.array(True), seed=3)
    np.testing.assert_array_equal(out, again)


def test_dropout_ratio_out_of_range() -> None:
    g = _graph()
    x = g.add_input("x", (2,), "float32")
    with pytest.raises(ShapeError, match=r"'drop' \(Dropout\): ratio is 1.0; expected 0 <= ratio < 1"):
        g.add("Dropout", [x, g.add_const(np.array(1.0, np.float32))], name="drop")


# -- Cast --------------------------------------------------------------------------------------------------------

def test_cast_infer_and_bad_target() -> None:
    g = _graph()
    x = g.add_input("x", ("N", 2), "float32")
    assert _info(g, g.add("Cast", [x], to="int8")) == (("N", 2), "int8")
    with pytest.raises(ShapeError, match=r"'c' \(Cast\): to is 'float8'"):
        g.add("Cast", [x], to="float8", name="c")


def test_cast_strings_both_ways() -> None:
    text = ref("Cast", np.array([1.5, -np.inf, np.nan, 3.0], np.float32), to="string")
    assert text.dtype == object and list(text) == ["1.5", "-INF", "NaN", "3.0"]
    back = ref("Cast", np.array(["1e-3", "INF", "-2"], dtype=object), to="float32")
    np.testing.assert_array_equal(back, np.array([1e-3, np.inf, -2], np.float32))
    assert list(ref("Cast", np.array(["7", "-3"], dtype=object), to="int64")) == [7, -3]
    assert list(ref("Cast", np.array([0, 2, -1], np.int32), to="string")) == ["0", "2", "-1"]


def test_cast_bool_and_bfloat16() -> None:
    np.testing.assert_array_equal(ref("Cast", np.array([0.0, 0.5, -2.0], np.float32), to="bool"), [False, True, True])
    b = ref("Cast", np.array([1.0, 2.5], np.float32), to="bfloat16")
    assert b.dtype.name == "bfloat16" and ref("Cast", b, to="float32").tolist() == [1.0, 2.5]


# -- ConstantOfShape, Range, EyeLike -----------------------------------------------------------------------------

def test_constant_of_shape_exact_from_constant_shape() -> None:
    g = _graph()
    s = g.add_const(np.array([2, 3], np.int64))
    y = g.add("ConstantOfShape", [s], value=np.array([7], np.int32))
    assert _info(g, y) == ((2, 3), "int32")
    np.testing.assert_array_equal(ref("ConstantOfShape", np.array([2, 1], np.int64)), np.zeros((2, 1), np.float32))


def test_constant_of_shape_unknown_shape_input() -> None:
    g = _graph()
    s3 = g.add_input("s3", (3,), "int64")
    assert _info(g, g.add("ConstantOfShape", [s3])) == ((None, None, None), "float32")
    sn = g.add_input("sn", ("K",), "int64")
    assert g.info(g.add("ConstantOfShape", [sn])).shape is None
    with pytest.raises(ShapeError, match=r"\(ConstantOfShape\): value has 2 elements"):
        g.add("ConstantOfShape", [s3], value=np.array([1, 2], np.int64))


def test_range_constant_length_and_unknown() -> None:
    g = _graph()
    c = lambda v: g.add_const(np.array(v, np.float32))  # noqa: E731
    assert _info(g, g.add("Range", [c(1), c(2), c(0.25)])) == ((4,), "float32")
    lim = g.add_input("lim", (), "float32")
    assert g.info(g.add("Range", [c(0), lim, c(1)])).shape == (None,)
    with pytest.raises(ShapeError, match=r"\(Range\): delta is 0"):
        g.add("Range", [c(0), c(3), c(0)])
    with pytest.raises(ShapeError, match=r"\(Range\): limit is int64 but start is float32"):
        g.add("Range", [c(0), g.add_const(np.array(3, np.int64)), c(1)])
    np.testing.assert_array_equal(ref("Range", np.int32(10), np.int32(4), np.int32(-3)), np.array([10, 7], np.int32))


def test_eye_like_dtype_and_rank_error() -> None:
    g = _graph()
    x = g.add_input("x", ("N", 4), "int32")
    assert _info(g, g.add("EyeLike", [x], dtype="float32")) == (("N", 4), "float32")
    np.testing.assert_array_equal(ref("EyeLike", np.zeros((2, 3), np.int32), k=1),
                                  np.array([[0, 1, 0], [0, 0, 1]], np.int32))
    with pytest.raises(ShapeError, match=r"\(EyeLike\): input has shape \(2, 2, 2\)"):
        g.add("EyeLike", [g.add_input("x3", (2, 2, 2), "float32")])


# -- ArgMax / ArgMin / TopK ------------------------------------------------------------------------------------

def test_argmax_infer_and_axis_error() -> None:
    g = _graph()
    x = g.add_input("x", ("N", 5, None), "float32")
    assert _info(g, g.add("ArgMax", [x], axis=1)) == (("N", 1, None), "int64")
    assert g.info(g.add("ArgMin", [x], axis=-1, keepdims=0)).shape == ("N", 5)
    with pytest.raises(ShapeError, match=r"'am' \(ArgMax\): axis 3 is out of range for input of rank 3"):
        g.add("ArgMax", [x], axis=3, name="am")


def test_arg_select_last_index() -> None:
    x = np.array([[2, 5, 5, 1], [1, 1, 0, 0]], np.float32)
    assert ref("ArgMax", x, axis=1, keepdims=0).tolist() == [1, 0]
    assert ref("ArgMax", x, axis=1, keepdims=0, select_last_index=1).tolist() == [2, 1]
    assert ref("ArgMin", x, axis=1, select_last_index=1).tolist() == [[3], [3]]


def test_topk_infer_constant_and_unknown_k() -> None:
    g = _graph()
    x = g.add_input("x", ("N", 6), "float32")
    v, i = g.add("TopK", [x, g.add_const(np.array([2], np.int64))])
    assert _info(g, v) == (("N", 2), "float32") and _info(g, i) == (("N", 2), "int64")
    v2, _ = g.add("TopK", [x, g.add_input("k", (1,), "int64")], axis=0)
    assert g.info(v2).shape == (None, 6)
    with pytest.raises(ShapeError, match=r"\(TopK\): K is 7 but axis 1 has 6 elements"):
        g.add("TopK", [x, g.add_const(np.array([7], np.int64))])


def test_topk_ties_take_lower_index_first() -> None:
    x = np.array([1, 3, 3, 2, 3], np.uint8)
    v, i = ref("TopK", x, np.array([3], np.int64))
    assert v.tolist() == [3, 3, 3] and i.tolist() == [1, 2, 4]
    v, i = ref("TopK", x, np.array([2], np.int64), largest=0)
    assert v.tolist() == [1, 2] and i.tolist() == [0, 3]


# -- CumSum / CumProd / OneHot ---------------------------------------------------------------------------------

def test_cumsum_cumprod_flags() -> None:
    x = np.array([1, 2, 3], np.int32)
    ax = np.array(0, np.int64)
    assert ref("CumSum", x, ax).tolist() == [1, 3, 6]
    assert ref("CumSum", x, ax, exclusive=1, reverse=1).tolist() == [5, 3, 0]
    assert ref("CumProd", x, ax, exclusive=1).tolist() == [1, 1, 2]
    assert ref("CumProd", x, ax, reverse=1).dtype == np.int32


def test_cumsum_axis_error() -> None:
    g = _graph()
    x = g.add_input("x", (2, 3), "float32")
    with pytest.raises(ShapeError, match=r"\(CumSum\): axis 2 is out of range"):
        g.add("CumSum", [x, g.add_const(np.array(2, np.int64))])


def test_one_hot_infer_and_negative_indices() -> None:
    g = _graph()
    idx = g.add_input("i", ("N", 2), "int64")
    vals = g.add_const(np.array([0, 5], np.float32))
    y = g.add("OneHot", [idx, g.add_const(np.array(4, np.int64)), vals], axis=1)
    assert _info(g, y) == (("N", 4, 2), "float32")
    y2 = g.add("OneHot", [idx, g.add_input("d", (), "int64"), vals])
    assert g.info(y2).shape == ("N", 2, None)
    out = ref("OneHot", np.array([0, -1, 9]), np.array(3), np.array([0, 5], np.float32))
    np.testing.assert_array_equal(out, [[5, 0, 0], [0, 0, 5], [0, 0, 0]])


# -- Einsum / Det ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eq, shapes, want", [
    ("bij,bjk->bik", [("B", 2, 3), ("B", 3, 4)], ("B", 2, 4)),
    ("ij,jk", [(2, 3), (3, 5)], (2, 5)),                   # implicit output: labels used once, sorted
    ("...ij->...ji", [("N", 7, 2, 3)], ("N", 7, 3, 2)),
    ("i, i", [(None,), (4,)], ()),
    ("ii->i", [(3, 3)], (3,)),
])
def test_einsum_infer(eq: str, shapes: list, want: tuple) -> None:
    g = _graph()
    xs = [g.add_input(f"x{i}", s, "float32") for i, s in enumerate(shapes)]
    assert g.info(g.add("Einsum", xs, equation=eq)).shape == want


def test_einsum_errors_and_reference() -> None:
    g = _graph()
    a, b = g.add_input("a", (2, 3), "float32"), g.add_input("b", (4, 5), "float32")
    with pytest.raises(ShapeError, match=r"'e' \(Einsum\): label 'j' has size 3 and 4"):
        g.add("Einsum", [a, b], equation="ij,jk->ik", name="e")
    with pytest.raises(ShapeError, match=r"\(Einsum\): equation 'ij->i' has 1 operand\(s\) but the node has 2"):
        g.add("Einsum", [a, b], equation="ij->i")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(ref("Einsum", x, equation="ij->j"), np.array([3, 5, 7], np.float32))


def test_det_infer_reference_and_error() -> None:
    g = _graph()
    x = g.add_input("x", ("N", 3, 3), "float32")
    assert _info(g, g.add("Det", [x])) == (("N",), "float32")
    with pytest.raises(ShapeError, match=r"\(Det\): X has shape \(2, 3\); Det expects square"):
        g.add("Det", [g.add_input("y", (2, 3), "float32")])
    d = ref("Det", np.array([[2, 1], [1, 3]], np.float16))
    assert d.dtype == np.float16 and float(d) == 5.0


# -- sweep: inference agrees with the reference on random inputs -------------------------------------------------

_SWEEP = [
    ("Identity", [np.ones((2, 3), np.float32)], {}),
    ("Dropout", [np.ones((2, 3), np.float32)], {}),
    ("Cast", [np.ones((2, 3), np.float32)], {"to": "uint8"}),
    ("ConstantOfShape", [np.array([3, 2], np.int64)], {"value": np.array([1.0])}),
    ("Range", [np.float16(0), np.float16(3), np.float16(0.5)], {}),
    ("EyeLike", [np.ones((3, 2), np.float32)], {"k": -1}),
    ("ArgMin", [np.random.default_rng(0).random((3, 4))], {"axis": 1, "keepdims": 0}),
    ("TopK", [np.random.default_rng(1).random((3, 5)).astype(np.float32), np.array([2], np.int64)], {"axis": 0}),
    ("CumProd", [np.ones((2, 3), np.float64), np.array(-1, np.int64)], {}),
    ("OneHot", [np.array([[1, 2]], np.int32), np.array([3], np.float32), np.array([1, 2], np.int8)], {"axis": 0}),
    ("Einsum", [np.ones((2, 3), np.float32), np.ones((3,), np.float32)], {"equation": "ij,j->i"}),
    ("Det", [np.eye(3, dtype=np.float64)[None]], {}),
]


@pytest.mark.parametrize("name, arrays, attrs", _SWEEP, ids=[s[0] for s in _SWEEP])
def test_infer_matches_reference(name: str, arrays: list, attrs: dict) -> None:
    g = _graph()
    ins = [g.add_const(a) for a in arrays]
    outs = g.add(name, ins, **attrs)
    outs = [outs] if isinstance(outs, str) else list(outs)
    got = ref(name, *arrays, **attrs)
    got = [got] if isinstance(got, np.ndarray) else list(got)
    for t, value in zip(outs, got):
        assert g.info(t).shape == value.shape and g.info(t).dtype == str(value.dtype), (t, value.shape, value.dtype)


def test_every_misc_op_has_infer_and_reference() -> None:
    for name in ("Identity", "Dropout", "Cast", "ConstantOfShape", "Range", "EyeLike", "ArgMax", "ArgMin", "TopK",
                 "CumSum", "CumProd", "OneHot", "Einsum", "Det"):
        d = get_op(name)
        assert d.has_infer and d.has_reference, name
