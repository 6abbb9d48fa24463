"""IR nn ops (quantgraph/ir/ops/nn.py): Conv, ConvTranspose, Gemm, MatMul inference, errors and references
against direct-loop numpy twins on tiny shapes."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import ref

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _infer(op: str, inputs: list[tuple[Any, str] | np.ndarray | None], **attrs: Any) -> tuple:
    """Output shape of one node whose inputs are (shape, dtype) graph inputs or constants."""
    g = Graph("t")
    names: list[str | None] = []
    for i, spec in enumerate(inputs):
        if spec is None:
            names.append(None)
        elif isinstance(spec, np.ndarray):
            names.append(g.add_const(spec, name=f"c{i}"))
        else:
            names.append(g.add_input(f"in{i}", spec[0], spec[1]))
    out = g.add(op, names, name="node_1", **attrs)
    return g.info(out if isinstance(out, str) else out[0]).shape


def _naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: tuple, pads: tuple,
                dilations: tuple, group: int) -> np.ndarray:
    """Direct definition: y[n, m, o] = sum_{c, k} xpad[n, g*Cg + c, o*s + k*d] * w[m, c, k] (+ b[m])."""
    r = x.ndim - 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pads[i], pads[r + i]) for i in range(r)])
    m, cg = w.shape[:2]
    k = w.shape[2:]
    out = [(xp.shape[2 + i] - (k[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(r)]
    y = np.zeros((x.shape[0], m, *out))
    for oc in range(m):
        g0 = (oc // (m // group)) * cg
        for o in itertools.product(*(range(d) for d in out)):
            for tap in itertools.product(*(range(d) for d in k)):
                pos = tuple(o[i] * strides[i] + tap[i] * dilations[i] for i in range(r))
                y[(slice(None), oc) + o] += xp[(slice(None), slice(g0, g0 + cg)) + pos] @ w[(oc, slice(None)) + tap]
    if b is not None:
        y += b.reshape((1, -1) + (1,) * r)
    return y


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 3, 7), (4, 3, 3), {"strides": (2,), "pads": (1, 2)}),
    ((2, 4, 6, 5), (6, 2, 3, 2), {"group": 2, "dilations": (2, 1), "pads": (1, 0, 2, 1)}),
    ((1, 2, 4, 5, 4), (3, 2, 2, 3, 2), {"strides": (1, 2, 1), "pads": (0, 1, 1, 1, 0, 0)}),
    ((1, 4, 5, 5), (4, 1, 3, 3), {"group": 4, "strides": (2, 2), "pads": (1, 1, 1, 1)}),  # depthwise
])
def test_conv_reference_matches_direct_loops(x_shape: tuple, w_shape: tuple, attrs: dict) -> None:
    x, w, b = _rand(*x_shape), _rand(*w_shape), _rand(w_shape[0])
    r = len(x_shape) - 2
    got = ref("Conv", x, w, b, **attrs)
    want = _naive_conv(x, w, b, attrs.get("strides", (1,) * r), attrs.get("pads", (0,) * 2 * r),
                       attrs.get("dilations", (1,) * r), attrs.get("group", 1))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert _infer("Conv", [x, w, b], **attrs) == want.shape


def test_conv_infer_symbolic_batch_and_unknown_spatial() -> None:
    w = _rand(8, 3, 3, 3)
    assert _infer("Conv", [(("N", 3, 32, 32), "float32"), w], strides=(2, 2), pads=(1, 1, 1, 1)) == ("N", 8, 16, 16)
    assert _infer("Conv", [(("N", 3, "H", None), "float32"), w]) == ("N", 8, None, None)
    assert _infer("Conv", [(None, "float32"), w]) == (None, 8, None, None)


@pytest.mark.parametrize("auto_pad, want", [("SAME_UPPER", (4, 3)), ("SAME_LOWER", (4, 3)), ("VALID", (3, 2))])
def test_conv_auto_pad_resolved_in_infer_and_reference(auto_pad: str, want: tuple) -> None:
    x, w = _rand(1, 2, 7, 5), _rand(3, 2, 2, 2)
    assert _infer("Conv", [(x.shape, "float32"), w], auto_pad=auto_pad, strides=(2, 2))[2:] == want
    got = ref("Conv", x, w, None, auto_pad=auto_pad, strides=(2, 2))
    # SAME: total pad along H is (4-1)*2 + 2 - 7 = 1 -> at the end for UPPER, at the start for LOWER
    pads = {"SAME_UPPER": (0, 0, 1, 1), "SAME_LOWER": (1, 1, 0, 0), "VALID": (0, 0, 0, 0)}[auto_pad]
    np.testing.assert_allclose(got, _naive_conv(x, w, None, (2, 2), pads, (1, 1), 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, attrs, message", [
    ((1, 3, 8, 8), (4, 3, 3), {}, "W has shape (4, 3, 3); Conv expects equal ranks"),
    ((1, 3, 8, 8), (4, 2, 3, 3), {}, "X has 3 channels but W has shape (4, 2, 3, 3)"),
    ((1, 4, 8, 8), (3, 2, 3, 3), {"group": 2}, "not divisible by group 2"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"kernel_shape": (2, 2)}, "kernel_shape (2, 2) does not match"),
    ((1, 3, 2, 2), (4, 3, 3, 3), {}, "smaller than the window"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"strides": (1,)}, "strides has 1 values"),
])
def test_conv_errors_name_node_and_op(x_shape: tuple, w_shape: tuple, attrs: dict, message: str) -> None:
    with pytest.raises(ShapeError, match=r"node 'node_1' \(Conv\)") as err:
        _infer("Conv", [(x_shape, "float32"), _rand(*w_shape)], **attrs)
    assert message in str(err.value)


def test_conv_bias_size_checked() -> None:
    with pytest.raises(ShapeError, match="B has shape \\(5,\\); Conv expects a 1-D bias of 4 values"):
        _infer("Conv", [((1, 3, 8, 8), "float32"), _rand(4, 3, 3, 3), _rand(5)])


def _naive_conv_transpose(x: np.ndarray, w: np.ndarray, strides: tuple, dilations: tuple, group: int,
                          pads: tuple, extra: tuple) -> np.ndarray:
    """Scatter definition: each x[n, c, i] adds x * w[c, m, k] at output position i*s + k*d - pad_begin."""
    r = x.ndim - 2
    cg, mg = x.shape[1] // group, w.shape[1]
    full = [(x.shape[2 + i] - 1) * strides[i] + (w.shape[2 + i] - 1) * dilations[i] + 1 + extra[i] for i in range(r)]
    y = np.zeros((x.shape[0], mg * group, *full))
    for c in range(x.shape[1]):
        g0 = (c // cg) * mg
        for i in itertools.product(*(range(d) for d in x.shape[2:])):
            for tap in itertools.product(*(range(d) for d in w.shape[2:])):
                pos = tuple(i[a] * strides[a] + tap[a] * dilations[a] for a in range(r))
                y[(slice(None), slice(g0, g0 + mg)) + pos] += (
                    x[(slice(None), c) + i][:, None] * w[(c, slice(None)) + tap][None, :])
    crop = tuple(slice(pads[a], full[a] - pads[r + a]) for a in range(r))
    return y[(slice(None), slice(None)) + crop]


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 2, 4), (2, 3, 3), {"strides": (2,), "pads": (1, 0), "output_padding": (1,)}),
    ((2, 4, 3, 3), (4, 1, 2, 3), {"group": 2, "strides": (2, 1), "dilations": (1, 2), "pads": (0, 1, 1, 0)}),
    ((1, 1, 2, 2, 2), (1, 2, 2, 2, 2), {"strides": (2, 2, 2)}),
])
def test_conv_transpose_reference_matches_scatter(x_shape: tuple, w_shape: tuple, attrs: dict) -> None:
    x, w = _rand(*x_shape), _rand(*w_shape)
    r = len(x_shape) - 2
    got = ref("ConvTranspose", x, w, None, **attrs)
    want = _naive_conv_transpose(x, w, attrs.get("strides", (1,) * r), attrs.get("dilations", (1,) * r),
                                 attrs.get("group", 1), attrs.get("pads", (0,) * 2 * r),
                                 attrs.get("output_padding", (0,) * r))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert _infer("ConvTranspose", [x, w], **attrs) == want.shape


def test_conv_transpose_output_shape_and_same_pads() -> None:
    x, w = _rand(1, 2, 3, 3), _rand(2, 1, 3, 3)
    assert _infer("ConvTranspose", [(("N", 2, 3, 3), "float32"), w], strides=(2, 2),
                  output_shape=(7, 8)) == ("N", 1, 7, 8)
    assert _infer("ConvTranspose", [(("N", 2, 3, None), "float32"), w], strides=(2, 2),
                  auto_pad="SAME_UPPER") == ("N", 1, 6, None)
    y = ref("ConvTranspose", x, w, None, strides=(2, 2), auto_pad="SAME_UPPER")
    # full output is 7x7; SAME_UPPER trims 1 pixel at the end (total padding 1 -> begin 0, end 1)
    full = ref("ConvTranspose", x, w, None, strides=(2, 2))
    np.testing.assert_allclose(y, full[:, :, :6, :6], rtol=1e-6)


@pytest.mark.parametrize("trans_a, trans_b, c_shape", [(0, 0, (5,)), (1, 0, (3, 1)), (0, 1, ()), (1, 1, None)])
def test_gemm_reference_and_infer(trans_a: int, trans_b: int, c_shape: tuple | None) -> None:
    a = _rand(*((4, 3) if trans_a else (3, 4)))
    b = _rand(*((5, 4) if trans_b else (4, 5)))
    c = None if c_shape is None else _rand(*c_shape)
    got = ref("Gemm", a, b, c, alpha=0.5, beta=2.0, transA=trans_a, transB=trans_b)
    want = 0.5 * (a.T if trans_a else a) @ (b.T if trans_b else b) + (0 if c is None else 2.0 * c)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    assert _infer("Gemm", [a, b, c], transA=trans_a, transB=trans_b) == (3, 5)


def test_gemm_infer_symbolic_and_errors() -> None:
    assert _infer("Gemm", [(("N", 8), "float32"), _rand(10, 8), _rand(10)], transB=1) == ("N", 10)
    with pytest.raises(ShapeError, match=r"\(Gemm\): A is 2x8 but B is 7x10; Gemm expects inner dims to match"):
        _infer("Gemm", [((2, 8), "float32"), _rand(7, 10)])
    with pytest.raises(ShapeError, match="C has shape \\(3,\\); Gemm expects C to broadcast"):
        _infer("Gemm", [((2, 8), "float32"), _rand(8, 10), _rand(3)])
    with pytest.raises(ShapeError, match="A has shape \\(2, 2, 8\\); Gemm expects a 2-D matrix"):
        _infer("Gemm", [((2, 2, 8), "float32"), _rand(8, 10)])


@pytest.mark.parametrize("a_shape, b_shape", [((4,), (4,)), ((4,), (4, 3)), ((2, 3, 4), (4,)),
                                              ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (4, 6))])
def test_matmul_numpy_semantics(a_shape: tuple, b_shape: tuple) -> None:
    a, b = _rand(*a_shape), _rand(*b_shape)
    got = ref("MatMul", a, b)
    want = np.matmul(a.astype(np.float64), b)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert _infer("MatMul", [(a_shape, "float32"), b]) == want.shape


def test_matmul_infer_symbolic_and_errors() -> None:
    assert _infer("MatMul", [(("B", "S", 8), "float32"), _rand(8, 16)]) == ("B", "S", 16)
    assert _infer("MatMul", [(None, "float32"), _rand(8, 16)]) is None
    with pytest.raises(ShapeError, match=r"\(MatMul\): A has shape \(2, 3\) and B has shape \(4, 5\)"):
        _infer("MatMul", [((2, 3), "float32"), _rand(4, 5)])
    with pytest.raises(ShapeError, match="batch dims do not broadcast"):
        _infer("MatMul", [((2, 3, 4), "float32"), _rand(3, 4, 5)])
