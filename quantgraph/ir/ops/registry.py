"""The op registry: each op is defined once — its inputs and attributes, type inference and numpy reference.

    relu = op("Relu", inputs="X", outputs="Y", fusion=Fusion.ELEMWISE)

    @relu.infer
    def _(n, x):            # n: Node, x: TensorInfo (with .const when the input is constant)
        return x.type       # a TensorType, or a sequence of them for multi-output ops

    @relu.reference
    def _(n, x):            # plain numpy; clarity beats speed
        return np.maximum(x, 0)

Port specs are space-separated names: ``B?`` is optional (passed as None when omitted), ``inputs*`` is variadic
(passed as the remaining positional arguments; ``inputs+`` needs at least one). Attribute defaults are filled in
when a node is created; ``REQUIRED`` marks an attribute without a default.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from quantgraph.errors import GraphError, QuantgraphError, ShapeError, UnsupportedOpError
from quantgraph.ir.dtypes import dtype_name
from quantgraph.ir.node import Node
from quantgraph.ir.tensor import NON_TENSOR_VALUES, TensorInfo, TensorType


class Fusion(enum.Enum):
    """How an op combines with its neighbours (read by the generic fuser), after TVM's TOpPattern."""

    ELEMWISE = "elemwise"        # out[i] = f(in[i]), same shape
    BROADCAST = "broadcast"      # elementwise with numpy broadcasting
    INJECTIVE = "injective"      # each output element reads one input element (reshape, transpose, slice, ...)
    REDUCE = "reduce"
    OUT_FUSABLE = "out_fusable"  # heavy op whose output takes an elementwise epilogue (conv, gemm)
    OPAQUE = "opaque"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Layout(enum.Enum):
    """How an op can run channels-last (read by ``compiler/passes/convert_layout.py``)."""

    NONE = "none"                  # only in the layout it was written in (ONNX: channels-first)
    AGNOSTIC = "agnostic"          # elementwise: any layout, when its activation inputs share one shape
    ATTR = "attr"                  # carries a ``layout`` attribute (compiler-made ops); activations in ``layout_slots``
    VIA = "via"                    # runs channels-last as op ``layout_via`` (``kind=<this op>``, a ``layout`` attr)
    CHANNEL_AXIS = "channel_axis"  # layout-agnostic when its ``axis`` attribute is the channel axis (Concat)


@dataclass(frozen=True)
class Port:
    name: str
    optional: bool = False
    variadic: bool = False
    min_count: int = 0

    @staticmethod
    def parse(spec: str) -> tuple["Port", ...]:
        ports = []
        for tok in spec.split():
            if tok.endswith("?"):
                ports.append(Port(tok[:-1], optional=True))
            elif tok.endswith("*"):
                ports.append(Port(tok[:-1], variadic=True, min_count=0))
            elif tok.endswith("+"):
                ports.append(Port(tok[:-1], variadic=True, min_count=1))
            else:
                ports.append(Port(tok))
        for p in ports[:-1]:
            if p.variadic:
                raise ValueError(f"variadic port {p.name} must be last in {spec!r}")
        return tuple(ports)


