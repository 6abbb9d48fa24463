"""ir.Graph -> onnx.ModelProto (and a file): the inverse of the importer (``importer.py`` + ``converters/*``).

The converters translate every opset up to the IR ops, which have the newest ONNX semantics and the ONNX attribute
names with their defaults filled in. So most ops export as they are: a *passthrough* node, checked against the
ONNX schema of the target opset (the op exists there; input and output counts; element types; attributes). An
attribute the target opset's schema lacks is dropped when it holds the IR default (which means "absent", i.e. the
older behaviour: Attention-23 has no ``left_window_size``, SpaceToDepth no ``mode`` before 28); any other value,
and anything else the schema refuses, raises ``UnsupportedOpError`` naming the node, the op, what it found, and the
opset that can express it. Ops that need more than a passthrough have one entry each in ``EXPORTERS``:

    Cast, EyeLike, Quantize/DequantizeLinear   IR dtype names -> ONNX element-type codes (to, dtype, output_dtype)
    Split                      num_outputs made explicit when there is no split input (Split-18 needs one of them)
    Range                      stash_type (27) dropped where Range-11 means the same (any type but fp16/bf16)
    GridSample                 below opset 20: GridSample-16's mode names (bilinear, bicubic), 4-D only
    GroupNormalization         per-channel scale and bias: opset 21 (GroupNormalization-18 scales per group)
    Resize, Pad                half_pixel_symmetric / wrap mode: opset 19
    MaxPool, AveragePool, LpPool  ceil_mode: opset 22 (before it, a last window starting in the padding counted)
    Mod                        fmod=0 on floats / fmod=1 on integers: opset 28
    BatchNormalizationTraining BatchNormalization(training_mode=1) (opset 14's three outputs)
    QuantizeClip               Clip(x, (qmin - zp) * s, (qmax - zp) * s) -> QuantizeLinear: the same integers
    Fused*, Q* (compiler-made) UnsupportedOpError: they exist only after optimization (export the graph before it:
                               ``CompiledModel.export_onnx`` writes ``export_graph``, the imported or QDQ graph)

Constants become initializers in their own dtype (int8 / uint8 / int16 / int32 weights stay integers); a constant
graph output becomes a Constant node. Graph inputs and outputs keep their names, dtypes and shapes (symbolic dims
as ``dim_param``, unknown dims empty). The opset is by default the lowest one >= ``DEFAULT_OPSET`` that expresses
every node (Attention / RMSNormalization 23, Swish 24 raise it), the IR version the lowest for that opset.
"""
from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantgraph.errors import UnsupportedOpError
from quantgraph.frontends.onnx.dtypes import IR_TO_ONNX, type_proto
from quantgraph.ir.dtypes import dtype_name, element_of, inner_of, is_optional, is_sequence, is_tensor
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import get_op
from quantgraph.ir.subgraph import captured, own_inputs, subgraphs

#: int16 QuantizeLinear / DequantizeLinear need 21; Gelu 20; LayerNormalization 17
DEFAULT_OPSET = 21
#: the IR's forms of Reduce* (axes input), Split (num_outputs), Pad (axes input) and Resize are opset 18's
MIN_OPSET = 18
#: the newest opset the installed onnx knows
MAX_OPSET = onnx.defs.onnx_opset_version()
#: initializers above this many bytes in total go to an external data file beside the model (protobuf's 2 GiB cap)
EXTERNAL_DATA_BYTES = 2 ** 31 - 2 ** 26

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_ONNX_TYPE_NAMES = {"float32": "float", "float64": "double"}
_LIST_ATTRS = {onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS, onnx.AttributeProto.STRINGS}


