"""ONNX ModelProto (or a path to one) -> ir.Graph.

Initializers and ``Constant`` nodes become constants; each node goes through the converter registered for its
op and the model's opset. Every unsupported node of the model is reported in one UnsupportedOpError.
"""
from __future__ import annotations

import os
from typing import Any, Union

import onnx
from onnx import helper

from quantgraph.errors import ModelLoadError, QuantgraphError, UnsupportedOpError
from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.dtypes import ir_dtype, type_dtype
from quantgraph.frontends.onnx.registry import ONNX_CONVERTERS
from quantgraph.frontends.onnx.tensor_data import load_external_data, tensor_array
from quantgraph.ir.dtypes import element_of, is_sequence, is_tensor
from quantgraph.ir.graph import Graph
from quantgraph.ir.tensor import TensorInfo, TensorType

ModelLike = Union[str, os.PathLike, bytes, onnx.ModelProto]

#: the oldest default-domain opset we convert; ONNX guarantees the newest the installed onnx knows
MAX_OPSET = onnx.defs.onnx_opset_version()
_DOMAIN_ALIASES = {"ai.onnx": ""}


def _load_converters() -> None:
    import quantgraph.frontends.onnx.converters  # noqa: F401  (registers every converter)


def read_model(model: ModelLike) -> onnx.ModelProto:
    """Read a model from a path (with its external data), bytes or ModelProto, with errors that name the file."""
    return _read(model)[0]


def _read(model: ModelLike) -> tuple[onnx.ModelProto, str | None, dict[str, str]]:
    """(proto, the file it came from or None, per tensor with external data: where that data came from)."""
    if isinstance(model, onnx.ModelProto):
        return model, None, {}
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_model_from_string(bytes(model)), None, {}
        except Exception as exc:
            raise ModelLoadError(f"bytes are not an ONNX model: {type(exc).__name__}: {exc}") from exc
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file '{path}' does not exist")
    if os.path.isdir(path):
        raise ModelLoadError(f"model path '{path}' is a directory; expected an .onnx file")
    try:  # NOTE: external data is read by tensor_data, whose errors name the tensor and the file
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"'{path}' is not a readable ONNX model (truncated or not protobuf?): "
                             f"{type(exc).__name__}: {exc}") from exc
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.output) == 0):
        raise ModelLoadError(f"'{path}' parsed but holds no graph; is it an ONNX model?")
    return proto, path, load_external_data(proto, path)


def _opsets(proto: onnx.ModelProto) -> dict[str, int]:
    opsets = {}
    for imp in proto.opset_import:
        opsets[_DOMAIN_ALIASES.get(imp.domain, imp.domain)] = int(imp.version)
    if "" not in opsets:
        opsets[""] = MAX_OPSET if not proto.opset_import else min(opsets.values(), default=MAX_OPSET)
    return opsets


class _Scope:
    """A graph being built and the scopes enclosing it: an ONNX subgraph may read any enclosing graph's tensor by
    name; resolving such a name declares it a capture of every subgraph between here and its definition."""

    def __init__(self, graph: Graph, opsets: dict[str, int], parent: "_Scope | None" = None):
        self.graph = graph
        self.opsets = opsets
        self.parent = parent

    def resolve(self, name: str) -> bool:
        if name in self.graph.tensors:
            return True
        if self.parent is not None and self.parent.resolve(name):
            self.graph.add_capture(name, self.parent.graph.tensors[name])
            return True
        return False


def _names(og: onnx.GraphProto) -> set[str]:
    """Every tensor name of ``og`` and its subgraphs."""
    names = {i.name for i in og.input} | {t.name for t in og.initializer} | {o.name for o in og.output}
    for n in og.node:
        names.update(list(n.input) + list(n.output))
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _names(a.g)
    return names


def _body_hints(n: onnx.NodeProto, graph: Graph, version: int) -> list[TensorType | None]:
    """The types a Loop/Scan body's inputs get from the node's inputs, for bodies that leave them undeclared
    (ONNX allows that). Loop-carried values keep their rank but not their dims (they may change per iteration)."""
    def info(t: str) -> TensorInfo | None:
        return graph.tensors.get(t) if t else None

    if n.op_type == "Loop":
        hints: list[TensorType | None] = [TensorType((), "int64"), TensorType((), "bool")]
        for t in n.input[2:]:
            i = info(t)
            hints.append(None if i is None else TensorType(
                None if i.shape is None else (None,) * len(i.shape), i.dtype))
        return hints
    if n.op_type == "SequenceMap":  # a sequence input gives the body one item; a tensor is passed whole
        out = []
        for t in n.input:
            i = info(t)
            out.append(None if i is None else TensorType(None, element_of(i.dtype)) if is_sequence(i.dtype)
                       else i.type)
        return out
    if n.op_type == "Scan":
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute if a.type != onnx.AttributeProto.GRAPH}
        ins = list(n.input[1:] if version < 9 else n.input)
        m = int(attrs.get("num_scan_inputs", 0))
        axes = list(attrs.get("scan_input_axes") or [0] * m) if version >= 9 else [0] * m
        hints = []
        for k, t in enumerate(ins):
            i = info(t)
            if i is None or i.shape is None:
                hints.append(None if i is None else TensorType(None, i.dtype))
                continue
            shape = list(i.shape[1:] if version < 9 else i.shape)  # opset 8: drop the batch axis
            if k >= len(ins) - m and shape:
                del shape[axes[k - (len(ins) - m)] % len(shape)]
            hints.append(TensorType(tuple(shape), i.dtype))
        return hints
    return []