def _freeze(value: Any) -> Any:
    """Attribute values are immutable: lists become tuples, numpy scalars python scalars."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        arr = value.copy()
        arr.setflags(write=False)
        return arr
    if isinstance(value, np.generic):
        return value.item()
    return value


class OpDef:
    """The single definition of an op. Created by :func:`op`; decorators attach infer and reference."""

    def __init__(self, name: str, inputs: str, outputs: str, attrs: dict[str, Any] | None, fusion: Fusion,
                 doc: str = "", weights: tuple[int, ...] = (), layout: Layout | None = None,
                 layout_slots: tuple[int, ...] = (0,), layout_via: str | None = None):
        self.name = name
        self.inputs = Port.parse(inputs)
        self.outputs = Port.parse(outputs)
        self.attrs = dict(attrs or {})
        self.fusion = fusion
        self.doc = doc
        #: input slots that hold weights (kernels pack them once; constant folding may materialise them at any size)
        self.weights = tuple(weights)
        #: layout behaviour; elementwise ops are layout-agnostic unless they say otherwise
        self.layout = layout if layout is not None else (Layout.AGNOSTIC if fusion is Fusion.ELEMWISE else Layout.NONE)
        self.layout_slots = tuple(layout_slots)
        self.layout_via = layout_via
        if (self.layout is Layout.VIA) != (layout_via is not None):
            raise ValueError(f"op {name}: layout_via goes with Layout.VIA and only with it")
        self._infer: Callable[..., Any] | None = None
        self._reference: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        return f"OpDef({self.name})"

    # -- decorators -------------------------------------------------------------------------------------------
    def infer(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        self._infer = fn
        return fn

    def reference(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        self._reference = fn
        return fn

    @property
    def has_infer(self) -> bool:
        return self._infer is not None

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    # -- schema -----------------------------------------------------------------------------------------------
    @property
    def min_inputs(self) -> int:
        return sum(1 for p in self.inputs if not p.optional and not p.variadic) + sum(
            p.min_count for p in self.inputs if p.variadic)

    @property
    def max_inputs(self) -> int | None:
        return None if any(p.variadic for p in self.inputs) else len(self.inputs)

    @property
    def variadic_outputs(self) -> bool:
        return any(p.variadic for p in self.outputs)

    def check_arity(self, node_name: str, n_in: int, n_out: int) -> None:
        if n_in < self.min_inputs or (self.max_inputs is not None and n_in > self.max_inputs):
            want = f"{self.min_inputs}" if self.max_inputs == self.min_inputs else (
                f"{self.min_inputs} to {self.max_inputs}" if self.max_inputs is not None else f"{self.min_inputs}+")
            names = " ".join(p.name + ("?" if p.optional else "*" if p.variadic else "") for p in self.inputs)
            raise GraphError(f"got {n_in} inputs; {self.name} takes {want} ({names})", node_name, self.name)
        if not self.variadic_outputs and not 1 <= n_out <= len(self.outputs):
            raise GraphError(f"got {n_out} outputs; {self.name} has {len(self.outputs)}", node_name, self.name)

    def check_inputs_present(self, node_name: str, inputs: Sequence[str]) -> None:
        for i, (p, t) in enumerate(zip(self.inputs, inputs)):
            if not t and not p.optional and not p.variadic:
                raise GraphError(f"required input {i} ({p.name}) is missing", node_name, self.name)

    def complete_attrs(self, node_name: str, attrs: dict[str, Any]) -> dict[str, Any]:
        """Validate ``attrs`` against the schema and fill in defaults."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            known = ", ".join(sorted(self.attrs)) or "none"
            raise GraphError(f"unknown attribute(s) {', '.join(unknown)}; {self.name} accepts: {known}",
                             node_name, self.name)
        out: dict[str, Any] = {}
        for key, default in self.attrs.items():
            if key in attrs and attrs[key] is not None:
                out[key] = _freeze(attrs[key])
            elif default is REQUIRED:
                raise GraphError(f"missing required attribute '{key}'", node_name, self.name)
            else:
                out[key] = default
        return out

    # -- evaluation -------------------------------------------------------------------------------------------
    def _split(self, values: Sequence[Any]) -> list[Any]:
        """Positional arguments for infer/reference: fixed ports first, then the variadic tail."""
        fixed = [p for p in self.inputs if not p.variadic]
        args = list(values[: len(fixed)])
        args += [None] * (len(fixed) - len(args))
        if any(p.variadic for p in self.inputs):
            args += list(values[len(fixed):])
        return args

    def run_infer(self, node: Node, infos: Sequence[TensorInfo | None]) -> list[TensorType]:
        if self._infer is None:
            raise UnsupportedOpError("op has no type inference", node.name, node.op)
        try:
            result = self._infer(node, *self._split(infos))
        except QuantgraphError:
            raise
        except Exception as exc:  # a bug or an unanticipated input: still name the node
            raise ShapeError(f"type inference failed: {type(exc).__name__}: {exc}", node.name, node.op) from exc
        types = [result] if isinstance(result, TensorType) else list(result)
        return types

    def run_reference(self, node: Node, arrays: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        if self._reference is None:
            raise UnsupportedOpError("op has no reference implementation", node.name, node.op)
        try:
            with np.errstate(all="ignore"):
                result = self._reference(node, *self._split(arrays))
        except QuantgraphError:
            raise
        except Exception as exc:
            shapes = ", ".join("None" if a is None else f"{a.dtype}" if isinstance(a, NON_TENSOR_VALUES)
                               else f"{a.dtype}{tuple(a.shape)}" for a in arrays)
            raise ShapeError(f"reference failed on inputs [{shapes}]: {type(exc).__name__}: {exc}",
                             node.name, node.op) from exc
        outs = list(result) if isinstance(result, (tuple, list)) else [result]
        return [o if isinstance(o, (np.ndarray, *NON_TENSOR_VALUES)) or o is None else np.asarray(o) for o in outs]


_REGISTRY: dict[str, OpDef] = {}


def op(name: str, inputs: str = "X", outputs: str = "Y", attrs: dict[str, Any] | None = None,
       fusion: Fusion = Fusion.OPAQUE, doc: str = "", **facts: Any) -> OpDef:
    """Define and register an op. Defining the same op twice is an error (one op, one place).

    ``facts`` are the per-op facts passes read: ``weights`` (weight input slots), ``layout`` (a :class:`Layout`),
    ``layout_slots`` (inputs carrying activations, for ``Layout.ATTR``/``VIA``) and ``layout_via``.
    """
    if name in _REGISTRY:
        raise ValueError(f"op {name} is already defined")
    d = OpDef(name, inputs, outputs, attrs, fusion, doc, **facts)
    _REGISTRY[name] = d
    return d


def _load_all() -> None:
    # Importing the op modules registers their ops.
    from quantgraph.ir.ops import load_all

    load_all()


def get_op(name: str) -> OpDef:
    """The definition of op ``name``; raises UnsupportedOpError naming known ops when there is none."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedOpError(f"no such op in the registry ({len(_REGISTRY)} ops are defined)", op=name) from None


def has_op(name: str) -> bool:
    _load_all()
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    _load_all()
    return dict(_REGISTRY)


def ref(name: str, *inputs: Any, **attrs: Any) -> Any:
    """Run op ``name``'s reference on arrays (for composing references of fused ops). Returns one array or a tuple."""
    d = get_op(name)
    node = Node(f"ref/{name}", name, tuple("x" if i is not None else "" for i in inputs), ("y",),
                d.complete_attrs(f"ref/{name}", attrs))
    outs = d.run_reference(node, [None if i is None else np.asarray(i) for i in inputs])
    return outs[0] if len(outs) == 1 else tuple(outs)


def same_type(x: TensorInfo) -> TensorType:
    """Inference helper: output has the input's shape and dtype."""
    return TensorType(x.shape, x.dtype)


def result_dtype(arr: np.ndarray) -> str:
    return dtype_name(arr)
