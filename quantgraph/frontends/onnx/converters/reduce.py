"""ONNX converters: the ten Reduce* ops.

Every Reduce op took ``axes`` as an attribute until it became an optional input (ReduceSum in opset 13, the rest
in opset 18). The IR ops have the input form, so old versions pass their attribute as a constant input.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.reduce import REDUCERS

#: opset in which ``axes`` became an input
AXES_INPUT_SINCE = {name: 13 if name == "ReduceSum" else 18 for name in REDUCERS}


def _axes_attr_converter(op_type: str) -> Callable[..., str]:
    def convert(g: ConvertContext, data: str, *, axes: Any = None, keepdims: int = 1) -> str:
        # omitted (or empty) axes meant "reduce all axes"; noop_with_empty_axes did not exist yet
        axes_t = None if not axes else g.const(np.array(axes, np.int64), name=f"{g.node_name}/axes")
        return g.add(op_type, [data, axes_t], keepdims=keepdims, noop_with_empty_axes=0)

    convert.__name__ = convert.__qualname__ = op_type
    return convert


def _axes_input_converter(op_type: str) -> Callable[..., str]:
    def convert(g: ConvertContext, data: str, axes: str | None = None, *, keepdims: int = 1,
                noop_with_empty_axes: int = 0) -> str:
        return g.add(op_type, [data, axes], keepdims=keepdims, noop_with_empty_axes=noop_with_empty_axes)

    convert.__name__ = convert.__qualname__ = f"{op_type}_{AXES_INPUT_SINCE[op_type]}"
    return convert


for _op_type, _since in AXES_INPUT_SINCE.items():
    onnx_op(_op_type, since=1)(_axes_attr_converter(_op_type))
    onnx_op(_op_type, since=_since)(_axes_input_converter(_op_type))