@dataclass
class OnnxNode:
    """One ONNX node to write: op, tensor names ("" = omitted), attributes as the IR holds them (None = unset).

    ``absent`` holds attribute values that mean "not set" (the IR op's defaults): such an attribute is dropped when
    the target opset's schema does not have it. ``since`` / ``why``: the first opset with these semantics."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    name: str
    source: Node
    absent: Mapping[str, Any] = field(default_factory=dict)
    since: int = 0
    why: str = ""
    #: outer values its subgraphs read by name (not ONNX inputs, but uses: their initializers must be written)
    implicit: list[str] = field(default_factory=list)


class ExportContext:
    """What an exporter entry sees: the graph, the target opset, dtypes, and fresh names for the tensors it adds."""

    def __init__(self, graph: Graph, opset: int):
        self.graph = graph
        self.opset = opset
        self.dtypes: dict[str, str] = {t: info.dtype for t, info in graph.tensors.items()}
        self.extra_consts: dict[str, np.ndarray] = {}
        self._taken = set(graph.tensors) | {n.name for n in graph.topo()}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self._taken:
            i += 1
            name = f"{base}_{i}"
        self._taken.add(name)
        return name

    def tensor(self, base: str, dtype: str) -> str:
        """A new intermediate tensor name of ``dtype``."""
        name = self.fresh(base)
        self.dtypes[name] = dtype
        return name

    def const(self, value: np.ndarray, base: str) -> str:
        """A new initializer."""
        name = self.tensor(base, _dtype_of(value))
        self.extra_consts[name] = value
        return name

    def value(self, tensor: str) -> np.ndarray | None:
        info = self.graph.tensors.get(tensor) if tensor else None
        return None if info is None else info.const


Exporter = Callable[[ExportContext, Node], list[OnnxNode]]
#: IR op -> exporter, for the ops a passthrough does not cover (one entry per op)
EXPORTERS: dict[str, Exporter] = {}


def exports(*ops: str) -> Callable[[Exporter], Exporter]:
    def deco(fn: Exporter) -> Exporter:
        for op in ops:
            if op in EXPORTERS:
                raise ValueError(f"exporter for {op} is defined twice")
            EXPORTERS[op] = fn
        return fn

    return deco


def passthrough(ctx: ExportContext, n: Node, **changes: Any) -> OnnxNode:
    """``n`` as the ONNX node of the same name, inputs, outputs and attributes (``changes`` override attributes)."""
    attrs = {**n.attrs, **changes}
    node = OnnxNode(n.op, list(n.inputs), list(n.outputs), attrs, n.name, n, get_op(n.op).attrs)
    for (op, attr, value), since in VALUE_SINCE.items():
        if op == n.op and attrs.get(attr) == value:
            node.since, node.why = since, f"{attr} '{value}'"
    return node


#: (op, attribute, value) -> the first opset whose semantics are the IR's for that value
VALUE_SINCE: dict[tuple[str, str, Any], int] = {
    ("Resize", "coordinate_transformation_mode", "half_pixel_symmetric"): 19,
    ("Pad", "mode", "wrap"): 19,
    # ceil_mode output sizes where the last window would start in the padding: the IR (and 22) drop it
    ("MaxPool", "ceil_mode", 1): 22,
    ("AveragePool", "ceil_mode", 1): 22,
    ("LpPool", "ceil_mode", 1): 22,
}


# -- the ops that need more than a passthrough ------------------------------------------------------------------
def _dtype_attrs(*names: str) -> Exporter:
    """IR dtype names in attributes ``names`` -> ONNX element-type codes (None stays unset)."""
    def export(ctx: ExportContext, n: Node) -> list[OnnxNode]:
        return [passthrough(ctx, n, **{k: None if n.attrs[k] is None else IR_TO_ONNX[n.attrs[k]] for k in names})]

    return export


exports("Cast")(_dtype_attrs("to"))
exports("EyeLike")(_dtype_attrs("dtype"))
exports("SequenceEmpty")(_dtype_attrs("dtype"))
exports("QuantizeLinear")(_dtype_attrs("output_dtype", "precision"))
exports("DequantizeLinear")(_dtype_attrs("output_dtype"))


@exports("Split")
def _split(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    # Split-18 wants the split input or num_outputs; the IR splits into len(outputs) equal parts without either
    has_split = len(n.inputs) > 1 and bool(n.inputs[1])
    return [passthrough(ctx, n, num_outputs=None if has_split else (n.attrs["num_outputs"] or len(n.outputs)))]


@exports("Range")
def _range(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    node = passthrough(ctx, n)
    # stash_type only matters for float16 / bfloat16; the importer records Range-11 (opset < 27) as DOUBLE
    if ctx.dtypes[n.inputs[0]] not in FLOAT_DTYPES[:2] or n.attrs["stash_type"] == TensorProto.DOUBLE:
        node.absent = {**node.absent, "stash_type": n.attrs["stash_type"]}
    return [node]


@exports("Mod")
def _mod(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    node = passthrough(ctx, n)
    # Mod-10/13: fmod=0 for integers only, fmod=1 for floats only; 28 allows both on every type
    if (ctx.dtypes[n.inputs[0]] in FLOAT_DTYPES) != bool(n.attrs["fmod"]):
        node.since, node.why = 28, f"fmod={n.attrs['fmod']} on {ctx.dtypes[n.inputs[0]]}"
    return [node]


#: GridSample-20 mode names -> GridSample-16's
_OLD_GRID_MODES = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}


@exports("GridSample")
def _grid_sample(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    if ctx.opset >= 20:
        return [passthrough(ctx, n)]
    node = passthrough(ctx, n, mode=_OLD_GRID_MODES[n.attrs["mode"]])
    if ctx.graph.tensors[n.inputs[0]].rank != 4:
        node.since, node.why = 20, "volumetric (non 4-D) input"
    return [node]


@exports("GroupNormalization")
def _group_norm(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    node = passthrough(ctx, n)
    node.since, node.why = 21, "per-channel scale and bias (GroupNormalization-18 has one per group)"
    return [node]


@exports("BatchNormalizationTraining")
def _bn_training(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    if any(n.outputs[3:]):
        raise n.unsupported("saved_mean / saved_inv_std (the outputs of BatchNormalization before opset 14) "
                            "have no ONNX form at opset >= 14; only Y, running_mean and running_var export")
    return [OnnxNode("BatchNormalization", list(n.inputs), list(n.outputs[:3]),
                     {**n.attrs, "training_mode": 1}, n.name, n)]


@exports("QuantizeClip")
def _quantize_clip(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    # clamp(Q(x), qmin, qmax) == Q(Clip(x, (qmin - zp) * s, (qmax - zp) * s)): the bounds are within float32
    # rounding of a multiple of s (|q| <= 65535), so Q maps them exactly onto qmin and qmax
    x, s_t, zp_t = n.inputs
    s, zp = ctx.value(s_t), ctx.value(zp_t)
    if s is None or zp is None:
        raise n.unsupported("Y_scale and Y_zero_point must be constants to write the clip bounds; they are run-time "
                            "tensors here")
    dtype = ctx.dtypes[x]
    scale, z = float(np.asarray(s).reshape(-1)[0]), int(np.asarray(zp).reshape(-1)[0])
    lo = ctx.const(np.asarray((n.attrs["qmin"] - z) * scale, dtype), f"{n.name}/min")
    hi = ctx.const(np.asarray((n.attrs["qmax"] - z) * scale, dtype), f"{n.name}/max")
    clipped = ctx.tensor(f"{n.name}/clipped", dtype)
    return [OnnxNode("Clip", [x, lo, hi], [clipped], {}, ctx.fresh(f"{n.name}/Clip"), n),
            OnnxNode("QuantizeLinear", [clipped, s_t, zp_t], list(n.outputs), {}, n.name, n)]


@exports("QLSTM", "QGRU")
def _dynamic_rnn(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    # The quantizer's dynamic int8 LSTM/GRU (ir/ops/rnn_quant.py): its int8 weights stay int8 in the file and are
    # dequantized in the graph (Cast, Mul by the per-row scales), feeding the float op; the run-time quantization
    # of X and h is not expressed (onnxruntime's DynamicQuantizeLSTM is not a standard op)
    x, wq, ws, rq, rs = n.inputs[:5]
    rest = list(n.inputs[5:])
    nodes, weights = [], []
    for q, s in ((wq, ws), (rq, rs)):
        scale = ctx.value(s)
        if scale is None:
            raise n.unsupported(f"the scales '{s}' must be constants to export {n.op}")
        s3 = ctx.const(np.asarray(scale, np.float32)[:, :, None], f"{s}/rows")
        qf = ctx.tensor(f"{q}/float", "float32")
        wf = ctx.tensor(f"{q}/dequantized", "float32")
        nodes += [OnnxNode("Cast", [q], [qf], {"to": TensorProto.FLOAT}, ctx.fresh(f"{n.name}/Cast"), n),
                  OnnxNode("Mul", [qf, s3], [wf], {}, ctx.fresh(f"{n.name}/Mul"), n)]
        weights.append(wf)
    op = n.op[1:]
    b = rest[0] if rest else ""
    ins = [x] + weights + [b, ""] + rest[1:]
    node = OnnxNode(op, ins, list(n.outputs), dict(n.attrs), n.name, n, get_op(op).attrs)
    if n.attrs.get("layout"):
        node.since, node.why = 14, "layout=1"
    return nodes + [node]


#: compiler-made ops (quantgraph/ir/ops/fused*.py): made by optimization, never by a frontend
_COMPILER_OPS = ("FusedConv", "FusedMatMul", "FusedPool", "FusedAttention", "QConv", "QMatMul", "QAdd",
                 "QAveragePool", "QConcat")


@exports(*_COMPILER_OPS)
def _compiler_op(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    raise n.unsupported("a compiler-made op has no ONNX form; export the graph before optimization (an imported "
                        "graph, or CompiledModel.export_onnx, which writes the model's fp32 or QDQ export_graph)")


# -- control flow: subgraph attributes as GraphProtos, captures as outer-scope names ------------------------------
def _subgraph_proto(ctx: ExportContext, n: Node, attr: str, bound: Mapping[str, str]) -> tuple[onnx.GraphProto, int]:
    """The subgraph ``attr`` of ``n`` at ``ctx.opset`` (and the lowest opset its nodes need). A capture reads the
    outer tensor bound to it by name (an Identity renames it when the names differ); a subgraph output no node of
    the subgraph computes (an input, capture or constant) gets its own Identity/Constant."""
    sub: Graph = n.attrs[attr]
    sctx, specs = _specs(sub, ctx.opset)
    sctx._taken |= ctx._taken
    need = max((_first_opset(sp, ctx.opset, sctx.dtypes) or ctx.opset for sp in specs), default=ctx.opset)
    for sp in specs:
        why = _check(sp, need, sctx.dtypes)
        if why is not None:
            raise _fail(sp, need, sctx.dtypes, why)
    nodes = [helper.make_node("Identity", [bound[c]], [c], name=sctx.fresh(f"{c}/outer"))
             for c in sub.captures if bound[c] != c]
    nodes += [_node_proto(sp, need) for sp in specs]
    produced = {t for sp in specs for t in sp.outputs if t}
    used = {t for sp in specs for t in list(sp.inputs) + sp.implicit if t} | set(sub.outputs)
    for t, v in {**{t: i.const for t, i in sub.tensors.items() if i.const is not None and t in used},
                 **sctx.extra_consts}.items():
        nodes.insert(0, helper.make_node("Constant", [], [t], name=sctx.fresh(f"{t}/Constant"),
                                         value=numpy_helper.from_array(np.asarray(v))))
        produced.add(t)
    outputs = []
    for t in sub.outputs:
        if t in produced and t not in [o for o, _ in outputs]:
            outputs.append((t, sub.tensors[t]))
            continue
        o = sctx.tensor(f"{t}/out", sub.tensors[t].dtype)
        nodes.append(helper.make_node("Identity", [t], [o], name=sctx.fresh(f"{o}/Identity")))
        outputs.append((o, sub.tensors[t]))
    og = helper.make_graph(nodes, sub.name, [_value_info(sub, t) for t in sub.inputs],
                           [_value_info_of(o, info) for o, info in outputs])
    return og, need


def _control_flow(ctx: ExportContext, n: Node, inputs: Sequence[str], **changes: Any) -> OnnxNode:
    """``n`` with its captured inputs dropped and its subgraphs as GraphProtos (ONNX subgraphs read outer names)."""
    bound_all = captured(n, list(n.inputs))
    attrs: dict[str, Any] = {}
    since = 0
    for attr, _ in subgraphs(n):
        attrs[attr], need = _subgraph_proto(ctx, n, attr, bound_all[attr])
        since = max(since, need)
    attrs.update(changes)
    node = passthrough(ctx, n, **attrs)
    node.inputs = list(inputs)
    node.implicit = [t for t in n.inputs[len(own_inputs(n, list(n.inputs))):] if t]
    node.absent = {k: v for k, v in node.absent.items() if k != "batched"}
    node.attrs.pop("batched", None)
    if since > ctx.opset:
        node.since, node.why = since, "a node of its subgraphs"
    return node


@exports("If", "Loop", "SequenceMap")
def _if_loop(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    return [_control_flow(ctx, n, own_inputs(n, list(n.inputs)))]


@exports("Scan")
def _scan(ctx: ExportContext, n: Node) -> list[OnnxNode]:
    if not n.attrs["batched"]:
        return [_control_flow(ctx, n, own_inputs(n, list(n.inputs)))]
    # opset 8's batched Scan: an outer Scan over the batch axis whose body runs the per-batch Scan
    own = own_inputs(n, list(n.inputs))
    inner = _control_flow(ctx, n, [f"{t}/b" for t in own])
    outer = Graph(f"{n.name}/batch")
    for t in own:
        info = ctx.graph.tensors[t]
        outer.add_input(f"{t}/b", None if info.shape is None else info.shape[1:], info.dtype)
    body_outs = [f"{t}/b" for t in n.outputs]
    for t, src in zip(body_outs, n.outputs):
        info = ctx.graph.tensors[src]
        outer.tensors[t] = info.with_(name=t, shape=None if info.shape is None else info.shape[1:])
    inner.outputs = body_outs
    _check_or_fail(inner, max(ctx.opset, inner.since), ctx.dtypes | {t: outer.tensors[t].dtype
                                                                     for t in outer.tensors})
    og = helper.make_graph([_node_proto(inner, max(ctx.opset, inner.since))], outer.name,
                           [_value_info(outer, t) for t in outer.inputs], [_value_info(outer, t) for t in body_outs])
    node = OnnxNode("Scan", list(own), list(n.outputs), {"body": og, "num_scan_inputs": len(own)}, n.name, n)
    node.since, node.why, node.implicit = inner.since, inner.why, inner.implicit
    return [node]


def _check_or_fail(node: OnnxNode, opset: int, dtypes: Mapping[str, str]) -> None:
    why = _check(node, opset, dtypes)
    if why is not None:
        raise _fail(node, opset, dtypes, why)


# -- checking one node against the ONNX schemas ------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _versions(op_type: str) -> tuple[int, ...]:
    """The since-versions of the default-domain op ``op_type`` (empty: not an ONNX op)."""
    return tuple(sorted(s.since_version for s in onnx.defs.get_all_schemas_with_history()
                        if s.name == op_type and s.domain == ""))


@functools.lru_cache(maxsize=None)
def _schema(op_type: str, opset: int) -> onnx.defs.OpSchema | None:
    if not _versions(op_type) or opset < _versions(op_type)[0]:
        return None
    return onnx.defs.get_schema(op_type, opset, "")


def _type_str(dtype: str) -> str:
    if is_sequence(dtype):
        return f"seq({_type_str(element_of(dtype))})"
    if is_optional(dtype):
        return f"optional({_type_str(inner_of(dtype))})"
    return f"tensor({_ONNX_TYPE_NAMES.get(dtype, dtype)})"


def _allowed(schema: onnx.defs.OpSchema, param: Any) -> set[str]:
    for c in schema.type_constraints:
        if c.type_param_str == param.type_str:
            return set(c.allowed_type_strs)
    return {param.type_str}


def _check_ports(schema: onnx.defs.OpSchema, names: Sequence[str], params: Sequence[Any], what: str,
                 dtypes: Mapping[str, str]) -> str | None:
    for i, t in enumerate(names):
        if i >= len(params) and not (params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic):
            return f"{len(names)} {what}s; {schema.name}-{schema.since_version} has {len(params)}"
        p = params[min(i, len(params) - 1)]
        if not t:
            if p.option == onnx.defs.OpSchema.FormalParameterOption.Single:
                return f"required {what} {i} ({p.name}) is omitted"
            continue
        allowed = _allowed(schema, p)
        if _type_str(dtypes[t]) not in allowed:
            return (f"{what} {i} ('{t}') is {dtypes[t]}; {schema.name}-{schema.since_version} takes "
                    f"{', '.join(sorted(a[7:-1] for a in allowed))}")
    for i, p in enumerate(params[len(names):], start=len(names)):
        if p.option == onnx.defs.OpSchema.FormalParameterOption.Single:
            return f"required {what} {i} ({p.name}) is missing"
    return None


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, tuple) and not value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return bool(a == b)


def _check(node: OnnxNode, opset: int, dtypes: Mapping[str, str]) -> str | None:
    """Why ``node`` cannot be written at ``opset``, or None when it can."""
    schema = _schema(node.op_type, opset)
    if schema is None:
        versions = _versions(node.op_type)
        return (f"{node.op_type} exists from opset {versions[0]}" if versions else
                f"{node.op_type} is not an ONNX operator")
    if schema.deprecated:
        return f"{node.op_type} is deprecated at opset {opset}"
    if opset < node.since:
        return f"{node.why} needs opset {node.since}"
    ins = list(node.inputs)
    while ins and not ins[-1]:
        ins.pop()
    outs = list(node.outputs)
    while outs and not outs[-1]:
        outs.pop()
    why = _check_ports(schema, ins, schema.inputs, "input", dtypes) or _check_ports(
        schema, outs, schema.outputs, "output", dtypes)
    if why:
        return why
    for k, v in node.attrs.items():
        if not _is_set(v) or k in schema.attributes:
            continue
        if k in node.absent and _same(v, node.absent[k]):
            continue
        return f"attribute {k}={v!r}: {schema.name}-{schema.since_version} has no such attribute"
    for k, a in schema.attributes.items():
        if a.required and not _is_set(node.attrs.get(k)):
            return f"required attribute '{k}' is missing"
    return None


def _first_opset(node: OnnxNode, start: int, dtypes: Mapping[str, str]) -> int | None:
    """The lowest opset >= ``start`` that can write ``node``, or None."""
    later = {v for v in _versions(node.op_type) if start < v <= MAX_OPSET}
    later |= {node.since} if start < node.since <= MAX_OPSET else set()
    for opset in sorted({start} | later):
        if _check(node, opset, dtypes) is None:
            return opset
    return None


def _fail(node: OnnxNode, opset: int, dtypes: Mapping[str, str], why: str) -> UnsupportedOpError:
    later = _first_opset(node, opset, dtypes)
    hint = (f"; expressible from opset {later} (export with opset={later})" if later is not None else
            f"; no ONNX opset up to {MAX_OPSET} expresses it")
    prefix = "" if node.op_type == node.source.op else f"as ONNX {node.op_type}: "
    return UnsupportedOpError(f"cannot export at opset {opset}: {prefix}{why}{hint}", node.source.name,
                              node.source.op)


# -- writing ------------------------------------------------------------------------------------------------------
def _attribute(name: str, value: Any, attr_type: int) -> onnx.AttributeProto:
    A = onnx.AttributeProto
    if attr_type == A.FLOAT:
        value = float(value)
    elif attr_type == A.INT:
        value = int(value)
    elif attr_type == A.STRING:
        value = str(value)
    elif attr_type == A.INTS:
        value = [int(v) for v in value]
    elif attr_type == A.FLOATS:
        value = [float(v) for v in value]
    elif attr_type == A.STRINGS:
        value = [str(v) for v in value]
    elif attr_type == A.TENSOR:
        value = numpy_helper.from_array(np.asarray(value))
    elif attr_type == A.GRAPH and isinstance(value, onnx.GraphProto):  # made by _subgraph_proto
        pass
    elif attr_type == A.TYPE_PROTO:  # an IR dtype (Optional's type)
        value = type_proto(value)
    else:
        raise UnsupportedOpError(f"attribute '{name}' of ONNX type {A.AttributeType.Name(attr_type)} is not "
                                 f"supported by the exporter")
    return helper.make_attribute(name, value, attr_type=attr_type)


def _node_proto(node: OnnxNode, opset: int) -> onnx.NodeProto:
    schema = _schema(node.op_type, opset)
    assert schema is not None  # checked
    proto = helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name)
    for k, v in node.attrs.items():
        if _is_set(v) and k in schema.attributes:
            proto.attribute.append(_attribute(k, v, int(schema.attributes[k].type)))
    return proto


def _dtype_of(value: np.ndarray) -> str:
    return dtype_name(value)


def _value_info(graph: Graph, name: str) -> onnx.ValueInfoProto:
    return _value_info_of(name, graph.tensors[name])


def _value_info_of(name: str, info: Any) -> onnx.ValueInfoProto:
    if not is_tensor(info.dtype):
        return helper.make_value_info(name, type_proto(info.dtype))
    shape = None if info.shape is None else [d if isinstance(d, (int, str)) else None for d in info.shape]
    return helper.make_tensor_value_info(name, IR_TO_ONNX[info.dtype], shape)


def _specs(graph: Graph, opset: int) -> tuple[ExportContext, list[OnnxNode]]:
    ctx = ExportContext(graph, opset)
    specs: list[OnnxNode] = []
    for n in graph.topo():
        fn = EXPORTERS.get(n.op)
        specs.extend(fn(ctx, n) if fn is not None else [passthrough(ctx, n)])
    return ctx, specs


def to_model_proto(graph: Graph, opset: int | None = None) -> onnx.ModelProto:
    """``graph`` as an ONNX model in standard ops at ``opset`` (None: the lowest >= DEFAULT_OPSET that expresses
    every node). Raises UnsupportedOpError naming the node and op for what ONNX cannot express at that opset."""
    from quantgraph import __version__

    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedOpError(f"opset {opset} is not supported by the exporter; choose {MIN_OPSET}..{MAX_OPSET}")
    target = DEFAULT_OPSET if opset is None else opset
    ctx, specs = _specs(graph, target)
    while opset is None:  # raise the opset to the lowest that writes every node; exporters may depend on it
        need = max((_first_opset(s, target, ctx.dtypes) or target for s in specs), default=target)
        if need <= target:
            break
        target = need
        ctx, specs = _specs(graph, target)
    for s in specs:
        why = _check(s, target, ctx.dtypes)
        if why is not None:
            raise _fail(s, target, ctx.dtypes, why)
    nodes = [_node_proto(s, target) for s in specs]
    used = {t for s in specs for t in list(s.inputs) + s.implicit if t} | set(graph.outputs)
    consts = {t: info.const for t, info in graph.tensors.items() if info.const is not None and t in used}
    produced = {t for s in specs for t in s.outputs if t}
    for t in dict.fromkeys(graph.outputs):  # a constant output: a Constant node (an initializer is no output)
        if t in consts and t not in produced:
            nodes.append(helper.make_node("Constant", [], [t], name=ctx.fresh(f"{t}/Constant"),
                                          value=numpy_helper.from_array(np.asarray(consts.pop(t)))))
    initializers = [numpy_helper.from_array(np.asarray(v), t) for t, v in {**consts, **ctx.extra_consts}.items()]
    og = helper.make_graph(nodes, graph.name, [_value_info(graph, t) for t in graph.inputs],
                           [_value_info(graph, t) for t in graph.outputs], initializers)
    opsets = [helper.make_opsetid("", target)]
    model = helper.make_model(og, opset_imports=opsets, producer_name="quantgraph", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    return model


def export_onnx(graph: Graph, path: str | os.PathLike, opset: int | None = None) -> str:
    """Write ``graph`` as an ONNX file at ``path`` (write-then-rename: never a half-written file); returns the path.

    Past ``EXTERNAL_DATA_BYTES`` of initializers the weights go to ``<file name>.data`` beside it (ONNX external
    data), written the same way."""
    path = os.fspath(path)
    model = to_model_proto(graph, opset)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmpdir = tempfile.mkdtemp(prefix=f".{base}.", dir=directory)
    try:
        tmp = os.path.join(tmpdir, base)
        if sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_BYTES:
            data = base + ".data"
            onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                            size_threshold=1024)
            os.replace(os.path.join(tmpdir, data), os.path.join(directory, data))
        else:
            with open(tmp, "wb") as f:
                f.write(model.SerializeToString())
        os.replace(tmp, path)
    finally:
        for f in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, f))
        os.rmdir(tmpdir)
    return path


__all__ = ["DEFAULT_OPSET", "EXPORTERS", "ExportContext", "OnnxNode", "export_onnx", "passthrough",
           "to_model_proto"]
