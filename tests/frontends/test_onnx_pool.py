"""ONNX import of the pooling ops at old opsets (7-10) and with options the conformance data leaves out,
compared with onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.importer import import_onnx
from tests.frontends.test_onnx_nn import compare, one_node_model

RNG = np.random.default_rng(5)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_max_pool_opset7_same_lower() -> None:
    model = one_node_model("MaxPool", 7, [1, 2, 7, 6], {}, ["X"], kernel_shape=[3, 2], strides=[2, 2],
                           auto_pad="SAME_LOWER")
    (pool,) = import_onnx(model).nodes
    assert pool.attrs["auto_pad"] == "NOTSET"
    compare(model, _x(1, 2, 7, 6))


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_opset8_indices(storage_order: int) -> None:
    model = one_node_model("MaxPool", 8, [2, 3, 5, 4], {}, ["X"], n_out=2, out_types={"Y1": TensorProto.INT64},
                           kernel_shape=[2, 2], strides=[2, 1], pads=[0, 1, 1, 0], storage_order=storage_order)
    compare(model, _x(2, 3, 5, 4))


def test_max_pool_opset10_ceil_mode_dilations() -> None:
    model = one_node_model("MaxPool", 10, [1, 1, 9, 9], {}, ["X"], kernel_shape=[2, 3], strides=[2, 2],
                           dilations=[2, 1], ceil_mode=1)
    compare(model, _x(1, 1, 9, 9))


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_opset7_count_include_pad(count_include_pad: int) -> None:
    model = one_node_model("AveragePool", 7, [1, 2, 6, 5], {}, ["X"], kernel_shape=[3, 3], strides=[2, 2],
                           pads=[1, 1, 2, 0], count_include_pad=count_include_pad)
    compare(model, _x(1, 2, 6, 5))


def test_average_pool_opset10_ceil_mode_1d() -> None:
    model = one_node_model("AveragePool", 10, [2, 3, 10], {}, ["X"], kernel_shape=[3], strides=[3], ceil_mode=1)
    assert compare(model, _x(2, 3, 10))[0].shape == (2, 3, 4)


def test_lp_pool_opset2_and_global_pools_opset7() -> None:
    compare(one_node_model("LpPool", 2, [1, 2, 5, 5], {}, ["X"], kernel_shape=[2, 2], p=3), _x(1, 2, 5, 5),
            reference=True)
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        compare(one_node_model(op, 7, ["N", 4, 3, 5], {}, ["X"]), _x(2, 4, 3, 5))


def test_unknown_auto_pad_fails_at_import() -> None:
    model = one_node_model("MaxPool", 11, [1, 1, 4, 4], {}, ["X"], kernel_shape=[2, 2], auto_pad="FULL")
    with pytest.raises(UnsupportedOpError, match="auto_pad 'FULL' is not supported"):
        import_onnx(model)
