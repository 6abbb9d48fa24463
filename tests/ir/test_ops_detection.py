"""IR detector/vision ops (quantgraph/ir/ops/detection.py): inference (symbolic dims, constant-driven shapes),
errors, and references against naive loops or identities (zero-offset DeformConv == Conv, identity AffineGrid
sampling == input, MaxUnpool inverts MaxPool)."""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import ref

RNG = np.random.default_rng(13)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _infer(op: str, *inputs: Any, **attrs: Any) -> Any:
    """Inputs: (shape, dtype) for a graph input, an array for a constant, None when omitted."""
    g = Graph("t")
    names = []
    for k, x in enumerate(inputs):
        if x is None:
            names.append(None)
        elif isinstance(x, np.ndarray):
            names.append(g.add_const(x))
        else:
            names.append(g.add_input(f"i{k}", *x))
    out = g.add(op, names, name="det_1", **attrs)
    return g.info(out if isinstance(out, str) else out[0])


F32, I64 = "float32", "int64"


# -- NonMaxSuppression ---------------------------------------------------------------------------------------------
def test_nms_selects_greedily_per_class_and_batch() -> None:
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3], [0, 2.05, 1, 3.05]]], dtype=np.float32)
    scores = np.array([[[0.9, 0.95, 0.3, 0.8], [0.1, 0.2, 0.7, 0.6]]], dtype=np.float32)
    got = ref("NonMaxSuppression", boxes, scores, np.array([3]), np.array([0.5], np.float32),
              np.array([0.25], np.float32))
    # class 0: box 1 beats its overlapping box 0, box 3 beats box 2; class 1: only boxes 2, 3 pass 0.25 and overlap
    np.testing.assert_array_equal(got, [[0, 0, 1], [0, 0, 3], [0, 1, 2]])
    assert ref("NonMaxSuppression", boxes, scores, None, None, None).shape == (0, 3)  # max boxes defaults to 0
    info = _infer("NonMaxSuppression", (("B", "N", 4), F32), (("B", 2, "N"), F32))
    assert (info.shape, info.dtype) == ((None, 3), "int64")
    with pytest.raises(ShapeError, match=r"node 'det_1' \(NonMaxSuppression\): boxes has shape \(1, 5, 5\)"):
        _infer("NonMaxSuppression", ((1, 5, 5), F32), ((1, 2, 5), F32))


# -- RoiAlign ------------------------------------------------------------------------------------------------------
def test_roi_align_on_linear_image_samples_bin_centres() -> None:
    # f(y, x) = 10 y + x is reproduced exactly by bilinear sampling, so each avg bin is f at the bin centre
    x = (10 * np.arange(8)[:, None] + np.arange(8)[None, :]).astype(np.float32)[None, None].repeat(2, 1)
    rois = np.array([[1, 1, 5, 3]], np.float32)  # x0, y0, x1, y1
    got = ref("RoiAlign", x, rois, np.array([0]), output_height=2, output_width=2, sampling_ratio=2,
              coordinate_transformation_mode="output_half_pixel")
    ys, xs = np.array([1.5, 2.5]), np.array([2.0, 4.0])
    np.testing.assert_allclose(got[0, 0], 10 * ys[:, None] + xs[None, :], rtol=1e-6)
    assert got.shape == (1, 2, 2, 2) and got.dtype == np.float32
    info = _infer("RoiAlign", (("N", 3, "H", "W"), F32), (("R", 4), F32), (("R",), I64), output_height=7,
                  output_width=5)
    assert info.shape == ("R", 3, 7, 5)
    with pytest.raises(UnsupportedOpError, match="mode 'sum' is not supported; supported: avg, max"):
        _infer("RoiAlign", ((1, 3, 4, 4), F32), ((1, 4), F32), ((1,), I64), mode="sum")


