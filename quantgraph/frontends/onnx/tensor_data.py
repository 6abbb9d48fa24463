"""ONNX tensor data -> numpy: initializers, Constant values and external data files, with errors that name the
tensor, its dtype and dims, the bytes (or values) found and expected, and the file they came from.

numpy's own error for a short buffer (``cannot reshape array of size 10 into shape (4,3,3,3)``) names none of
these; a model file whose data was cut or mis-exported must be diagnosable from the message alone.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from quantgraph.errors import ModelLoadError
from quantgraph.frontends.onnx.dtypes import onnx_type_name

#: the typed field each element type keeps its values in when there is no raw_data, and values per element;
#: every type not listed keeps one value per element in int32_data (float16/bfloat16 as their bit patterns)
_FIELDS = {
    TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
    TensorProto.INT64: ("int64_data", 1), TensorProto.UINT32: ("uint64_data", 1),
    TensorProto.UINT64: ("uint64_data", 1), TensorProto.STRING: ("string_data", 1),
}
#: element types narrower than a byte (packed in raw_data): bits per element
_SUB_BYTE = {getattr(TensorProto, n): b
             for n, b in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
             if hasattr(TensorProto, n)}


def _describe(t: TensorProto) -> str:
    return f"{onnx_type_name(t.data_type)} dims {tuple(int(d) for d in t.dims)}"


def _raw_bytes(elem_type: int, count: int) -> int | None:
    """Bytes of raw_data ``count`` elements take, or None when the type has no fixed size (strings)."""
    if elem_type in _SUB_BYTE:
        return (count * _SUB_BYTE[elem_type] + 7) // 8
    if elem_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None


def tensor_array(t: TensorProto, what: str, source: str | None = None) -> np.ndarray:
    """The array of ``t``; ``what`` names it (``"initializer 'w'"``), ``source`` says where its data came from."""
    where = f" (from {source})" if source else ""
    if t.data_location == TensorProto.EXTERNAL:
        raise ModelLoadError(f"{what} ({_describe(t)}) keeps its data in an external file that was not loaded; "
                             f"load the model from its path so the file next to it is read")
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{what} has dims {dims}{where}; tensor dims must be >= 0")
    count = int(np.prod(dims, dtype=np.int64))
    if t.HasField("raw_data"):
        want = _raw_bytes(t.data_type, count)
        got = len(t.raw_data)
        if want is not None and got != want:
            raise ModelLoadError(f"{what} ({_describe(t)}) has {got} bytes of raw data{where}; its dims and dtype "
                                 f"need {want} bytes ({count} elements)")
    else:
        field, per = _FIELDS.get(t.data_type, ("int32_data", 1))
        got = len(getattr(t, field))
        if got != count * per:
            raise ModelLoadError(f"{what} ({_describe(t)}) has {got} values in {field}{where}; its dims need "
                                 f"{count * per} ({count} elements)")
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:  # anything else onnx cannot decode; the checks above cover the common causes
        raise ModelLoadError(f"{what} ({_describe(t)}){where} cannot be decoded: {type(exc).__name__}: "
                             f"{exc}") from exc


def _external_tensors(proto: onnx.ModelProto) -> list[TensorProto]:
    """Every tensor of the main graph whose data is external: initializers and Constant node values."""
    found = [t for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    for n in proto.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == TensorProto.EXTERNAL:
                found.append(a.t)
    return found


def load_external_data(proto: onnx.ModelProto, model_path: str) -> dict[str, str]:
    """Read the external data of ``proto`` (loaded from ``model_path`` without it) into raw_data, in place.

    Returns, per tensor name, where its data came from (for the messages of :func:`tensor_array`). A missing file,
    a location outside the model's directory or a file too short for the recorded offset and length raise a
    ModelLoadError naming the tensor and the file.
    """
    base = os.path.dirname(os.path.abspath(model_path))
    sources: dict[str, str] = {}
    for t in _external_tensors(proto):
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        what = f"tensor '{t.name}' ({_describe(t)})"
        path = os.path.normpath(os.path.join(base, location))
        if not location or os.path.isabs(location) or not path.startswith(base + os.sep):
            raise ModelLoadError(f"{what} of '{model_path}' has external data location '{location}'; expected a "
                                 f"file name relative to the model's directory")
        if not os.path.isfile(path):
            raise ModelLoadError(f"{what} of '{model_path}' keeps its data in '{location}', which does not exist "
                                 f"next to the model ({path})")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ModelLoadError(f"{what} of '{model_path}' has a non-integer external data offset/length "
                                 f"{info}") from None
        size = os.path.getsize(path)
        if offset > size or (length is not None and offset + length > size):
            raise ModelLoadError(f"{what} of '{model_path}': '{location}' has {size} bytes; the model reads "
                                 f"{length if length is not None else 'the rest'} bytes from offset {offset}")
        with open(path, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read() if length is None else f.read(length)
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]
        sources[t.name] = f"'{location}' at offset {offset}, external data of '{model_path}'"
    return sources
