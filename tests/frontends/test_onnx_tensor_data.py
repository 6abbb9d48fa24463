"""ONNX tensor data: initializers, Constant values and external data whose size does not match their dims fail
with an error naming the tensor, its dtype and dims, the bytes (or values) found and expected, and the file."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantgraph.errors import ModelLoadError
from quantgraph.frontends.onnx import load_onnx


def _conv_model(w: onnx.TensorProto) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "m",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weight(**fields) -> onnx.TensorProto:
    t = TensorProto(name="w", data_type=fields.pop("data_type", TensorProto.FLOAT), dims=[4, 3, 3, 3])
    for k, v in fields.items():
        if k == "raw_data":
            t.raw_data = v
        else:
            getattr(t, k).extend(v)
    return t


@pytest.mark.parametrize("n_bytes", [40, 436])
def test_raw_data_shorter_or_longer_than_its_dims(n_bytes: int) -> None:
    model = _conv_model(_weight(raw_data=bytes(n_bytes)))  # numpy said: cannot reshape array of size 10 ...
    with pytest.raises(ModelLoadError, match=rf"initializer 'w' \(float dims \(4, 3, 3, 3\)\) has {n_bytes} bytes of "
                                             rf"raw data; its dims and dtype need 432 bytes \(108 elements\)"):
        load_onnx(model)


def test_raw_data_error_names_the_model_file(tmp_path) -> None:
    path = tmp_path / "short.onnx"
    onnx.save(_conv_model(_weight(raw_data=bytes(40))), path)
    with pytest.raises(ModelLoadError, match=r"initializer 'w' .* has 40 bytes of raw data \(from '.*short.onnx'\)"):
        load_onnx(path)


@pytest.mark.parametrize("data_type, field, n", [(TensorProto.FLOAT, "float_data", 10),
                                                 (TensorProto.INT8, "int32_data", 107),
                                                 (TensorProto.INT64, "int64_data", 109),
                                                 (TensorProto.DOUBLE, "double_data", 0)])
def test_typed_data_with_the_wrong_number_of_values(data_type: int, field: str, n: int) -> None:
    t = _weight(data_type=data_type, **{field: [1] * n})
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "m", [],
                              [helper.make_tensor_value_info("y", data_type, None)], [t])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    name = onnx.helper.tensor_dtype_to_string(data_type).split(".")[-1].lower()
    with pytest.raises(ModelLoadError, match=rf"initializer 'w' \({name} dims \(4, 3, 3, 3\)\) has {n} values in "
                                             rf"{field}; its dims need 108"):
        load_onnx(model)


def test_constant_node_value_with_short_data_names_the_node() -> None:
    value = TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[2, 3], raw_data=bytes(8))
    graph = helper.make_graph([helper.make_node("Constant", [], ["y"], name="const_7", value=value)], "m", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match=r"node 'const_7' \(Constant\): attribute 'value' \(float dims \(2, 3\)\) "
                                             r"has 8 bytes of raw data; its dims and dtype need 24 bytes"):
        load_onnx(model)


def _save_external(tmp_path) -> tuple[str, np.ndarray]:
    w = np.arange(108, dtype=np.float32).reshape(4, 3, 3, 3)
    path = str(tmp_path / "m.onnx")
    onnx.save(_conv_model(numpy_helper.from_array(w, "w")), path, save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return path, w


def test_external_data_is_read_from_next_to_the_model(tmp_path) -> None:
    path, w = _save_external(tmp_path)
    np.testing.assert_array_equal(load_onnx(path).tensors["w"].const, w)


def test_external_data_file_missing(tmp_path) -> None:
    path, _ = _save_external(tmp_path)
    os.remove(tmp_path / "weights.bin")
    with pytest.raises(ModelLoadError, match=r"tensor 'w' \(float dims \(4, 3, 3, 3\)\) of '.*m.onnx' keeps its data "
                                             r"in 'weights.bin', which does not exist next to the model"):
        load_onnx(path)


def test_external_data_file_too_short(tmp_path) -> None:
    path, _ = _save_external(tmp_path)
    with open(tmp_path / "weights.bin", "r+b") as f:
        f.truncate(40)
    with pytest.raises(ModelLoadError, match=r"tensor 'w' .* of '.*m.onnx': 'weights.bin' has 40 bytes; the model "
                                             r"reads 432 bytes from offset 0"):
        load_onnx(path)


def test_external_data_location_outside_the_model_directory(tmp_path) -> None:
    path, _ = _save_external(tmp_path)
    model = onnx.load(path, load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "../weights.bin"
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match=r"tensor 'w' .* has external data location '../weights.bin'; expected "
                                             r"a file name relative to the model's directory"):
        load_onnx(path)


def test_external_data_of_a_model_given_as_proto_was_not_loaded(tmp_path) -> None:
    path, _ = _save_external(tmp_path)
    with pytest.raises(ModelLoadError, match=r"initializer 'w' \(float dims \(4, 3, 3, 3\)\) keeps its data in an "
                                             r"external file that was not loaded"):
        load_onnx(onnx.load(path, load_external_data=False))