# -- GridSample / AffineGrid ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_identity_affine_grid_resamples_input_unchanged(mode: str) -> None:
    x = _rand(2, 3, 5, 6)
    theta = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
    grid = ref("AffineGrid", theta, np.array(x.shape), align_corners=1)
    assert grid.shape == (2, 5, 6, 2) and grid.dtype == np.float32
    y = ref("GridSample", x, grid, mode=mode, align_corners=1, padding_mode="border")
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_1_pixel_volume_against_naive_bilinear(padding: str) -> None:
    x = _rand(1, 1, 3, 4)
    grid = RNG.uniform(-1.6, 1.6, (1, 2, 5, 2)).astype(np.float32)
    got = ref("GridSample", x, grid, mode="linear", padding_mode=padding)

    def pixel(i: int, j: int) -> float:
        if padding == "zeros":
            return x[0, 0, i, j] if 0 <= i < 3 and 0 <= j < 4 else 0.0
        if padding == "border":
            return x[0, 0, min(max(i, 0), 2), min(max(j, 0), 3)]
        return x[0, 0, _reflect_index(i, 3), _reflect_index(j, 4)]

    for a, b in itertools.product(range(2), range(5)):
        gx, gy = grid[0, a, b]
        px, py = ((gx + 1) * 4 - 1) / 2, ((gy + 1) * 3 - 1) / 2  # align_corners=0
        if padding == "border":
            px, py = min(max(px, 0), 3), min(max(py, 0), 2)
        elif padding == "reflection":
            px, py = _reflect(px, -0.5, 3.5), _reflect(py, -0.5, 2.5)
        i0, j0 = int(np.floor(py)), int(np.floor(px))
        ty, tx = py - i0, px - j0
        want = sum(wy * wx * pixel(i0 + di, j0 + dj) for di, wy in ((0, 1 - ty), (1, ty))
                   for dj, wx in ((0, 1 - tx), (1, tx)))
        np.testing.assert_allclose(got[0, 0, a, b], want, rtol=1e-5, atol=1e-5)


def _reflect(v: float, lo: float, hi: float) -> float:
    while v < lo or v > hi:
        v = 2 * lo - v if v < lo else 2 * hi - v
    return v


def _reflect_index(i: int, size: int) -> int:
    return int(_reflect(float(i), -0.5, size - 0.5))


def test_grid_sample_and_affine_grid_inference() -> None:
    assert _infer("GridSample", (("N", 3, "H", "W"), F32), (("N", 7, 9, 2), F32)).shape == ("N", 3, 7, 9)
    with pytest.raises(ShapeError, match=r"\(GridSample\): grid has shape \(1, 7, 9, 3\); its last dim must be 2"):
        _infer("GridSample", ((1, 3, 4, 4), F32), ((1, 7, 9, 3), F32))
    assert _infer("AffineGrid", (("N", 3, 4), F32), np.array([2, 1, 4, 5, 6])).shape == (2, 4, 5, 6, 3)
    assert _infer("AffineGrid", (("N", 2, 3), F32), (("4",), I64)).shape == ("N", None, None, 2)
    with pytest.raises(ShapeError, match=r"theta has shape \(1, 2, 3\) but size \(1, 1, 4, 5, 6\) is 3-D"):
        _infer("AffineGrid", ((1, 2, 3), F32), np.array([1, 1, 4, 5, 6]))


# -- DeformConv ----------------------------------------------------------------------------------------------------
def test_deform_conv_zero_offsets_is_grouped_conv() -> None:
    x, w, b = _rand(2, 4, 6, 7), _rand(6, 2, 3, 2), _rand(6)
    attrs = {"strides": (2, 1), "pads": (1, 0, 1, 1), "dilations": (1, 2), "group": 2}
    oh, ow = (6 + 2 - 3) // 2 + 1, (7 + 1 - 3) // 1 + 1
    offset = np.zeros((2, 2 * 3 * 2 * 2, oh, ow), np.float32)
    got = ref("DeformConv", x, w, offset, b, None, offset_group=2, **attrs)
    np.testing.assert_allclose(got, ref("Conv", x, w, b, **attrs), rtol=1e-4, atol=1e-5)


def test_deform_conv_integer_offsets_and_mask_shift_the_taps() -> None:
    x, w = _rand(1, 1, 5, 5), _rand(1, 1, 1, 1)
    offset = np.zeros((1, 2, 5, 5), np.float32)
    offset[:, 0] = 1.0  # every tap reads one row down; the last row falls outside and reads zeros
    mask = np.full((1, 1, 5, 5), 0.5, np.float32)
    got = ref("DeformConv", x, w, offset, None, mask)
    want = 0.5 * w[0, 0, 0, 0] * np.concatenate([x[0, 0, 1:], np.zeros((1, 5), np.float32)])
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-6)


