"""ONNX converters for comparison, boolean, bitwise and selection ops."""
from __future__ import annotations

from typing import Any

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.converters.elementwise import _attr_converter, legacy_broadcast
from quantgraph.frontends.onnx.registry import onnx_op

# onnx op -> first opset (ops from opset 1 had the legacy broadcast/axis attributes before opset 7)
BINARY = {"Equal": 1, "Less": 1, "Greater": 1, "And": 1, "Or": 1, "Xor": 1, "LessOrEqual": 12,
          "GreaterOrEqual": 12, "BitwiseAnd": 18, "BitwiseOr": 18, "BitwiseXor": 18}
UNARY = {"Not": 1, "BitwiseNot": 18, "IsNaN": 9, "IsInf": 10}
_UNARY_ATTRS: dict[str, dict[str, Any]] = {"IsInf": {"detect_negative": 1, "detect_positive": 1}}


def _register_binary(op_type: str, since: int) -> None:
    legacy = ("broadcast", "axis") if since == 1 else ()

    def body(g: ConvertContext, a: str, b: str, broadcast: Any = None, axis: Any = None) -> str:
        return g.add(op_type, [a, legacy_broadcast(g, a, b, broadcast, axis)])

    onnx_op(op_type, since=since)(_attr_converter(op_type, {}, legacy, body))


def _register_unary(op_type: str, since: int) -> None:
    def body(g: ConvertContext, x: str, **attrs: Any) -> str:
        return g.add(op_type, [x], **attrs)

    onnx_op(op_type, since=since)(_attr_converter(op_type, _UNARY_ATTRS.get(op_type, {}), (), body))


for _op, _since in BINARY.items():
    _register_binary(_op, _since)
for _op, _since in UNARY.items():
    _register_unary(_op, _since)


@onnx_op("Where", since=9)
def Where(g: ConvertContext, condition: str, X: str, Y: str) -> str:
    return g.add("Where", [condition, X, Y])