def _import_subgraph(og: onnx.GraphProto, parent: _Scope, hints: list[TensorType | None]) -> Graph:
    """An ONNX subgraph (If branch, Loop/Scan body) as an ir.Graph whose outer-scope reads are captures.
    ``hints`` type the inputs the subgraph does not declare (from the owning node's inputs)."""
    sub = Graph(og.name or "subgraph")
    sub.reserved = parent.graph.reserved | _names(og)
    scope = _Scope(sub, parent.opsets, parent)
    for t in og.initializer:
        what = f"initializer '{t.name}' of subgraph '{sub.name}'"
        sub.add_const(tensor_array(t, what), name=t.name, dtype=ir_dtype(t.data_type, what))
    taken = _dim_params(og) | parent.graph.reserved
    for k, vi in enumerate(og.input):
        what = f"input '{vi.name}' of subgraph '{sub.name}'"
        hint = hints[k] if k < len(hints) else None
        if hint is not None and (not vi.type.WhichOneof("value")
                                 or vi.type.HasField("tensor_type") and not vi.type.tensor_type.elem_type):
            sub.add_input(vi.name, hint.shape, hint.dtype)
            continue
        dtype = type_dtype(vi.type, what)
        shape = _value_shape(vi, taken) if is_tensor(dtype) else None
        if hint is not None and not vi.type.tensor_type.HasField("shape"):
            shape = hint.shape
        sub.add_input(vi.name, shape, dtype)
    for i, n in enumerate(og.node):
        _convert_node(sub, n, i, parent.opsets, scope)
    for vo in og.output:
        if not scope.resolve(vo.name):
            raise ModelLoadError(f"output '{vo.name}' of subgraph '{sub.name}' is not produced by any node")
    sub.set_outputs([vo.name for vo in og.output])
    sub.reserved = set()
    return sub


def _attr_value(a: onnx.AttributeProto, scope: _Scope, hints: list[TensorType | None]) -> Any:
    if a.type == onnx.AttributeProto.GRAPH:
        return _import_subgraph(a.g, scope, hints)
    if a.type == onnx.AttributeProto.GRAPHS:
        raise NotImplementedError("attributes holding several graphs are not supported")
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, onnx.TensorProto):
        return tensor_array(v, f"attribute '{a.name}'")
    if isinstance(v, list):
        if v and isinstance(v[0], bytes):
            return tuple(x.decode("utf-8") for x in v)
        if v and isinstance(v[0], onnx.TensorProto):
            return tuple(tensor_array(x, f"attribute '{a.name}'") for x in v)
        return tuple(v)
    return v


def _value_shape(vi: onnx.ValueInfoProto, taken: set[str]) -> tuple[Any, ...] | None:
    """The declared shape; a dynamic dim without a name (no value, or -1) gets a fresh symbol not in ``taken``."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[Any] = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(str(d.dim_param))
        else:
            # NOTE: ONNX marks a dynamic dim by leaving it empty, and many exporters (PaddlePaddle, older
            # converters) write dim_value -1. Either is one size per call: its own symbol, so a batch of any size
            # is accepted and equal dims stay equal through shape inference (an unknown None would not).
            sym = f"{vi.name}_dim{axis}"
            while sym in taken:
                sym += "_"
            taken.add(sym)
            dims.append(sym)
    return tuple(dims)


def _dim_params(og: onnx.GraphProto) -> set[str]:
    return {d.dim_param for vi in list(og.input) + list(og.output) + list(og.value_info)
            for d in vi.type.tensor_type.shape.dim if d.HasField("dim_param")}


def _all_nodes(og: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes of ``og`` and of its subgraphs (depth first)."""
    out = []
    for n in og.node:
        out.append(n)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += _all_nodes(a.g)
    return out


def _check_supported(proto: onnx.ModelProto, opsets: dict[str, int]) -> None:
    problems = []
    for i, n in enumerate(_all_nodes(proto.graph)):
        domain = _DOMAIN_ALIASES.get(n.domain, n.domain)
        name = n.name or f"{n.op_type}_{i}"
        version = opsets.get(domain)
        if version is None:
            problems.append(f"'{name}' ({n.op_type}, domain '{domain}'): the model imports no opset for this domain")
            continue
        conv = ONNX_CONVERTERS.lookup(domain, n.op_type, version)
        if conv is None:
            known = ONNX_CONVERTERS.versions(domain, n.op_type)
            why = (f"supported since {', '.join(map(str, known))}" if known else "no converter")
            problems.append(f"'{name}' ({n.op_type}, domain '{domain or 'ai.onnx'}', opset {version}): {why}")
    if problems:
        raise UnsupportedOpError(f"onnx model has {len(problems)} unsupported node(s):\n  " + "\n  ".join(problems))


