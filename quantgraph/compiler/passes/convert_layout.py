"""convert_layout: run convolution chains channels-last (the kernels' preferred layout), converting only at the
boundaries of each chain.

Anchors are 2-D ``FusedConv``/``QConv`` and pooling ops (``MaxPool``/``AveragePool``/``Global*Pool`` become
``FusedPool`` so they carry a layout; int8 ``MaxPool`` too). Layout-agnostic ops (elementwise activations, binary
ops of two same-shape tensors or a tensor and a scalar, ``QAdd`` of two same-shape tensors, per-tensor
``QuantizeLinear``/``DequantizeLinear``, channel ``Concat``) join a chain when one of their inputs is already
channels-last, so a chain of int8 ops stays NHWC and int8 from end to end. A chain reads an
NCHW tensor through one ``Transpose(0, 2, 3, 1)`` per tensor; every NCHW reader outside the chain (Flatten, Reshape,
Gemm, a graph output, ...) reads through one ``Transpose(0, 3, 1, 2)`` per tensor, except a ``Flatten(axis=1)`` of a
1x1 spatial tensor (after a global pool), which reads the channels-last tensor directly: both orders are the same.
"""
from __future__ import annotations

from typing import Any, Callable

from quantgraph.compiler.rewrite import record
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.fused import _POOL_KEYS, to_channels_last
from quantgraph.ir.ops.registry import Fusion, get_op

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
#: layout-carrying ops (their ``layout`` attribute) and the input slots that hold activations (X, residual Z)
CONVS = {"FusedConv": (0, 3), "QConv": (0, 9)}
#: quantization ops that are elementwise when their parameters are per tensor
QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
#: binary ops that are layout-agnostic when both operands have the same shape (or one is a scalar)
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"})


def _rank4(graph: Graph, t: str) -> bool:
    return bool(t) and graph.tensors[t].rank == 4


def _is_anchor(graph: Graph, n: Node) -> bool:
    if n.op in CONVS:
        return n.attrs["layout"] == "NCHW" and _rank4(graph, n.inputs[0])
    if n.op == "FusedPool":
        return n.attrs["layout"] == "NCHW" and _rank4(graph, n.inputs[0])
    if n.op in POOLS:
        real_outs = [t for t in n.outputs if t]
        return (len(real_outs) == 1 and _rank4(graph, n.inputs[0])
                and n.attrs.get("storage_order", 0) == 0
                and graph.tensors[n.inputs[0]].dtype in ("float32", "uint8", "int8"))
    return False


def _is_scalar_const(graph: Graph, t: str) -> bool:
    c = graph.tensors[t].const
    return c is not None and c.size == 1


def _per_channel_const(graph: Graph, t: str) -> bool:
    """A constant that broadcasts as one value per channel of an NCHW tensor: (C, 1, 1) or (1, C, 1, 1)."""
    c = graph.tensors[t].const
    if c is None or c.ndim > 4 or c.ndim < 3:
        return False
    full = (1,) * (4 - c.ndim) + c.shape
    return full[0] == 1 and full[2] == 1 and full[3] == 1


def _agnostic_inputs(graph: Graph, n: Node) -> list[int] | None:
    """Slots of ``n`` that carry activations, when ``n`` can run in either layout; None when it cannot."""
    if len([t for t in n.outputs if t]) != 1 or not _rank4(graph, n.outputs[0]):
        return None
    d = get_op(n.op)
    if d.fusion is Fusion.ELEMWISE and n.op not in ("Cast",):
        if not _rank4(graph, n.inputs[0]) or not all(_is_scalar_const(graph, t) for t in n.inputs[1:] if t):
            return None
        return [0]
    if n.op in BINARY:
        acts = [i for i, t in enumerate(n.inputs)
                if not _is_scalar_const(graph, t) and not _per_channel_const(graph, t)]
        shape = graph.tensors[n.outputs[0]].shape
        if acts and all(graph.tensors[n.inputs[i]].shape == shape for i in acts):
            return acts
        return None
    if n.op == "QAdd" and graph.tensors[n.inputs[0]].shape == graph.tensors[n.inputs[3]].shape:
        return [0, 3]
    if n.op in QDQ and _rank4(graph, n.inputs[0]) and all(_is_scalar_const(graph, t) for t in n.inputs[1:] if t):
        return [0]
    if n.op == "Concat" and n.attrs["axis"] in (1, -3) and all(_rank4(graph, t) for t in n.inputs):
        return list(range(len(n.inputs)))
    return None


