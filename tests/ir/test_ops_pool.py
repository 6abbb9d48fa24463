"""IR pooling ops (quantgraph/ir/ops/pool.py): inference (ceil_mode, auto_pad, symbolic dims), errors, and the
strided-window references against per-pixel loops on tiny inputs."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir.dtypes import dtype_name
from quantgraph.ir.graph import Graph
from quantgraph.ir.interpreter import run
from quantgraph.ir.ops.registry import ref

RNG = np.random.default_rng(1)


def _infer(op: str, shape: Any, **attrs: Any) -> list:
    g = Graph("t")
    out = g.add(op, [g.add_input("x", shape, "float32")], name="pool_1", **attrs)
    return [g.info(t).shape for t in ((out,) if isinstance(out, str) else out)]


def _naive_pool(x: np.ndarray, kernel: tuple, strides: tuple, pads: tuple, dilations: tuple, out: tuple,
                kind: str, count_include_pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: gather the in-range taps (and, for averages with count_include_pad, the explicit pad
    taps as zeros) and reduce them. Returns (values, row-major flat argmax index for max)."""
    r = len(kernel)
    n, c = x.shape[:2]
    y = np.zeros((n, c) + out)
    idx = np.zeros((n, c) + out, dtype=np.int64)
    for o in itertools.product(*(range(d) for d in out)):
        vals, where, pad_count = [], [], 0
        for tap in itertools.product(*(range(k) for k in kernel)):
            pos = tuple(o[i] * strides[i] - pads[i] + tap[i] * dilations[i] for i in range(r))
            if all(0 <= pos[i] < x.shape[2 + i] for i in range(r)):
                vals.append(x[(slice(None), slice(None)) + pos])
                where.append(np.ravel_multi_index(pos, x.shape[2:]))
            elif all(-pads[i] <= pos[i] < x.shape[2 + i] + pads[r + i] for i in range(r)):
                pad_count += 1
        v = np.stack(vals, -1).astype(np.float64)
        if kind == "max":
            y[(slice(None), slice(None)) + o] = v.max(-1)
            idx[(slice(None), slice(None)) + o] = np.array(where)[v.argmax(-1)]
        elif kind == "avg":
            y[(slice(None), slice(None)) + o] = v.sum(-1) / (v.shape[-1] + pad_count * count_include_pad)
        else:
            y[(slice(None), slice(None)) + o] = np.sqrt((v ** 2).sum(-1))
    base = (np.arange(n * c) * int(np.prod(x.shape[2:]))).reshape((n, c) + (1,) * r)
    return y, idx + base


CASES = [  # kernel, strides, pads, dilations, ceil_mode, input spatial
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, (7, 6)),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1, (5, 5)),
    ((3,), (2,), (1, 0), (2,), 1, (8,)),
    ((2, 2, 2), (1, 2, 2), (0, 1, 0, 1, 0, 1), (1, 1, 1), 0, (3, 4, 5)),
]


@pytest.mark.parametrize("kind, op", [("max", "MaxPool"), ("avg", "AveragePool"), ("lp", "LpPool")])
@pytest.mark.parametrize("kernel, strides, pads, dilations, ceil_mode, spatial", CASES)
def test_pool_reference_matches_loops(kind: str, op: str, kernel: tuple, strides: tuple, pads: tuple,
                                      dilations: tuple, ceil_mode: int, spatial: tuple) -> None:
    x = RNG.standard_normal((2, 3) + spatial).astype(np.float32)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=ceil_mode)
    shapes = _infer(op, x.shape, **attrs)
    out = shapes[0][2:]
    want, want_idx = _naive_pool(x, kernel, strides, pads, dilations, out, kind)
    got = ref(op, x, **attrs)
    got_y = got[0] if isinstance(got, tuple) else got
    assert got_y.dtype == np.float32 and got_y.shape == want.shape
    np.testing.assert_allclose(got_y, want, rtol=1e-5, atol=1e-6)
    if op == "MaxPool":
        np.testing.assert_array_equal(_indices(x, **attrs), want_idx)


