"""Optional ops. An optional value is an :class:`OptionalValue` (empty, or holding a tensor or a sequence); its IR
dtype is ``optional(<inner dtype>)`` and its shape None (``dtypes.optional_of``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from quantgraph.ir.dtypes import inner_of, is_optional, optional_of
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import op
from quantgraph.ir.tensor import OptionalValue, TensorInfo, TensorType

optional = op("Optional", inputs="input?", outputs="output", attrs={"type": None},
              doc="An optional holding input, or an empty optional of dtype `type` when input is omitted")


@optional.infer
def _(n: Node, x: TensorInfo | None) -> TensorType:
    if x is None and n.attrs["type"] is None:
        raise n.error("an empty Optional needs its type attribute")
    return TensorType(None, optional_of(n.attrs["type"] if x is None else x.dtype))


@optional.reference
def _(n: Node, x: Any) -> OptionalValue:
    return OptionalValue(x, n.attrs["type"]) if x is None else OptionalValue(x, _dtype(x))


def _dtype(x: Any) -> str:
    from quantgraph.ir.dtypes import dtype_name

    return x.dtype if not isinstance(x, np.ndarray) else dtype_name(x)


optional_has_element = op("OptionalHasElement", inputs="input?", outputs="output")


@optional_has_element.infer
def _(n: Node, x: TensorInfo | None) -> TensorType:
    return TensorType((), "bool")


@optional_has_element.reference
def _(n: Node, x: Any) -> np.ndarray:
    return np.array(x is not None and not (isinstance(x, OptionalValue) and x.value is None))


optional_get_element = op("OptionalGetElement", inputs="input", outputs="output")


@optional_get_element.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    return TensorType(None, inner_of(x.dtype)) if is_optional(x.dtype) else x.type


@optional_get_element.reference
def _(n: Node, x: Any) -> Any:
    if not isinstance(x, OptionalValue):
        return x  # (opset 18: a tensor or sequence passes through)
    if x.value is None:
        raise n.error("the optional is empty; OptionalGetElement needs a value (test with OptionalHasElement)")
    return x.value
