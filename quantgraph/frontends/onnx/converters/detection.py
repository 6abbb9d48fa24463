"""ONNX converters: detector and vision ops (NonMaxSuppression, RoiAlign, GridSample, AffineGrid, DeformConv,
MaxUnpool, Col2Im).

Version notes:
* NonMaxSuppression-10/11, MaxUnpool-9/11/22, DeformConv-19/22 differ only in wording or types: one converter each.
* RoiAlign-10 has no ``coordinate_transformation_mode``; its behaviour is what 16 calls ``output_half_pixel``,
  so the old default is made explicit. 22 only widened the types.
* GridSample-16 spells the modes ``bilinear``/``bicubic`` (4-D only); 20 renamed them ``linear``/``cubic`` and
  allowed volumetric input. The IR op uses the new names.
"""
from __future__ import annotations

from typing import Any

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.detection import GRID_MODES, GRID_PADDINGS

#: GridSample-16 mode names -> the IR (ONNX-20) names
_OLD_GRID_MODES = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest"}


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values or ())


def _check(g: ConvertContext, attr: str, value: str, allowed: Any) -> str:
    if value not in allowed:
        raise g.unsupported(f"{attr} '{value}' is not supported; supported: {', '.join(allowed)}")
    return value


@onnx_op("NonMaxSuppression", since=10)
def NonMaxSuppression(g: ConvertContext, boxes: str, scores: str, max_output_boxes_per_class: str | None = None,
                      iou_threshold: str | None = None, score_threshold: str | None = None, *,
                      center_point_box: int = 0) -> str:
    return g.add("NonMaxSuppression", [boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold],
                 center_point_box=int(center_point_box))


@onnx_op("RoiAlign", since=10)
def RoiAlign(g: ConvertContext, X: str, rois: str, batch_indices: str, *,
             coordinate_transformation_mode: str | None = None, mode: str = "avg", output_height: int = 1,
             output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0) -> str:
    if coordinate_transformation_mode is None:
        coordinate_transformation_mode = "half_pixel" if g.opset >= 16 else "output_half_pixel"
    return g.add("RoiAlign", [X, rois, batch_indices],
                 coordinate_transformation_mode=_check(g, "coordinate_transformation_mode",
                                                       coordinate_transformation_mode,
                                                       ("half_pixel", "output_half_pixel")),
                 mode=_check(g, "mode", mode, ("avg", "max")), output_height=int(output_height),
                 output_width=int(output_width), sampling_ratio=int(sampling_ratio),
                 spatial_scale=float(spatial_scale))


@onnx_op("GridSample", since=16)
def GridSample(g: ConvertContext, X: str, grid: str, *, align_corners: int = 0, mode: str | None = None,
               padding_mode: str = "zeros") -> str:
    if g.opset < 20:
        mode = _OLD_GRID_MODES.get(_check(g, "mode", mode or "bilinear", tuple(_OLD_GRID_MODES)))
    return g.add("GridSample", [X, grid], align_corners=int(align_corners),
                 mode=_check(g, "mode", mode or "linear", GRID_MODES),
                 padding_mode=_check(g, "padding_mode", padding_mode, GRID_PADDINGS))


@onnx_op("AffineGrid", since=20)
def AffineGrid(g: ConvertContext, theta: str, size: str, *, align_corners: int = 0) -> str:
    return g.add("AffineGrid", [theta, size], align_corners=int(align_corners))


@onnx_op("DeformConv", since=19)
def DeformConv(g: ConvertContext, X: str, W: str, offset: str, B: str | None = None, mask: str | None = None, *,
               dilations: Any = None, group: int = 1, kernel_shape: Any = None, offset_group: int = 1,
               pads: Any = None, strides: Any = None) -> str:
    return g.add("DeformConv", [X, W, offset, B, mask], dilations=_ints(dilations), group=int(group),
                 kernel_shape=_ints(kernel_shape), offset_group=int(offset_group), pads=_ints(pads),
                 strides=_ints(strides))


@onnx_op("MaxUnpool", since=9)
def MaxUnpool(g: ConvertContext, X: str, I: str, output_shape: str | None = None, *,  # noqa: E741
              kernel_shape: Any = None, pads: Any = None, strides: Any = None) -> str:
    if not kernel_shape:
        raise g.error("kernel_shape is missing; MaxUnpool needs the pooling window")
    return g.add("MaxUnpool", [X, I, output_shape], kernel_shape=_ints(kernel_shape), pads=_ints(pads),
                 strides=_ints(strides))


@onnx_op("Col2Im", since=18)
def Col2Im(g: ConvertContext, input: str, image_shape: str, block_shape: str, *, dilations: Any = None,
           pads: Any = None, strides: Any = None) -> str:
    return g.add("Col2Im", [input, image_shape, block_shape], dilations=_ints(dilations), pads=_ints(pads),
                 strides=_ints(strides))