def _indices(x: np.ndarray, **attrs: Any) -> np.ndarray:
    """MaxPool's Indices output, run through the interpreter (ref() keeps only the node's first output)."""
    g = Graph("t")
    _, i = g.add("MaxPool", [g.add_input("x", x.shape, dtype_name(x))], outputs=2, **attrs)
    g.set_outputs([i])
    return run(g, {"x": x})[i]


def test_average_pool_count_include_pad() -> None:
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    attrs = dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=1)
    want = _naive_pool(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (3, 3), "avg", count_include_pad=1)[0]
    np.testing.assert_allclose(ref("AveragePool", x, **attrs), want, rtol=1e-5)
    # the corner window holds 4 real pixels of 9 taps: the two settings differ there by the factor 4/9
    excl = ref("AveragePool", x, **{**attrs, "count_include_pad": 0})
    np.testing.assert_allclose(want[0, :, 0, 0], excl[0, :, 0, 0] * 4 / 9, rtol=1e-5)


def test_max_pool_storage_order_column_major() -> None:
    x = np.array([[[[1, 9], [3, 4]]]], dtype=np.float32)  # max 9 at (h=0, w=1)
    # column-major flat index: h + w * H = 0 + 1 * 2
    assert _indices(x, kernel_shape=(2, 2), storage_order=1).ravel().tolist() == [2]


def test_max_pool_int8_pads_with_lowest_value() -> None:
    x = np.full((1, 1, 2, 2), -100, dtype=np.int8)
    y = ref("MaxPool", x, kernel_shape=(2, 2), pads=(1, 1, 1, 1))
    assert y.dtype == np.int8 and (y == -100).all()


def test_pool_infer_symbolic_ceil_and_auto_pad() -> None:
    assert _infer("MaxPool", ("N", 64, 112, 112), kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)) == [
        ("N", 64, 56, 56), ("N", 64, 56, 56)]
    assert _infer("AveragePool", (1, 1, 6, 6), kernel_shape=(3, 3), strides=(2, 2), ceil_mode=1)[0] == (1, 1, 3, 3)
    assert _infer("AveragePool", (1, 1, 6, 6), kernel_shape=(3, 3), strides=(2, 2))[0] == (1, 1, 2, 2)
    assert _infer("MaxPool", ("N", 3, "H", 9), kernel_shape=(2, 2), strides=(2, 2),
                  auto_pad="SAME_UPPER")[0] == ("N", 3, None, 5)
    assert _infer("LpPool", None, kernel_shape=(2, 2))[0] == (None, None, None, None)
    assert _infer("GlobalAveragePool", ("N", 8, 7, 7)) == [("N", 8, 1, 1)]
    assert _infer("GlobalMaxPool", ("N", 8, 5)) == [("N", 8, 1)]


def test_pool_errors_name_node_and_op() -> None:
    with pytest.raises(ShapeError, match=r"node 'pool_1' \(MaxPool\): X has shape \(1, 3, 8\) but kernel_shape"):
        _infer("MaxPool", (1, 3, 8), kernel_shape=(2, 2))
    with pytest.raises(ShapeError, match=r"\(AveragePool\): pads has 2 values"):
        _infer("AveragePool", (1, 3, 8, 8), kernel_shape=(2, 2), pads=(1, 1))
    with pytest.raises(ShapeError, match=r"\(GlobalAveragePool\): X has shape \(3,\)"):
        _infer("GlobalAveragePool", (3,))


@pytest.mark.parametrize("op, fn", [("GlobalAveragePool", np.mean), ("GlobalMaxPool", np.max),
                                    ("GlobalLpPool", lambda v, axis, keepdims: np.sqrt(
                                        np.sum(v * v, axis=axis, keepdims=keepdims)))])
def test_global_pools_match_numpy(op: str, fn: Any) -> None:
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    got = ref(op, x)
    assert got.dtype == np.float32 and got.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(got, fn(x.astype(np.float64), axis=(2, 3), keepdims=True), rtol=1e-5)
