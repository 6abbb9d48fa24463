"""ONNX converters: Resize, Upsample, DepthToSpace, SpaceToDepth (see quantgraph/ir/ops/resize.py).

Upsample (7..9) and Resize-10 predate coordinate_transformation_mode: they sample at ``x_out / scale`` and take the
floor for nearest, i.e. Resize with ``asymmetric`` coordinates and ``floor`` rounding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.resize import COORD_MODES, MODES, NEAREST_MODES

#: mode names of the pre-11 ops -> Resize modes ("bilinear" is Upsample-1's name for linear)
_OLD_MODES = {"nearest": "nearest", "linear": "linear", "bilinear": "linear"}


def _check(g: ConvertContext, what: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise g.unsupported(f"{what} '{value}' is not supported; supported: {', '.join(allowed)}")
    return value


def _legacy_resize(g: ConvertContext, X: str, scales: str, mode: str) -> str:
    mode = _OLD_MODES.get(mode, mode)
    return g.add("Resize", [X, None, scales], mode=_check(g, "mode", mode, ("nearest", "linear")),
                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@onnx_op("Upsample", since=7)
def Upsample_7(g: ConvertContext, X: str, *, mode: str = "nearest", scales: Sequence[float] | None = None) -> str:
    if scales is None:
        raise g.error("Upsample-7 needs the 'scales' attribute")
    return _legacy_resize(g, X, g.const(np.array(scales, dtype=np.float32), "float32"), mode)


@onnx_op("Upsample", since=9)
def Upsample(g: ConvertContext, X: str, scales: str, *, mode: str = "nearest") -> str:
    return _legacy_resize(g, X, scales, mode)


@onnx_op("Resize", since=10)
def Resize_10(g: ConvertContext, X: str, scales: str, *, mode: str = "nearest") -> str:
    return _legacy_resize(g, X, scales, mode)


@onnx_op("Resize", since=11)
def Resize(g: ConvertContext, X: str, roi: str | None = None, scales: str | None = None, sizes: str | None = None, *,
           antialias: int = 0, axes: Sequence[int] | None = None,
           coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
           exclude_outside: int = 0, extrapolation_value: float = 0.0, keep_aspect_ratio_policy: str = "stretch",
           mode: str = "nearest", nearest_mode: str = "round_prefer_floor") -> str:
    # Opsets 11/12 require roi and scales inputs even when sizes is used; an empty tensor means "not given".
    scales = None if scales and _empty(g, scales) else scales
    sizes = None if sizes and _empty(g, sizes) else sizes
    return g.add("Resize", [X, roi, scales, sizes], antialias=antialias, axes=axes,
                 coordinate_transformation_mode=_check(g, "coordinate_transformation_mode",
                                                       coordinate_transformation_mode, COORD_MODES),
                 cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside,
                 extrapolation_value=extrapolation_value, keep_aspect_ratio_policy=keep_aspect_ratio_policy,
                 mode=_check(g, "mode", mode, MODES), nearest_mode=_check(g, "nearest_mode", nearest_mode,
                                                                          NEAREST_MODES))


def _empty(g: ConvertContext, t: str) -> bool:
    shape = g.info(t).shape
    return shape is not None and 0 in shape


@onnx_op("DepthToSpace", since=1)
def DepthToSpace(g: ConvertContext, input: str, *, blocksize: int | None = None, mode: str = "DCR") -> str:
    return g.add("DepthToSpace", [input], blocksize=blocksize, mode=mode)


@onnx_op("SpaceToDepth", since=1)
def SpaceToDepth(g: ConvertContext, input: str, *, blocksize: int | None = None, mode: str = "DCR") -> str:
    return g.add("SpaceToDepth", [input], blocksize=blocksize, mode=mode)
