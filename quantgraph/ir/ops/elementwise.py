"""Elementwise math ops: unary activations and functions, binary arithmetic, variadic Min/Max/Sum/Mean.

Most ops are rows of a table (name -> numpy function); the shared definitions below give each the same inference
(shape and dtype of the input; numpy broadcasting for binary ops) and a reference that keeps the input dtype.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from quantgraph.ir.dtypes import FLOAT, INTEGER, NUMERIC
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, Layout, op
from quantgraph.ir.shapes import broadcast_shapes
from quantgraph.ir.tensor import TensorInfo, TensorType

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorized erf, accurate to ~1e-7 relative: Taylor series near 0, Chebyshev-fitted erfc elsewhere.

    numpy has no erf and scipy is not a dependency; ``math.erf`` per element is far too slow for BERT-size tensors.
    """
    x64 = np.asarray(x, dtype=np.float64)
    ax = np.abs(x64)
    small = ax < 0.5
    # erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)); 12 terms are exact to double rounding for |x| < 0.5
    x2 = x64 * x64
    term = x64.copy()
    series = x64.copy()
    for n in range(1, 12):
        term = term * -x2 / n
        series = series + term / (2 * n + 1)
    series *= 2.0 / math.sqrt(math.pi)
    # Numerical Recipes erfc (fractional error < 1.2e-7) for |x| >= 0.5
    t = 1.0 / (1.0 + 0.5 * ax)
    poly = -ax * ax - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    big = np.sign(x64) * (1.0 - t * np.exp(poly))
    return np.where(small, series, big)


def _check_dtype(n: Node, x: TensorInfo, allowed: frozenset[str]) -> None:
    if x.dtype not in allowed:
        raise n.error(f"input has dtype {x.dtype}; {n.op} takes {', '.join(sorted(allowed))}")