def _nhwc_attrs(n: Node) -> tuple[str, dict[str, Any]]:
    """The channels-last version of an anchor or agnostic node: (op, attrs)."""
    if n.op in CONVS or n.op == "FusedPool":
        return n.op, {**n.attrs, "layout": "NHWC"}
    if n.op in POOLS:
        return "FusedPool", {"kind": n.op, "layout": "NHWC", **{k: n.attrs[k] for k in _POOL_KEYS[n.op]}}
    if n.op == "Concat":
        return n.op, {**n.attrs, "axis": 3}
    return n.op, dict(n.attrs)


def _activation_slots(graph: Graph, n: Node) -> list[int]:
    if n.op in CONVS:
        return [i for i in CONVS[n.op] if len(n.inputs) > i and n.inputs[i]]
    if n.op in POOLS or n.op == "FusedPool":
        return [0]
    return _agnostic_inputs(graph, n) or []


def _flatten_absorbs(graph: Graph, reader: Node, t: str) -> bool:
    """Flatten(axis=1) of an (N, C, 1, 1) tensor reads the same bytes in either layout."""
    shape = graph.tensors[t].shape
    return (reader.op == "Flatten" and reader.attrs["axis"] == 1 and shape is not None
            and shape[2] == 1 and shape[3] == 1)


def convert_layout(preferred: str = "NHWC") -> Callable[[Graph], Graph]:
    """Pass factory: convert convolution/pooling chains to ``preferred`` ("NHWC") layout."""
    if preferred != "NHWC":
        raise ValueError(f"convert_layout: preferred layout '{preferred}' is not supported; only NHWC")

    def convert_layout(graph: Graph) -> Graph:  # noqa: F811 - the pass is named like its factory
        chosen: list[Node] = []
        in_chain: set[str] = set()
        for n in graph.topo():
            slots = None
            if _is_anchor(graph, n):
                slots = _activation_slots(graph, n)
            else:
                acts = _agnostic_inputs(graph, n)
                if acts is not None and any(n.inputs[i] in in_chain for i in acts):
                    slots = acts
            if slots is not None:
                chosen.append(n)
                in_chain.add(n.outputs[0])
        if not chosen:
            return graph
        mapped: dict[str, str] = {}       # NCHW tensor -> its channels-last twin
        to_nhwc: dict[str, str] = {}      # NCHW tensor from outside a chain -> Transpose to NHWC

        def nhwc(t: str) -> str:
            if t in mapped:
                return mapped[t]
            if t not in to_nhwc:
                to_nhwc[t] = graph.add("Transpose", [t], name=f"convert_layout/{t}/to_nhwc", perm=TO_NHWC)
                record("Transpose")
            return to_nhwc[t]

        chosen_names = {n.name for n in chosen}
        for n in chosen:
            slots = set(_activation_slots(graph, n))
            ins = [nhwc(t) if i in slots and t else t for i, t in enumerate(n.inputs)]
            if n.op in BINARY:  # per-channel constants move their channel axis last too
                for i, t in enumerate(ins):
                    if i not in slots and _per_channel_const(graph, t):
                        c = graph.tensors[t].const
                        c4 = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(TO_NHWC)
                        ins[i] = graph.add_const(c4, name=graph.unique_name(f"{t}/nhwc"))
            op, attrs = _nhwc_attrs(n)
            out = graph.add(op, ins, name=f"convert_layout/{n.name}", **attrs)
            mapped[n.outputs[0]] = out[0] if isinstance(out, tuple) else out
            record(f"{n.op}->NHWC")
        renames: list[tuple[str, str]] = []
        for n in chosen:
            y = n.outputs[0]
            readers = [r for r in graph.consumers(y) if r.name not in chosen_names]
            for r in readers:
                if _flatten_absorbs(graph, r, y):
                    graph.set_inputs_of(r, [mapped[y] if t == y else t for t in r.inputs])
                    record("absorbed_by_flatten")
            readers = [r for r in graph.consumers(y) if r.name not in chosen_names]
            if readers or y in graph.outputs:
                back = graph.add("Transpose", [mapped[y]], name=f"convert_layout/{y}/to_nchw", perm=TO_NCHW)
                record("Transpose")
                for r in readers:
                    graph.set_inputs_of(r, [back if t == y else t for t in r.inputs])
                if y in graph.outputs:
                    graph.outputs = [back if t == y else t for t in graph.outputs]
                    renames.append((back, y))
        for n in reversed(chosen):
            graph.erase(n)
        for new, old in renames:  # graph outputs keep their names
            graph.rename_tensor(new, old)
        return graph

    return convert_layout


__all__ = ["convert_layout", "to_channels_last"]
