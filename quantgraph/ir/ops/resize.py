"""Spatial resampling and rearrangement: Resize, DepthToSpace, SpaceToDepth.

Resize is separable: an N-d resize is one 1-D resize per axis. Along one axis every output position reads a few
input taps (1 for nearest, 2 for linear, 4 for cubic, more when antialiasing a downscale) with weights from the
interpolation kernel; taps beyond the edge are clamped (edge padding). This is the formulation the ONNX reference
uses, so results match it bit for bit in float64 before the cast back to the input dtype.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import REQUIRED, Fusion, op
from quantgraph.ir.ops.shape import axes_of, const_ints
from quantgraph.ir.shapes import Dim, format_shape
from quantgraph.ir.tensor import TensorInfo, TensorType

MODES = ("nearest", "linear", "cubic")
COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")

resize = op("Resize", inputs="X roi? scales? sizes?", outputs="Y", fusion=Fusion.INJECTIVE, attrs={
    "antialias": 0, "axes": None, "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
    "exclude_outside": 0, "extrapolation_value": 0.0, "keep_aspect_ratio_policy": "stretch", "mode": "nearest",
    "nearest_mode": "round_prefer_floor"})


def _check_attrs(n: Node) -> None:
    a = n.attrs
    for key, allowed in (("mode", MODES), ("coordinate_transformation_mode", COORD_MODES),
                         ("nearest_mode", NEAREST_MODES), ("keep_aspect_ratio_policy", ASPECT_POLICIES)):
        if a[key] not in allowed:
            raise n.unsupported(f"{key} '{a[key]}' is not supported; supported: {', '.join(allowed)}")
    if a["antialias"] and a["mode"] == "nearest":
        raise n.error("antialias=1 needs mode linear or cubic; nearest has no antialiasing filter")


def _plan(n: Node, in_shape: Sequence[Dim], scales: Sequence[float] | None,
          sizes: Sequence[int] | None) -> tuple[list[int], list[float | None], list[Dim]]:
    """The resized axes, the scale per axis (None for untouched axes) and the output shape."""
    rank = len(in_shape)
    axes = axes_of(n, n.attrs["axes"], rank) if n.attrs["axes"] is not None else list(range(rank))
    given = scales if scales is not None else sizes
    if given is None:
        raise n.error("exactly one of scales and sizes must be given; got neither")
    if len(given) != len(axes):
        raise n.error(f"{'scales' if scales is not None else 'sizes'} has {len(given)} values for {len(axes)} "
                      f"axes; expected one per resized axis")
    out: list[Dim] = list(in_shape)
    factor: list[float | None] = [None] * rank
    if scales is not None:
        for a, s in zip(axes, scales):
            if s <= 0:
                raise n.error(f"scales {tuple(scales)} must be positive")
            factor[a] = float(s)
            d = in_shape[a]
            out[a] = math.floor(float(s) * d) if isinstance(d, int) else (d if s == 1 else None)
        return axes, factor, out
    if not all(isinstance(in_shape[a], int) for a in axes):
        stretch = n.attrs["keep_aspect_ratio_policy"] == "stretch"
        for a, s in zip(axes, sizes):  # type: ignore[arg-type]
            out[a] = s if stretch else None
        return axes, factor, out  # scales are known only at run time (they divide by the input size)
    ratios = [s / in_shape[a] for a, s in zip(axes, sizes)]  # type: ignore[arg-type, operator]
    policy = n.attrs["keep_aspect_ratio_policy"]
    if policy != "stretch":
        common = min(ratios) if policy == "not_larger" else max(ratios)
        ratios = [common] * len(axes)
        sizes = [int(common * in_shape[a] + 0.5) for a in axes]  # type: ignore[operator]  # round half up
    for a, r, s in zip(axes, ratios, sizes):  # type: ignore[arg-type]
        factor[a], out[a] = r, s
    return axes, factor, out


def _floats(t: TensorInfo | np.ndarray | None) -> tuple[float, ...] | None:
    value = t.const if isinstance(t, TensorInfo) else t
    return None if value is None or value.size == 0 else tuple(float(v) for v in np.asarray(value).reshape(-1))


@resize.infer
def _(n: Node, x: TensorInfo, roi: TensorInfo | None, scales: TensorInfo | None,
      sizes: TensorInfo | None) -> TensorType:
    _check_attrs(n)
    if x.shape is None:
        return TensorType(None, x.dtype)
    s, z = _floats(scales), const_ints(sizes)
    runtime = (scales is not None and scales.const is None) or (sizes is not None and sizes.const is None)
    if runtime:
        axes = axes_of(n, n.attrs["axes"], len(x.shape)) if n.attrs["axes"] is not None else range(len(x.shape))
        return TensorType(tuple(None if i in axes else d for i, d in enumerate(x.shape)), x.dtype)
    if s is not None and z:
        raise n.error("both scales and sizes are given; exactly one may be")
    return TensorType(tuple(_plan(n, x.shape, s, z or None)[2]), x.dtype)


# -- per-axis taps ----------------------------------------------------------------------------------------------
def _source_coords(mode: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Where each output index samples the input, in input pixel coordinates."""
    y = np.arange(out_len, dtype=np.float64)
    length = scale * in_len  # the un-floored output length
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / length)
        return offset + (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if length != 1 else np.full(out_len, -0.5)
    if mode == "align_corners":
        return y * (in_len - 1) / (length - 1) if length != 1 else np.zeros(out_len)
    if mode == "asymmetric":
        return y / scale
    lo, hi = roi  # tf_crop_and_resize
    if length == 1:
        return np.full(out_len, (hi - lo) * (in_len - 1) / 2 + lo * (in_len - 1))
    return y * (hi - lo) * (in_len - 1) / (length - 1) + lo * (in_len - 1)


#: nearest_mode -> rounding of the source coordinate (ties go down for round_prefer_floor, up for _ceil)
_ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda v: np.ceil(v - 0.5), "round_prefer_ceil": lambda v: np.floor(v + 0.5),
    "floor": np.floor, "ceil": np.ceil,
}


