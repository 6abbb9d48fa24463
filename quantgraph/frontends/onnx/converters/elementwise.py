"""ONNX converters for elementwise math ops.

Most of these ops kept their semantics across versions; the old (opset < 7) forms only add a ``consumed_inputs``
attribute (ignored: it was a memory hint) and, for binary ops, ``broadcast``/``axis`` (explicit broadcasting,
translated to a reshape of B). One table drives them all.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op

# onnx op -> (first opset, attribute defaults); the IR op has the same name and attributes
UNARY: dict[str, tuple[int, dict[str, Any]]] = {
    "Relu": (1, {}), "Neg": (1, {}), "Abs": (1, {}), "Floor": (1, {}), "Ceil": (1, {}), "Sigmoid": (1, {}),
    "Tanh": (1, {}), "Exp": (1, {}), "Log": (1, {}), "Sqrt": (1, {}), "Reciprocal": (1, {}),
    "Softplus": (1, {}), "Softsign": (1, {}),
    "Sin": (7, {}), "Cos": (7, {}), "Tan": (7, {}), "Asin": (7, {}), "Acos": (7, {}), "Atan": (7, {}),
    "Sinh": (9, {}), "Cosh": (9, {}), "Asinh": (9, {}), "Acosh": (9, {}), "Atanh": (9, {}),
    "Erf": (9, {}), "Sign": (9, {}), "Round": (11, {}), "HardSwish": (14, {}), "Mish": (18, {}),
    "LeakyRelu": (1, {"alpha": 0.01}), "Elu": (1, {"alpha": 1.0}), "Celu": (12, {"alpha": 1.0}),
    "Selu": (1, {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "HardSigmoid": (1, {"alpha": 0.2, "beta": 0.5}), "ThresholdedRelu": (10, {"alpha": 1.0}),
    "Shrink": (9, {"bias": 0.0, "lambd": 0.5}), "Swish": (24, {"alpha": 1.0}), "Gelu": (20, {"approximate": "none"}),
}
# attributes of pre-opset-7 versions that carry no semantics for inference
_LEGACY_IGNORED = ("consumed_inputs",)


def _attr_converter(op_type: str, defaults: dict[str, Any], legacy: tuple[str, ...],
                    body: Callable[..., Any]) -> Callable[..., Any]:
    """A converter taking ``defaults`` (+ ignored legacy attributes) as keyword attributes."""
    allowed = set(defaults) | set(legacy)

    def convert(g: ConvertContext, *inputs: str | None, **attrs: Any) -> Any:
        unknown = sorted(set(attrs) - allowed)
        if unknown:
            raise g.unsupported(f"attribute(s) {', '.join(unknown)} not supported; known: "
                                f"{', '.join(sorted(allowed)) or 'none'}")
        values = {k: attrs.get(k, v) for k, v in defaults.items()}
        return body(g, *inputs, **values, **{k: attrs.get(k) for k in legacy if k not in defaults})

    convert.__name__ = convert.__qualname__ = op_type
    return convert


def _register_unary(op_type: str, since: int, defaults: dict[str, Any]) -> None:
    def body(g: ConvertContext, x: str, consumed_inputs: Any = None, **attrs: Any) -> str:
        return g.add(op_type, [x], **attrs)

    onnx_op(op_type, since=since)(_attr_converter(op_type, defaults, _LEGACY_IGNORED if since == 1 else (), body))


for _op, (_since, _defaults) in UNARY.items():
    _register_unary(_op, _since, _defaults)


def legacy_broadcast(g: ConvertContext, a: str, b: str, broadcast: int | None, axis: int | None) -> str:
    """Opset < 7 binary ops: with broadcast=1 and an axis, B's dims line up with A's starting at ``axis``.

    Returns B reshaped so that numpy broadcasting gives the same result.
    """
    if not broadcast or axis is None:
        return b
    ra, rb = g.info(a).rank, g.info(b).rank
    if ra is None or rb is None:
        raise g.unsupported("legacy broadcast with an axis needs inputs of known rank")
    ax = axis + ra if axis < 0 else axis
    trailing = ra - ax - rb
    if trailing <= 0:
        return b
    shape_b = g.info(b).shape
    new_shape = list(shape_b) + [1] * trailing  # type: ignore[arg-type]
    value = g.value(b)
    if value is not None:
        return g.const(value.reshape([int(d) for d in new_shape]))
    return g.add("Reshape", [b, g.const(np.array([0] * rb + [1] * trailing, dtype=np.int64))])


# onnx op -> first opset; all are numpy-broadcasting binary ops from opset 7 on
BINARY: dict[str, tuple[int, dict[str, Any]]] = {
    "Add": (1, {}), "Sub": (1, {}), "Mul": (1, {}), "Div": (1, {}), "Pow": (1, {}),
    "Mod": (10, {"fmod": 0}), "BitShift": (11, {"direction": ""}),
}


def _register_binary(op_type: str, since: int, defaults: dict[str, Any]) -> None:
    legacy = ("broadcast", "axis", "consumed_inputs") if since == 1 else ()

    def body(g: ConvertContext, a: str, b: str, broadcast: Any = None, axis: Any = None,
             consumed_inputs: Any = None, **attrs: Any) -> str:
        if op_type == "BitShift" and attrs["direction"] not in ("LEFT", "RIGHT"):
            raise g.unsupported(f"direction '{attrs['direction']}'; expected LEFT or RIGHT")
        return g.add(op_type, [a, legacy_broadcast(g, a, b, broadcast, axis)], **attrs)

    onnx_op(op_type, since=since)(_attr_converter(op_type, defaults, legacy, body))


for _op, (_since, _defaults) in BINARY.items():
    _register_binary(_op, _since, _defaults)


@onnx_op("PRelu", since=1)
def PRelu(g: ConvertContext, X: str, slope: str, *, consumed_inputs: Any = None) -> str:
    # Before opset 7 a 1-D slope of size C applied per channel (axis 1); from 7 on it broadcasts like numpy.
    sx, ss = g.info(X).shape, g.info(slope).shape
    if g.opset < 7 and sx is not None and ss is not None and len(ss) == 1 and len(sx) > 2 and ss[0] != 1:
        slope = legacy_broadcast(g, X, slope, 1, 1)
    return g.add("PRelu", [X, slope])


def _register_variadic(op_type: str) -> None:
    def body(g: ConvertContext, *xs: str | None, consumed_inputs: Any = None) -> str:
        return g.add(op_type, list(xs))

    onnx_op(op_type, since=1)(_attr_converter(op_type, {}, _LEGACY_IGNORED, body))


for _op in ("Max", "Min", "Sum", "Mean"):
    _register_variadic(_op)


@onnx_op("Clip", since=1)
def Clip(g: ConvertContext, input: str, min_input: str | None = None, max_input: str | None = None, *,
         consumed_inputs: Any = None, **bounds: float) -> str:
    # opset < 11: min/max are float attributes; from 11 on they are optional scalar inputs
    if g.opset < 11:
        unknown = sorted(set(bounds) - {"min", "max"})
        if unknown:
            raise g.unsupported(f"attribute(s) {', '.join(unknown)} not supported; known: min, max")
        dt = g.info(input).dtype
        lo = g.const(np.array(bounds["min"], dtype=dt)) if "min" in bounds else None
        hi = g.const(np.array(bounds["max"], dtype=dt)) if "max" in bounds else None
        return g.add("Clip", [input, lo, hi])
    if bounds:
        raise g.unsupported(f"attribute(s) {', '.join(sorted(bounds))} not supported from opset 11 on")
    return g.add("Clip", [input, min_input, max_input])
