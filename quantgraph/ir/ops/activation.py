"""The activation vocabulary: one row per activation a fused epilogue can apply, read by everything that needs it.

Readers: the epilogue fusion rule (``compiler/rules/epilogue.py``: which standalone op a row absorbs and with which
parameters), the fused ops' references (``ir/ops/fused.py``), the fp32 kernels (``kernels/fp32/eltwise_f32.py``
branches on ``code``; the packed GEMM applies ``in_register`` rows to its accumulators), the standalone unary kernels
(``compiler/lower.py``) and the int8 epilogue (``kernels/epilogue.py`` takes the ``int8`` rows).

Adding an activation (e.g. Mish): one row here, and its ``code`` branch in ``eltwise_f32.act_row``; the table
sweep in ``tests/kernels/fp32/test_activation_table.py`` checks that the kernel agrees with the reference for every row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import ref

#: ``params(node, const)`` -> (alpha, beta), or a refusal string; ``const(tensor)`` is the value or None
Params = Callable[[Node, Callable[[str], "np.ndarray | None"]], "tuple[float, float] | str"]


def _no_params(n: Node, const: Callable[[str], Any]) -> tuple[float, float]:
    return 0.0, 0.0


def _attr_params(alpha: str | None = None, beta: str | None = None) -> Params:
    def params(n: Node, const: Callable[[str], Any]) -> tuple[float, float]:
        return (float(n.attrs[alpha]) if alpha else 0.0), (float(n.attrs[beta]) if beta else 0.0)
    return params


def _clip_params(n: Node, const: Callable[[str], Any]) -> tuple[float, float] | str:
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        t = n.inputs[i] if len(n.inputs) > i else ""
        if not t:
            bounds.append(default)
            continue
        v = const(t)
        if v is None or np.asarray(v).size != 1:
            return "Clip bounds are not constant scalars"
        bounds.append(float(np.asarray(v).reshape(-1)[0]))
    return bounds[0], bounds[1]


@dataclass(frozen=True)
class Activation:
    """One epilogue activation.

    Attributes:
        name: the ``activation`` attribute value of fused ops.
        code: the int the fp32 kernels branch on (stable: a code is never reused).
        reference: ``(y, alpha, beta) -> act(y)`` on float arrays, composed of registry references.
        op: the standalone op it replaces (None: reached only through a pattern, e.g. silu = x * Sigmoid(x)).
        when: attribute values ``op`` must have (Gelu's ``approximate`` picks gelu or gelu_tanh).
        params: how ``alpha``/``beta`` come from the standalone op.
        in_register: the packed fp32 GEMM applies it to its accumulators before the store (else a post-pass).
        int8: the int8 epilogue (``kernels/epilogue.py``) applies it.
        doc: what alpha and beta mean.
    """

    name: str
    code: int
    reference: Callable[[np.ndarray, float, float], np.ndarray]
    op: str | None = None
    when: Mapping[str, Any] = field(default_factory=dict)
    params: Params = _no_params
    in_register: bool = False
    int8: bool = False
    doc: str = ""


_ROWS = (
    Activation("none", 0, lambda y, a, b: y, in_register=True, int8=True),
    Activation("relu", 1, lambda y, a, b: ref("Relu", y), "Relu", in_register=True, int8=True),
    Activation("leaky_relu", 2, lambda y, a, b: ref("LeakyRelu", y, alpha=a), "LeakyRelu",
               params=_attr_params("alpha"), doc="alpha: slope for x < 0"),
    Activation("clip", 3, lambda y, a, b: ref("Clip", y, np.array(a, y.dtype), np.array(b, y.dtype)), "Clip",
               params=_clip_params, in_register=True, int8=True, doc="[alpha, beta]; ReLU6 is clip(0, 6)"),
    Activation("sigmoid", 4, lambda y, a, b: ref("Sigmoid", y), "Sigmoid"),
    Activation("tanh", 5, lambda y, a, b: ref("Tanh", y), "Tanh"),
    Activation("silu", 6, lambda y, a, b: ref("Mul", y, ref("Sigmoid", y)), doc="x * sigmoid(x): a pattern"),
    Activation("hardsigmoid", 7, lambda y, a, b: ref("HardSigmoid", y, alpha=a, beta=b), "HardSigmoid",
               params=_attr_params("alpha", "beta"), doc="max(0, min(1, alpha * x + beta))"),
    Activation("hardswish", 8, lambda y, a, b: ref("HardSwish", y), "HardSwish"),
    Activation("gelu", 9, lambda y, a, b: ref("Gelu", y), "Gelu", when={"approximate": "none"}),
    Activation("gelu_tanh", 10, lambda y, a, b: ref("Gelu", y, approximate="tanh"), "Gelu",
               when={"approximate": "tanh"}),
    Activation("erf", 11, lambda y, a, b: ref("Erf", y), "Erf"),
    Activation("mish", 12, lambda y, a, b: ref("Mish", y), "Mish", doc="x * tanh(softplus(x))"),
)

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in _ROWS}
#: the standalone ops that some row replaces
ACTIVATION_OPS: frozenset[str] = frozenset(a.op for a in _ROWS if a.op)
assert len({a.code for a in _ROWS}) == len(_ROWS), "activation codes must be unique"


def activation_of(n: Node) -> Activation | None:
    """The row whose standalone op (and ``when`` attributes) ``n`` is, or None."""
    for a in _ROWS:
        if a.op == n.op and all(n.attrs.get(k) == v for k, v in a.when.items()):
            return a
    return None


def apply(name: str, y: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """The reference of activation ``name`` on ``y``."""
    return ACTIVATIONS[name].reference(y, alpha, beta)
