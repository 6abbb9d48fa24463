"""ONNX converters: shape and data-movement ops (Reshape ... Size, CenterCropPad).

The IR ops have the newest ONNX semantics; converters for older opsets turn attributes that later became inputs
(Reshape's shape, Squeeze/Unsqueeze axes, Split's split, Slice's starts/ends/axes, Pad's pads/value) into constant
inputs. Old-version converters are named ``<Op>_<since>``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.shape import PAD_MODES


def _ints(g: ConvertContext, values: Sequence[int] | None) -> str | None:
    """An int64 constant input for an attribute that later versions take as an input (None stays omitted)."""
    return None if values is None else g.const(np.array(values, dtype=np.int64).reshape(-1), "int64")


@onnx_op("Reshape", since=1)
def Reshape_1(g: ConvertContext, data: str, *, shape: Sequence[int] | None = None,
              consumed_inputs: Any = None) -> str:
    if shape is None:
        raise g.error("Reshape-1 needs the 'shape' attribute")
    return g.add("Reshape", [data, _ints(g, shape)])


@onnx_op("Reshape", since=5)
def Reshape(g: ConvertContext, data: str, shape: str, *, allowzero: int = 0) -> str:
    return g.add("Reshape", [data, shape], allowzero=allowzero)


@onnx_op("Flatten", since=1)
def Flatten(g: ConvertContext, input: str, *, axis: int = 1) -> str:
    return g.add("Flatten", [input], axis=axis)


@onnx_op("Transpose", since=1)
def Transpose(g: ConvertContext, data: str, *, perm: Sequence[int] | None = None) -> str:
    return g.add("Transpose", [data], perm=perm)


@onnx_op("Squeeze", since=1)
def Squeeze_1(g: ConvertContext, data: str, *, axes: Sequence[int] | None = None) -> str:
    return g.add("Squeeze", [data, _ints(g, axes)])


@onnx_op("Squeeze", since=13)
def Squeeze(g: ConvertContext, data: str, axes: str | None = None) -> str:
    return g.add("Squeeze", [data, axes])


@onnx_op("Unsqueeze", since=1)
def Unsqueeze_1(g: ConvertContext, data: str, *, axes: Sequence[int] | None = None) -> str:
    if axes is None:
        raise g.error("Unsqueeze before opset 13 needs the 'axes' attribute")
    return g.add("Unsqueeze", [data, _ints(g, axes)])


@onnx_op("Unsqueeze", since=13)
def Unsqueeze(g: ConvertContext, data: str, axes: str) -> str:
    return g.add("Unsqueeze", [data, axes])


@onnx_op("Concat", since=1)
def Concat(g: ConvertContext, *inputs: str, axis: int | None = None) -> str:
    # Concat-1 defaulted axis to 1; from opset 4 the attribute is required.
    if axis is None and g.opset >= 4:
        raise g.error("Concat needs the 'axis' attribute")
    return g.add("Concat", list(inputs), axis=1 if axis is None else axis)


def _split_outputs(g: ConvertContext, count: int | None = None) -> int:
    return count if count is not None else max(len(g.onnx_outputs), 1)


@onnx_op("Split", since=2)
def Split_2(g: ConvertContext, input: str, *, axis: int = 0, split: Sequence[int] | None = None) -> tuple[str, ...]:
    return tuple(g.add("Split", [input, _ints(g, split)], outputs=_split_outputs(g), axis=axis))


@onnx_op("Split", since=13)
def Split(g: ConvertContext, input: str, split: str | None = None, *, axis: int = 0,
          num_outputs: int | None = None) -> tuple[str, ...]:
    outs = g.add("Split", [input, split], outputs=_split_outputs(g, num_outputs), axis=axis, num_outputs=num_outputs)
    return tuple(outs)


@onnx_op("Slice", since=1)
def Slice_1(g: ConvertContext, data: str, *, starts: Sequence[int] | None = None, ends: Sequence[int] | None = None,
            axes: Sequence[int] | None = None) -> str:
    if starts is None or ends is None:
        raise g.error("Slice before opset 10 needs the 'starts' and 'ends' attributes")
    return g.add("Slice", [data, _ints(g, starts), _ints(g, ends), _ints(g, axes)])


@onnx_op("Slice", since=10)
def Slice(g: ConvertContext, data: str, starts: str, ends: str, axes: str | None = None,
          steps: str | None = None) -> str:
    return g.add("Slice", [data, starts, ends, axes, steps])


@onnx_op("Expand", since=8)
def Expand(g: ConvertContext, input: str, shape: str) -> str:
    return g.add("Expand", [input, shape])


@onnx_op("Tile", since=6)
def Tile(g: ConvertContext, input: str, repeats: str) -> str:
    return g.add("Tile", [input, repeats])


def _pad_mode(g: ConvertContext, mode: str) -> str:
    if mode not in PAD_MODES:
        raise g.unsupported(f"mode '{mode}' is not supported; supported: {', '.join(PAD_MODES)}")
    return mode


@onnx_op("Pad", since=1)
def Pad_1(g: ConvertContext, data: str, *, mode: str = "constant", pads: Sequence[int] | None = None,
          paddings: Sequence[int] | None = None, value: float = 0.0) -> str:
    # Pad-1 called the attribute 'paddings'; Pad-2 renamed it 'pads'. Pad-11 made pads and value inputs.
    widths = pads if pads is not None else paddings
    if widths is None:
        raise g.error("Pad before opset 11 needs the 'pads' attribute")
    fill = g.const(np.array(value), g.info(data).dtype)
    return g.add("Pad", [data, _ints(g, widths), fill], mode=_pad_mode(g, mode))


@onnx_op("Pad", since=11)
def Pad(g: ConvertContext, data: str, pads: str, constant_value: str | None = None, axes: str | None = None, *,
        mode: str = "constant") -> str:
    return g.add("Pad", [data, pads, constant_value, axes], mode=_pad_mode(g, mode))


@onnx_op("CenterCropPad", since=18)
def CenterCropPad(g: ConvertContext, input_data: str, shape: str, *, axes: Sequence[int] | None = None) -> str:
    return g.add("CenterCropPad", [input_data, shape], axes=axes)


@onnx_op("Shape", since=1)
def Shape(g: ConvertContext, data: str, *, start: int = 0, end: int | None = None) -> str:
    return g.add("Shape", [data], start=start, end=end)


@onnx_op("Size", since=1)
def Size(g: ConvertContext, data: str) -> str:
    return g.add("Size", [data])