def _coeffs(mode: str, ratio: np.ndarray, a: float) -> np.ndarray:
    """Weights (out, k) of the taps floor(x)+[0, 2) (linear) or floor(x)+[-1, 3) (cubic) for fractions ``ratio``.

    Written in the same closed forms as the ONNX reference so that values landing exactly on .5 round the same
    way when cast back to an integer dtype.
    """
    r = ratio[:, None]
    if mode == "linear":
        return np.concatenate([1 - r, r], axis=1)
    q = 1 - r
    return np.concatenate([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                           ((a + 2) * r - (a + 3)) * r * r + 1,
                           ((a + 2) * q - (a + 3)) * q * q + 1,
                           ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a], axis=1)


def _antialias_kernel(mode: str, d: np.ndarray, a: float) -> np.ndarray:
    """The widened filter at scaled distances ``d`` (triangle for linear, Keys cubic with parameter ``a``)."""
    d = np.abs(d)
    if mode == "linear":
        return np.clip(1 - d, 0, 1)
    d2, d3 = d * d, d * (d * d)
    near = (a + 2) * d3 - (a + 3) * d2 + 1
    far = a * d3 - 5 * a * d2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _row_sum(w: np.ndarray) -> np.ndarray:
    """Left-to-right sum of each row (numpy's pairwise sum would round differently from the reference)."""
    total = w[:, :1].copy()
    for k in range(1, w.shape[1]):
        total += w[:, k:k + 1]
    return total