def import_onnx(model: ModelLike, name: str | None = None) -> Graph:
    """Convert an ONNX model (path, bytes or ModelProto) to an ir.Graph."""
    _load_converters()
    proto, path, sources = _read(model)
    opsets = _opsets(proto)
    if opsets[""] > MAX_OPSET:
        raise UnsupportedOpError(f"model uses opset {opsets['']} but the installed onnx knows only up to "
                                 f"{MAX_OPSET}")
    _check_supported(proto, opsets)
    og = proto.graph
    graph = Graph(name or og.name or "model")
    graph.reserved = _names(og)
    for t in og.initializer:
        what = f"initializer '{t.name}'"
        dtype = ir_dtype(t.data_type, what)  # raises for unsupported element types
        source = sources.get(t.name) or (f"'{path}'" if path else None)
        graph.add_const(tensor_array(t, what, source), name=t.name, dtype=dtype)
    for t in og.sparse_initializer:
        raise UnsupportedOpError(f"sparse initializer '{t.values.name}' is not supported")
    taken = _dim_params(og)
    for vi in og.input:
        if vi.name in graph.tensors:  # IR < 4 lists initializers as inputs too; the initializer wins
            continue
        dtype = type_dtype(vi.type, f"graph input '{vi.name}'")
        graph.add_input(vi.name, _value_shape(vi, taken) if is_tensor(dtype) else None, dtype)
    scope = _Scope(graph, opsets)
    for i, n in enumerate(og.node):
        _convert_node(graph, n, i, opsets, scope)
    for vo in og.output:
        if vo.name not in graph.tensors:
            raise ModelLoadError(f"graph output '{vo.name}' is not produced by any node")
    graph.set_outputs([vo.name for vo in og.output])
    graph.reserved = set()
    return graph


def _convert_node(graph: Graph, n: onnx.NodeProto, index: int, opsets: dict[str, int], scope: _Scope) -> None:
    domain = _DOMAIN_ALIASES.get(n.domain, n.domain)
    version = opsets[domain]
    conv = ONNX_CONVERTERS.lookup(domain, n.op_type, version)
    assert conv is not None  # _check_supported ran
    node_name = graph.unique_name(n.name or f"{n.op_type}_{index}")
    for t in n.input:
        if t:
            scope.resolve(t)  # an outer-scope read becomes a capture of this subgraph
    try:
        hints = _body_hints(n, graph, version) if any(a.type == onnx.AttributeProto.GRAPH for a in n.attribute) else []
        attrs = {a.name: _attr_value(a, scope, hints) for a in n.attribute}
    except NotImplementedError as exc:
        raise UnsupportedOpError(str(exc), node_name, n.op_type) from None
    except ModelLoadError as exc:
        raise ModelLoadError(exc.message, node_name, n.op_type) from exc
    allowed = conv.attr_names
    if allowed is not None:
        unexpected = sorted(set(attrs) - allowed)
        if unexpected:
            raise UnsupportedOpError(f"attribute(s) {', '.join(unexpected)} not supported by the converter "
                                     f"(opset {version}; known: {', '.join(sorted(allowed)) or 'none'})",
                                     node_name, n.op_type)
    for t in n.input:
        if t and t not in graph.tensors:
            raise ModelLoadError(f"input '{t}' is not produced by an earlier node, an initializer or a graph input "
                                 f"(nodes must be topologically sorted)", node_name, n.op_type)
    ctx = ConvertContext(graph, node_name, n.op_type, version, list(n.output))
    inputs = [t if t else None for t in n.input]
    try:
        result = conv.fn(ctx, *inputs, **attrs)
    except QuantgraphError:
        raise
    except TypeError as exc:  # arity mismatch between the node and the converter signature
        raise UnsupportedOpError(f"cannot convert: {exc}", node_name, n.op_type) from exc
    results = [result] if isinstance(result, str) else list(result)
    for i, want in enumerate(n.output):
        if not want:
            continue
        got = results[i] if i < len(results) else None
        if not got:
            raise UnsupportedOpError(f"optional output {i} ('{want}') is not supported by the converter",
                                     node_name, n.op_type)
        if got == want:
            continue
        if got in ctx.created and got not in graph.outputs and not _used_elsewhere(results, i, got):
            graph.rename_tensor(got, want)
        else:  # the output is an existing tensor (pass-through): give it its ONNX name with an Identity
            graph.add("Identity", [got], name=graph.unique_name(f"{node_name}/Identity"), outputs=[want])


def _used_elsewhere(results: list[Any], i: int, t: str) -> bool:
    return any(r == t for j, r in enumerate(results) if j != i)