def _f(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Compute in at least float32 (float64 for float64 input) and return the input dtype."""
    def run(x: np.ndarray, **kw: Any) -> np.ndarray:
        work = x.astype(np.float32) if x.dtype in (np.float16,) or str(x.dtype) == "bfloat16" else x
        return np.asarray(fn(work, **kw)).astype(x.dtype, copy=False)
    return run


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(x)))


def _round_half_even(x: np.ndarray) -> np.ndarray:
    return np.rint(x)


# name -> (reference on arrays, accepted dtypes, attribute defaults)
_UNARY: dict[str, tuple[Callable[..., np.ndarray], frozenset[str], dict[str, Any]]] = {
    "Relu": (lambda x: np.maximum(x, x.dtype.type(0)), NUMERIC, {}),
    "Neg": (lambda x: np.negative(x), NUMERIC, {}),
    "Abs": (lambda x: np.abs(x), NUMERIC, {}),
    "Sign": (lambda x: np.sign(x), NUMERIC, {}),
    "Floor": (_f(np.floor), FLOAT, {}),
    "Ceil": (_f(np.ceil), FLOAT, {}),
    "Round": (_f(_round_half_even), FLOAT, {}),
    "Sigmoid": (_f(_sigmoid), FLOAT, {}),
    "Tanh": (_f(np.tanh), FLOAT, {}),
    "Erf": (_f(erf), FLOAT, {}),
    "Exp": (_f(np.exp), FLOAT, {}),
    "Log": (_f(np.log), FLOAT, {}),
    "Sqrt": (_f(np.sqrt), FLOAT, {}),
    "Reciprocal": (_f(lambda x: 1 / x), FLOAT, {}),
    "Sin": (_f(np.sin), FLOAT, {}), "Cos": (_f(np.cos), FLOAT, {}), "Tan": (_f(np.tan), FLOAT, {}),
    "Asin": (_f(np.arcsin), FLOAT, {}), "Acos": (_f(np.arccos), FLOAT, {}), "Atan": (_f(np.arctan), FLOAT, {}),
    "Sinh": (_f(np.sinh), FLOAT, {}), "Cosh": (_f(np.cosh), FLOAT, {}), "Asinh": (_f(np.arcsinh), FLOAT, {}),
    "Acosh": (_f(np.arccosh), FLOAT, {}), "Atanh": (_f(np.arctanh), FLOAT, {}),
    "Softplus": (_f(_softplus), FLOAT, {}),
    "Softsign": (_f(lambda x: x / (1 + np.abs(x))), FLOAT, {}),
    "HardSwish": (_f(lambda x: x * np.clip(x / 6 + 0.5, 0, 1)), FLOAT, {}),
    "Mish": (_f(lambda x: x * np.tanh(_softplus(x))), FLOAT, {}),
    "LeakyRelu": (_f(lambda x, alpha: np.where(x >= 0, x, x * np.float32(alpha))), FLOAT, {"alpha": 0.01}),
    "Elu": (_f(lambda x, alpha: np.where(x >= 0, x, np.float32(alpha) * np.expm1(x))), FLOAT, {"alpha": 1.0}),
    "Celu": (_f(lambda x, alpha: np.maximum(0, x) + np.minimum(0, np.float32(alpha) * np.expm1(x / np.float32(alpha)))),
             FLOAT, {"alpha": 1.0}),
    "Selu": (_f(lambda x, alpha, gamma: np.float32(gamma) * np.where(x > 0, x, np.float32(alpha) * np.expm1(x))),
             FLOAT, {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "HardSigmoid": (_f(lambda x, alpha, beta: np.clip(np.float32(alpha) * x + np.float32(beta), 0, 1)), FLOAT,
                    {"alpha": 0.2, "beta": 0.5}),
    "ThresholdedRelu": (_f(lambda x, alpha: np.where(x > alpha, x, 0)), FLOAT, {"alpha": 1.0}),
    "Shrink": (lambda x, bias, lambd: np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0)).astype(x.dtype),
               NUMERIC, {"bias": 0.0, "lambd": 0.5}),
    "Swish": (_f(lambda x, alpha: x * _sigmoid(np.float32(alpha) * x)), FLOAT, {"alpha": 1.0}),
    "Gelu": (_f(lambda x, approximate: 0.5 * x * (1 + (
        np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)) if approximate == "tanh" else erf(x / math.sqrt(2))))),
        FLOAT, {"approximate": "none"}),
}


def _define_unary(name: str, fn: Callable[..., np.ndarray], allowed: frozenset[str], attrs: dict[str, Any]) -> None:
    d = op(name, inputs="X", outputs="Y", attrs=attrs, fusion=Fusion.ELEMWISE)

    @d.infer
    def _(n: Node, x: TensorInfo) -> TensorType:
        _check_dtype(n, x, allowed)
        return TensorType(x.shape, x.dtype)

    @d.reference
    def _(n: Node, x: np.ndarray) -> np.ndarray:
        if name == "Gelu" and n.attrs["approximate"] not in ("none", "tanh"):
            raise n.error(f"approximate='{n.attrs['approximate']}'; expected 'none' or 'tanh'")
        return fn(x, **n.attrs)


for _name, (_fn, _allowed, _attrs) in _UNARY.items():
    _define_unary(_name, _fn, _allowed, _attrs)


# -- Clip: bounds are optional inputs -------------------------------------------------------------------------------
clip = op("Clip", inputs="input min? max?", outputs="output", fusion=Fusion.ELEMWISE)


@clip.infer
def _(n: Node, x: TensorInfo, lo: TensorInfo | None, hi: TensorInfo | None) -> TensorType:
    for b, what in ((lo, "min"), (hi, "max")):
        if b is not None and b.shape not in (None, ()) and b.shape != (1,):
            raise n.error(f"{what} has shape {b.shape}; Clip bounds are scalars")
    return TensorType(x.shape, x.dtype)


@clip.reference
def _(n: Node, x: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None) -> np.ndarray:
    y = x
    if lo is not None:
        y = np.maximum(y, lo.reshape(()).astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, hi.reshape(()).astype(x.dtype))
    return np.asarray(y, dtype=x.dtype)


# -- binary arithmetic ----------------------------------------------------------------------------------------------
def _int_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # ONNX integer Div truncates toward zero (C semantics); numpy's // floors
    q = np.floor_divide(x, y)
    fix = (np.remainder(x, y) != 0) & ((x < 0) ^ (y < 0))
    return q + fix.astype(q.dtype)


def _div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _int_div(x, y) if x.dtype.kind in "iu" else np.divide(x, y)


def _mod(x: np.ndarray, y: np.ndarray, fmod: int) -> np.ndarray:
    return np.fmod(x, y) if fmod else np.mod(x, y)


def _pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu":
        return np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)
    return np.power(x, y.astype(x.dtype) if y.dtype.kind in "iu" else y).astype(x.dtype)


def _bitshift(x: np.ndarray, y: np.ndarray, direction: str) -> np.ndarray:
    # Shifts by a negative amount or by >= the bit width are defined (to 0, or -1 for a negative right-shifted
    # value) rather than left to the hardware; left shifts of signed values wrap like unsigned ones.
    x, y = np.broadcast_arrays(x, y)
    valid = (y >= 0) & (y < np.iinfo(x.dtype).bits)
    ys = np.where(valid, y, 0)
    if direction == "RIGHT":
        shifted = np.right_shift(x, ys.astype(x.dtype))
        overflow = np.where(x < 0, -1, 0).astype(x.dtype) if x.dtype.kind == "i" else np.zeros_like(x)
    else:
        u = np.dtype(f"u{x.dtype.itemsize}")
        shifted = np.left_shift(x.view(u), ys.astype(u)).view(x.dtype)
        overflow = np.zeros_like(x)
    return np.where(valid, shifted, overflow)


def _prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(x < 0, x * slope, x).astype(x.dtype)


# name -> (reference, accepted dtypes of A, attrs, whether B must have A's dtype)
_BINARY: dict[str, tuple[Callable[..., np.ndarray], frozenset[str], dict[str, Any], bool]] = {
    "Add": (np.add, NUMERIC, {}, True),
    "Sub": (np.subtract, NUMERIC, {}, True),
    "Mul": (np.multiply, NUMERIC, {}, True),
    "Div": (_div, NUMERIC, {}, True),
    "Mod": (_mod, NUMERIC, {"fmod": 0}, True),
    "Pow": (_pow, NUMERIC - {"int8", "int16", "uint8", "uint16", "uint32", "uint64"}, {}, False),
    "PRelu": (_prelu, NUMERIC, {}, True),
    "BitShift": (_bitshift, INTEGER, {"direction": "LEFT"}, True),
}


def binary_infer(n: Node, a: TensorInfo, b: TensorInfo, dtype: str | None = None) -> TensorType:
    """Broadcast the shapes of two inputs; raise naming both shapes when they do not broadcast."""
    try:
        shape = broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise n.error(f"inputs of shapes {a.shape} and {b.shape} do not broadcast") from None
    return TensorType(shape, dtype or a.dtype)


def _define_binary(name: str, fn: Callable[..., np.ndarray], allowed: frozenset[str], attrs: dict[str, Any],
                   same_dtype: bool) -> None:
    d = op(name, inputs="A B", outputs="C", attrs=attrs, fusion=Fusion.BROADCAST, layout=Layout.AGNOSTIC,
           weights=(1,) if name == "PRelu" else ())

    @d.infer
    def _(n: Node, a: TensorInfo, b: TensorInfo) -> TensorType:
        _check_dtype(n, a, allowed)
        if same_dtype and a.dtype != b.dtype:
            raise n.error(f"inputs have dtypes {a.dtype} and {b.dtype}; {name} needs equal dtypes")
        if name == "BitShift" and n.attrs["direction"] not in ("LEFT", "RIGHT"):
            raise n.error(f"direction='{n.attrs['direction']}'; expected 'LEFT' or 'RIGHT'")
        return binary_infer(n, a, b)

    @d.reference
    def _(n: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(fn(a, b, **n.attrs)).astype(a.dtype, copy=False)


for _name, (_fn, _allowed, _attrs, _same) in _BINARY.items():
    _define_binary(_name, _fn, _allowed, _attrs, _same)


# -- variadic -------------------------------------------------------------------------------------------------------
_VARIADIC: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "Max": lambda xs: _fold(np.maximum, xs),
    "Min": lambda xs: _fold(np.minimum, xs),
    "Sum": lambda xs: _fold(np.add, xs),
    "Mean": lambda xs: _fold(np.add, xs) / np.asarray(len(xs), dtype=xs[0].dtype),
}


def _fold(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    acc = xs[0]
    for x in xs[1:]:
        acc = fn(acc, x)
    return np.asarray(acc)


def _define_variadic(name: str, fn: Callable[[list[np.ndarray]], np.ndarray]) -> None:
    d = op(name, inputs="data_0+", outputs="result", fusion=Fusion.BROADCAST, layout=Layout.AGNOSTIC)

    @d.infer
    def _(n: Node, *xs: TensorInfo) -> TensorType:
        _check_dtype(n, xs[0], NUMERIC)
        if any(x.dtype != xs[0].dtype for x in xs):
            raise n.error(f"inputs have dtypes {[x.dtype for x in xs]}; {name} needs equal dtypes")
        try:
            return TensorType(broadcast_shapes(*(x.shape for x in xs)), xs[0].dtype)
        except ValueError:
            raise n.error(f"input shapes {[x.shape for x in xs]} do not broadcast") from None

    @d.reference
    def _(n: Node, *xs: np.ndarray) -> np.ndarray:
        return fn(list(xs)).astype(xs[0].dtype, copy=False)


for _name, _fn2 in _VARIADIC.items():
    _define_variadic(_name, _fn2)