def _taps(n: Node, x_src: np.ndarray, in_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Input indices (out, k) and weights (out, k) along one axis."""
    a = n.attrs
    if a["mode"] == "nearest":
        return _ROUNDING[a["nearest_mode"]](x_src).astype(np.int64)[:, None], np.ones((len(x_src), 1))
    # The left tap is floor(x), except that an exact integer x is treated as the right end of [x-1, x] (ratio 1),
    # as the ONNX reference does; the weights then put everything on x.
    base = np.floor(x_src)
    ratio = x_src - base
    exact = ratio == 0
    base, ratio = np.where(exact, base - 1, base), np.where(exact, 1.0, ratio)
    support = 1 if a["mode"] == "linear" else 2
    if a["antialias"]:  # widen the filter by 1/scale when downscaling, then normalize
        stretch = min(scale, 1.0)
        start = math.floor(-support / stretch) + 1
        offsets = np.arange(start, 2 - start)
        weights = _antialias_kernel(a["mode"], (offsets[None, :] - ratio[:, None]) * stretch, a["cubic_coeff_a"])
        weights = weights / _row_sum(weights)
    else:
        offsets = np.arange(1 - support, 1 + support)
        weights = _coeffs(a["mode"], ratio, a["cubic_coeff_a"])
    idx = base.astype(np.int64)[:, None] + offsets[None, :]
    if a["exclude_outside"]:
        weights = np.where((idx < 0) | (idx >= in_len), 0.0, weights)
        total = _row_sum(weights)
        weights = weights / np.where(total == 0, 1.0, total)
    return idx, weights


def _resize_axis(n: Node, data: np.ndarray, axis: int, out_len: int, scale: float,
                 roi: tuple[float, float]) -> np.ndarray:
    in_len = data.shape[axis]
    coord_mode = n.attrs["coordinate_transformation_mode"]
    x_src = _source_coords(coord_mode, out_len, in_len, scale, roi)
    idx, weights = _taps(n, x_src, in_len, scale)
    picked = np.take(data, np.clip(idx, 0, in_len - 1), axis=axis)  # (..., out, k, ...)
    if idx.shape[1] == 1:
        result = np.squeeze(picked, axis + 1)
    else:
        w = weights.reshape((1,) * axis + weights.shape + (1,) * (data.ndim - axis - 1))
        result = (picked * w).sum(axis=axis + 1)
    if coord_mode == "tf_crop_and_resize":
        outside = ((x_src < 0) | (x_src > in_len - 1)).reshape((1,) * axis + (-1,) + (1,) * (data.ndim - axis - 1))
        result = np.where(outside, n.attrs["extrapolation_value"], result)
    return result


def _cast_back(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and saturate into integer dtypes (as ONNX's saturate_cast); floats just cast."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(y), info.min, info.max).astype(dtype)
    return y.astype(dtype)


@resize.reference
def _(n: Node, x: np.ndarray, roi: np.ndarray | None, scales: np.ndarray | None,
      sizes: np.ndarray | None) -> np.ndarray:
    _check_attrs(n)
    s, z = _floats(scales), None if sizes is None or sizes.size == 0 else [int(v) for v in sizes.reshape(-1)]
    axes, factor, out_shape = _plan(n, x.shape, s, z)
    rois = _floats(roi)
    lin = n.attrs["mode"] != "nearest"
    y = x.astype(np.float64) if lin or n.attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" else x
    for i, a in enumerate(axes):
        box = (rois[i], rois[i + len(axes)]) if rois else (0.0, 1.0)
        if out_shape[a] == x.shape[a] and math.isclose(factor[a] or 0.0, 1.0) and box == (0.0, 1.0):
            continue  # identity along this axis
        y = _resize_axis(n, y, a, int(out_shape[a]), float(factor[a]), box)  # type: ignore[arg-type]
    return _cast_back(y, x.dtype) if y.dtype != x.dtype else y


# -- DepthToSpace / SpaceToDepth --------------------------------------------------------------------------------
BLOCK_MODES = ("DCR", "CRD")
depth_to_space = op("DepthToSpace", inputs="input", outputs="output", attrs={"blocksize": REQUIRED, "mode": "DCR"},
                    fusion=Fusion.INJECTIVE)
space_to_depth = op("SpaceToDepth", inputs="input", outputs="output", attrs={"blocksize": REQUIRED, "mode": "DCR"},
                    fusion=Fusion.INJECTIVE)


def _block_check(n: Node, x: TensorInfo) -> int:
    if n.attrs["mode"] not in BLOCK_MODES:
        raise n.unsupported(f"mode '{n.attrs['mode']}' is not supported; supported: DCR, CRD")
    if x.shape is not None and len(x.shape) != 4:
        raise n.error(f"input has shape {format_shape(x.shape)}; {n.op} expects 4-D (N, C, H, W)")
    bs = n.attrs["blocksize"]
    if bs < 1:
        raise n.error(f"blocksize {bs} must be positive")
    return bs


def _scaled(d: Dim, num: int, den: int, n: Node, what: str) -> Dim:
    if not isinstance(d, int):
        return None
    if (d * num) % den:
        raise n.error(f"{what} {d} is not divisible by {den}")
    return d * num // den


@depth_to_space.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    bs = _block_check(n, x)
    if x.shape is None:
        return TensorType(None, x.dtype)
    b, c, h, w = x.shape
    return TensorType((b, _scaled(c, 1, bs * bs, n, "channels"), _scaled(h, bs, 1, n, "height"),
                       _scaled(w, bs, 1, n, "width")), x.dtype)


@depth_to_space.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    bs = n.attrs["blocksize"]
    b, c, h, w = x.shape
    if n.attrs["mode"] == "DCR":
        t = x.reshape(b, bs, bs, c // bs ** 2, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(b, c // bs ** 2, bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return t.reshape(b, c // bs ** 2, h * bs, w * bs)


@space_to_depth.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    bs = _block_check(n, x)
    if x.shape is None:
        return TensorType(None, x.dtype)
    b, c, h, w = x.shape
    return TensorType((b, _scaled(c, bs * bs, 1, n, "channels"), _scaled(h, 1, bs, n, "height"),
                       _scaled(w, 1, bs, n, "width")), x.dtype)


@space_to_depth.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    bs = n.attrs["blocksize"]
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // bs, bs, w // bs, bs)
    # DCR puts the block offsets before the channel (inverse of DepthToSpace DCR); CRD after it.
    t = t.transpose(0, 3, 5, 1, 2, 4) if n.attrs["mode"] == "DCR" else t.transpose(0, 1, 3, 5, 2, 4)
    return t.reshape(b, c * bs * bs, h // bs, w // bs)
