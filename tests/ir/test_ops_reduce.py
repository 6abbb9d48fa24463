"""IR reduce ops (quantgraph/ir/ops/reduce.py): inference with constant/unknown axes, errors, references vs numpy."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.reduce import REDUCERS
from quantgraph.ir.ops.registry import ref

# independent float64 formulas for each op (keepdims=True)
NUMPY: dict[str, Callable[[np.ndarray, tuple], np.ndarray]] = {
    "ReduceSum": lambda x, a: np.sum(x, axis=a, keepdims=True),
    "ReduceMean": lambda x, a: np.mean(x, axis=a, keepdims=True),
    "ReduceProd": lambda x, a: np.prod(x, axis=a, keepdims=True),
    "ReduceMax": lambda x, a: np.max(x, axis=a, keepdims=True),
    "ReduceMin": lambda x, a: np.min(x, axis=a, keepdims=True),
    "ReduceL1": lambda x, a: np.sum(np.abs(x), axis=a, keepdims=True),
    "ReduceL2": lambda x, a: np.sqrt(np.sum(x ** 2, axis=a, keepdims=True)),
    "ReduceSumSquare": lambda x, a: np.sum(x ** 2, axis=a, keepdims=True),
    "ReduceLogSum": lambda x, a: np.log(np.sum(x, axis=a, keepdims=True)),
    "ReduceLogSumExp": lambda x, a: np.log(np.sum(np.exp(x), axis=a, keepdims=True)),
}
OPS = sorted(REDUCERS)


def test_table_covers_every_reduce_op() -> None:
    assert set(NUMPY) == set(REDUCERS)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("axes, keepdims", [((1,), 1), ((0, -1), 0), (None, 0), ((-2,), 0)])
def test_reference_matches_numpy(name: str, axes: tuple | None, keepdims: int) -> None:
    x = np.random.default_rng(3).uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)
    axes_arr = None if axes is None else np.array(axes, np.int64)
    got = ref(name, x, axes_arr, keepdims=keepdims)
    norm = tuple(range(3)) if axes is None else tuple(a % 3 for a in axes)
    want = NUMPY[name](x.astype(np.float64), norm)
    if not keepdims:
        want = np.squeeze(want, axis=norm)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("name", OPS)
def test_infer_constant_axes_symbolic_dims(name: str) -> None:
    g = Graph("t")
    x = g.add_input("x", ("N", None, 4), "float32")
    axes = g.add_const(np.array([-1], np.int64))
    assert g.info(g.add(name, [x, axes])).shape == ("N", None, 1)
    assert g.info(g.add(name, [x, axes], keepdims=0)).shape == ("N", None)
    assert g.info(g.add(name, [x], keepdims=0)).shape == ()
    assert g.info(g.add(name, [x], noop_with_empty_axes=1)).shape == ("N", None, 4)


def test_infer_data_dependent_axes() -> None:
    g = Graph("t")
    x = g.add_input("x", ("N", 3, 4), "float16")
    two = g.add_input("a2", (2,), "int64")
    assert g.info(g.add("ReduceMean", [x, two])).shape == (None, None, None)
    assert g.info(g.add("ReduceMean", [x, two], keepdims=0)).shape == (None,)
    some = g.add_input("ak", ("K",), "int64")
    assert g.info(g.add("ReduceMean", [x, some], keepdims=0)).shape is None
    assert g.info(g.add("ReduceMean", [g.add_input("u", None, "float32")])).shape is None


def test_axes_errors_name_node_and_op() -> None:
    g = Graph("t")
    x = g.add_input("x", (2, 3), "float32")
    with pytest.raises(ShapeError, match=r"'r' \(ReduceSum\): axes \(2,\) are out of range for input of rank 2"):
        g.add("ReduceSum", [x, g.add_const(np.array([2], np.int64))], name="r")
    with pytest.raises(ShapeError, match=r"\(ReduceMax\): axes \(1, -1\) repeat an axis"):
        g.add("ReduceMax", [x, g.add_const(np.array([1, -1], np.int64))])
    with pytest.raises(ShapeError, match=r"\(ReduceMin\): axes is float32; expected int64"):
        g.add("ReduceMin", [x, g.add_const(np.array([1], np.float32))])


@pytest.mark.parametrize("name, dtype, want", [
    ("ReduceSum", np.float32, 0.0), ("ReduceProd", np.float32, 1.0), ("ReduceMax", np.float32, -np.inf),
    ("ReduceMin", np.float32, np.inf), ("ReduceMax", np.int32, np.iinfo(np.int32).min),
    ("ReduceMin", np.uint8, 255), ("ReduceMax", np.bool_, False), ("ReduceLogSum", np.float32, -np.inf),
    ("ReduceLogSumExp", np.float32, -np.inf), ("ReduceL2", np.float32, 0.0), ("ReduceSumSquare", np.int64, 0),
])
def test_empty_set_gives_identity(name: str, dtype: type, want: float) -> None:
    x = np.zeros((2, 0, 3), dtype)
    got = ref(name, x, np.array([1], np.int64))
    assert got.shape == (2, 1, 3) and got.dtype == dtype
    np.testing.assert_array_equal(got, np.full((2, 1, 3), want, dtype))


def test_integer_and_half_dtypes_are_kept() -> None:
    x = np.array([[1, 2], [3, 4]], np.int32)
    got = ref("ReduceMean", x, np.array([0], np.int64), keepdims=0)
    assert got.dtype == np.int32 and got.tolist() == [2, 3]
    h = np.full(4096, 0.1, np.float16)  # sequential float16 accumulation would stall far below 409.6
    s = ref("ReduceSum", h, None, keepdims=0)
    assert s.dtype == np.float16 and abs(float(s) - 409.6) < 0.5


def test_log_sum_exp_is_stable_for_large_inputs() -> None:
    x = np.array([1000.0, 1000.0], np.float32)
    np.testing.assert_allclose(ref("ReduceLogSumExp", x, None, keepdims=0), 1000 + np.log(2), rtol=1e-6)


def test_noop_with_empty_axes_returns_input() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = ref("ReduceSum", x, np.array([], np.int64), noop_with_empty_axes=1)
    np.testing.assert_array_equal(got, x)
