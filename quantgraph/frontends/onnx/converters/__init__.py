"""ONNX converters, one module per op family (mirrors quantgraph/ir/ops). Importing this registers them all."""
from __future__ import annotations

from quantgraph.frontends.onnx.converters import (  # noqa: F401
    elementwise, logic, misc, nn, norm, pool, quant, reduce, rnn, shape,
    indexing, resize,
)
from quantgraph.frontends.onnx.converters import attention, control_flow, detection, loss  # noqa: F401
from quantgraph.frontends.onnx.converters import contrib_quant  # noqa: F401
