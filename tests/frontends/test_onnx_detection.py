"""ONNX import of the detector/vision ops at the versions the conformance data does not cover (RoiAlign-10's
implicit output_half_pixel, GridSample-16's bilinear/bicubic names, NonMaxSuppression-10, MaxUnpool-9,
DeformConv-19), compared with onnxruntime or onnx's ReferenceEvaluator."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

import quantgraph

from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.importer import import_onnx
from tests.frontends.test_onnx_attention import compare_with, node_model

RNG = np.random.default_rng(14)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("opset, mode", [(10, "avg"), (10, "max"), (16, "avg")])
def test_roi_align_old_default_is_output_half_pixel(opset: int, mode: str) -> None:
    rois = np.array([[1, 2, 7.5, 8], [0, 0, 11, 9.5], [3.3, 1.1, 4, 2]], np.float32)
    feeds = {"X": _rand(2, 3, 10, 12), "rois": rois, "idx": np.array([1, 0, 1], np.int64)}
    model = node_model("RoiAlign", opset, feeds, ["Y"], mode=mode, output_height=3, output_width=4,
                       sampling_ratio=2, spatial_scale=0.9)
    want_mode = "output_half_pixel" if opset < 16 else "half_pixel"
    assert import_onnx(model).nodes[0].attrs["coordinate_transformation_mode"] == want_mode
    compare_with(model, feeds, "ort", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample16_old_mode_names(mode: str, padding: str) -> None:
    feeds = {"X": _rand(1, 2, 4, 5), "grid": RNG.uniform(-1.3, 1.3, (1, 3, 6, 2)).astype(np.float32)}
    model = node_model("GridSample", 16, feeds, ["Y"], mode=mode, padding_mode=padding, align_corners=0)
    if (mode, padding) != ("bicubic", "border"):
        compare_with(model, feeds, "ort", rtol=1e-4, atol=1e-5)
        return
    # NOTE: for bicubic + border onnxruntime clamps the coordinate to [0, size - 1] first (PyTorch's rule); the ONNX
    # reference, which the conformance data follows and so do we, only clamps coordinates outside [-0.5, size - 0.5].
    new = node_model("GridSample", 20, feeds, ["Y"], mode="cubic", padding_mode=padding, align_corners=0)
    want = compare_with(new, feeds)
    got = quantgraph.compile(model, opt_level=0)(*feeds.values())
    np.testing.assert_allclose(np.asarray(got).reshape(want[0].shape), want[0], rtol=1e-5, atol=1e-6)


def test_grid_sample16_rejects_new_mode_name() -> None:
    feeds = {"X": _rand(1, 2, 4, 5), "grid": _rand(1, 3, 6, 2)}
    with pytest.raises(UnsupportedOpError, match="mode 'cubic' is not supported; supported: bilinear, bicubic"):
        import_onnx(node_model("GridSample", 16, feeds, ["Y"], mode="cubic"))


@pytest.mark.parametrize("center", [0, 1])
def test_non_max_suppression10(center: int) -> None:
    boxes = RNG.uniform(0, 10, (2, 12, 4)).astype(np.float32)
    if center:
        boxes[..., 2:] = np.abs(boxes[..., 2:]) / 2 + 1  # widths and heights
    feeds = {"boxes": boxes, "scores": RNG.uniform(0, 1, (2, 3, 12)).astype(np.float32),
             "max_out": np.array([4], np.int64), "iou": np.array([0.3], np.float32),
             "score": np.array([0.2], np.float32)}
    model = node_model("NonMaxSuppression", 10, feeds, ["sel"], out_type=TensorProto.INT64, center_point_box=center)
    compare_with(model, feeds, "ort")


@pytest.mark.parametrize("with_shape", [False, True])
def test_max_unpool9(with_shape: bool) -> None:
    x = _rand(1, 2, 3, 3)
    idx = np.array([(c * 6 + 2 * i + i % 2) * 6 + 2 * j + j % 2 for c in range(2) for i in range(3)
                    for j in range(3)], np.int64).reshape(1, 2, 3, 3)  # one position per 2x2 window
    feeds = {"X": x, "I": idx}
    if with_shape:
        feeds["shape"] = np.array([1, 2, 7, 6], np.int64)
    compare_with(node_model("MaxUnpool", 9, feeds, ["Y"], kernel_shape=[2, 2], strides=[2, 2]), feeds)


def test_deform_conv19_with_mask_and_offset_groups() -> None:
    feeds = {"X": _rand(1, 4, 5, 6), "W": _rand(2, 2, 2, 2), "offset": _rand(1, 2 * 4 * 2, 5, 6),
             "B": _rand(2), "mask": RNG.uniform(0, 1, (1, 2 * 4, 5, 6)).astype(np.float32)}
    model = node_model("DeformConv", 19, feeds, ["Y"], group=2, offset_group=2, pads=[1, 0, 0, 1])
    compare_with(model, feeds, rtol=1e-4, atol=1e-5)
