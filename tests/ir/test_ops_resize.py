"""IR Resize / DepthToSpace / SpaceToDepth (quantgraph/ir/ops/resize.py): inference from constant scales/sizes,
references vs the ONNX reference evaluator on modes the conformance data leaves out, errors."""
from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import ref
from tests.ir.test_ops_shape import run_checked, shape_of

RNG = np.random.default_rng(2)
EMPTY = np.zeros(0, np.float32)


def onnx_resize(x: np.ndarray, scales: np.ndarray | None, sizes: np.ndarray | None, roi: np.ndarray | None = None,
                **attrs: object) -> np.ndarray:
    """The ONNX reference evaluator's Resize (opset 19) on the same inputs."""
    names = ["x", "roi" if roi is not None else "", "scales" if scales is not None else "",
             "sizes" if sizes is not None else ""]
    node = helper.make_node("Resize", names, ["y"], **attrs)
    feeds = {k: v for k, v in (("x", x), ("roi", roi), ("scales", scales), ("sizes", sizes)) if v is not None}
    graph = helper.make_graph([node], "t", [helper.make_tensor_value_info(
        k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, feeds)[0]


@pytest.mark.parametrize("attrs, scales, sizes", [
    ({"mode": "cubic", "antialias": 1, "exclude_outside": 1}, [1, 1, 0.6, 0.45], None),
    ({"mode": "linear", "antialias": 1, "coordinate_transformation_mode": "half_pixel_symmetric"},
     None, [1, 1, 3, 7]),
    ({"mode": "cubic", "coordinate_transformation_mode": "align_corners", "cubic_coeff_a": -0.5}, [1, 1, 1.7, 2.3],
     None),
    ({"mode": "nearest", "nearest_mode": "ceil", "coordinate_transformation_mode": "pytorch_half_pixel"},
     [1, 1, 0.5, 1.5], None),
    ({"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": "not_smaller"}, None, [9, 4]),
])
def test_reference_matches_onnx_evaluator(attrs: dict, scales: list | None, sizes: list | None) -> None:
    x = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    sc = None if scales is None else np.array(scales, np.float32)
    sz = None if sizes is None else np.array(sizes, np.int64)
    want = onnx_resize(x, sc, sz, **attrs)
    (got,) = run_checked("Resize", x, None, sc, sz, **attrs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_integer_input_rounds_and_saturates() -> None:
    x = np.array([[[[0, 255], [255, 0]]]], np.uint8)
    scales = np.array([1, 1, 1.5, 1.5], np.float32)
    got = ref("Resize", x, None, scales, mode="cubic")
    exact = ref("Resize", x.astype(np.float64), None, scales, mode="cubic")
    assert got.dtype == np.uint8 and exact.min() < 0 and exact.max() > 255  # cubic overshoots both ends
    np.testing.assert_array_equal(got, np.clip(np.round(exact), 0, 255))
    # The evaluator computes cubic weights in float32 (its attribute is a float32 scalar), so ties may round apart.
    want = onnx_resize(x, scales, None, mode="cubic")
    assert np.abs(got.astype(int) - want).max() <= 1


def test_inference_from_constant_scales_sizes_and_runtime_inputs() -> None:
    assert shape_of("Resize", ("N", 3, 7, 8), None, np.array([1, 1, 2.5, 0.5], np.float32)) == ("N", 3, 17, 4)
    assert shape_of("Resize", ("N", 3, 7, 8), None, None, np.array([14, 16], np.int64), axes=(2, 3)) == (
        "N", 3, 14, 16)
    assert shape_of("Resize", (1, 3, 10, 20), None, None, np.array([5, 5], np.int64), axes=(2, 3),
                    keep_aspect_ratio_policy="not_larger") == (1, 3, 3, 5)
    g = Graph("t")
    x = g.add_input("x", ("N", 3, 7, 8), "float32")
    s = g.add_input("s", (4,), "float32")
    assert g.info(g.add("Resize", [x, None, s])).shape == (None, None, None, None)


def test_errors() -> None:
    with pytest.raises(UnsupportedOpError, match=r"\(Resize\): mode 'area' is not supported"):
        shape_of("Resize", (1, 1, 2, 2), None, np.ones(4, np.float32), mode="area")
    with pytest.raises(ShapeError, match=r"\(Resize\): scales has 2 values for 4 axes"):
        shape_of("Resize", (1, 1, 2, 2), None, np.ones(2, np.float32))
    with pytest.raises(ShapeError, match="antialias=1 needs mode linear or cubic"):
        shape_of("Resize", (1, 1, 2, 2), None, np.ones(4, np.float32), antialias=1)


def test_large_bilinear_resize_is_vectorized() -> None:
    x = RNG.standard_normal((1, 64, 112, 112)).astype(np.float32)
    t0 = time.perf_counter()
    y = ref("Resize", x, None, np.array([1, 1, 2, 2], np.float32), mode="linear")
    assert y.shape == (1, 64, 224, 224)
    assert time.perf_counter() - t0 < 10  # a per-pixel Python loop would take minutes


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space_round_trip(mode: str) -> None:
    x = RNG.standard_normal((2, 8, 3, 5)).astype(np.float32)
    (y,) = run_checked("DepthToSpace", x, blocksize=2, mode=mode)
    assert y.shape == (2, 2, 6, 10)
    (back,) = run_checked("SpaceToDepth", y, blocksize=2, mode=mode)
    np.testing.assert_array_equal(back, x)
    assert shape_of("SpaceToDepth", ("N", 3, 4, 6), blocksize=2) == ("N", 12, 2, 3)
    with pytest.raises(ShapeError, match=r"\(DepthToSpace\): channels 6 is not divisible by 4"):
        shape_of("DepthToSpace", (1, 6, 2, 2), blocksize=2)