def test_deform_conv_inference_and_errors() -> None:
    info = _infer("DeformConv", (("N", 4, 8, 8), F32), ((6, 2, 3, 3), F32), (("N", 36, 6, 6), F32), None, None,
                  group=2, offset_group=2)
    assert info.shape == ("N", 6, 6, 6)
    with pytest.raises(ShapeError, match=r"\(DeformConv\): offset has shape \(1, 10, 6, 6\); expected 18 channels"):
        _infer("DeformConv", ((1, 4, 8, 8), F32), ((6, 4, 3, 3), F32), ((1, 10, 6, 6), F32))
    with pytest.raises(ShapeError, match=r"X has 4 channels but W \(6, 3, 3, 3\) with group 1 expects 3"):
        _infer("DeformConv", ((1, 4, 8, 8), F32), ((6, 3, 3, 3), F32), ((1, 18, 6, 6), F32))


# -- MaxUnpool / Col2Im --------------------------------------------------------------------------------------------
def test_max_unpool_inverts_max_pool_indices() -> None:
    x = _rand(2, 3, 4, 6)
    # 2x2/2 max pooling and its flat (N*C*H*W) argmax indices, as MaxPool's Indices output gives them
    win = x.reshape(2, 3, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 3, 4)
    y, arg = win.max(-1), win.argmax(-1)
    n, c, i, j = np.indices(y.shape)
    idx = ((n * 3 + c) * 4 + 2 * i + arg // 2) * 6 + 2 * j + arg % 2
    got = ref("MaxUnpool", y, idx, None, kernel_shape=(2, 2), strides=(2, 2))
    want = np.where(x == np.repeat(np.repeat(y, 2, 2), 2, 3), x, 0)
    np.testing.assert_array_equal(got, want)
    padded = ref("MaxUnpool", y, idx, np.array([2, 3, 5, 7]), kernel_shape=(2, 2), strides=(2, 2))
    assert padded.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(padded[:, :, :4, :6], want)


def test_max_unpool_inference() -> None:
    info = _infer("MaxUnpool", (("N", 3, 4, "W"), F32), (("N", 3, 4, "W"), I64), None, kernel_shape=(3, 3),
                  strides=(2, 2), pads=(1, 1, 0, 0))
    assert info.shape == ("N", 3, 8, None)  # (4 - 1) * 2 - 1 + 3
    assert _infer("MaxUnpool", ((1, 3, 2, 2), F32), ((1, 3, 2, 2), I64), np.array([1, 3, 5, 5]),
                  kernel_shape=(2, 2)).shape == (1, 3, 5, 5)
    assert _infer("MaxUnpool", ((1, 3, 2, 2), F32), ((1, 3, 2, 2), I64), ((4,), I64),
                  kernel_shape=(2, 2)).shape == (None,) * 4


def test_col2im_matches_naive_scatter() -> None:
    image, block, strides, pads, dil = (5, 6), (2, 3), (2, 1), (1, 0, 0, 1), (1, 2)
    nb = [(image[i] + pads[i] + pads[2 + i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(2)]
    x = _rand(2, 3 * 6, nb[0] * nb[1])
    got = ref("Col2Im", x, np.array(image), np.array(block), strides=strides, pads=pads, dilations=dil)
    want = np.zeros((2, 3) + image, np.float64)
    cols = x.reshape(2, 3, 2, 3, nb[0], nb[1])
    for ki, kj, bi, bj in itertools.product(range(2), range(3), range(nb[0]), range(nb[1])):
        i, j = bi * strides[0] - pads[0] + ki * dil[0], bj * strides[1] - pads[1] + kj * dil[1]
        if 0 <= i < image[0] and 0 <= j < image[1]:
            want[:, :, i, j] += cols[:, :, ki, kj, bi, bj]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_col2im_inference_and_errors() -> None:
    assert _infer("Col2Im", (("N", 12, 28), F32), np.array([5, 8]), np.array([2, 2])).shape == ("N", 3, 5, 8)
    assert _infer("Col2Im", (("N", 12, 28), F32), ((2,), I64), ((2,), I64)).shape == ("N", None, None, None)
    with pytest.raises(ShapeError, match=r"\(Col2Im\): input has 20 blocks; image_shape \(5, 8\)"):
        _infer("Col2Im", ((1, 12, 20), F32), np.array([5, 8]), np.array([2, 2]))
    with pytest.raises(ShapeError, match=r"input has 10 rows; expected a multiple of prod\(block_shape"):
        _infer("Col2Im", ((1, 10, 28), F32), np.array([5, 8]), np.array([2, 2]))
