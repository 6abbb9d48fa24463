"""convert_layout: run convolution chains channels-last (the kernels' preferred layout), converting only at the
boundaries of each chain.

Which op does what is a per-op fact (``OpDef.layout``, see ``ir/ops/registry.py: Layout``). Anchors are 2-D ops with
a ``layout`` attribute (``FusedConv``, ``FusedPool``) or ops that become one (pooling becomes ``FusedPool``).
Layout-agnostic ops (elementwise ops of same-shape tensors, scalars and per-channel constants, and ``Concat`` over
the channel axis) join a chain when one of their inputs is already channels-last. A chain reads an
NCHW tensor through one ``Transpose(0, 2, 3, 1)`` per tensor; every NCHW reader outside the chain (Flatten, Reshape,
Gemm, a graph output, ...) reads through one ``Transpose(0, 3, 1, 2)`` per tensor, except a ``Flatten(axis=1)`` of a
1x1 spatial tensor (after a global pool), which reads the channels-last tensor directly: both orders are the same.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from quantgraph.compiler.rewrite import record
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.fused import to_channels_last
from quantgraph.ir.ops.registry import Layout, get_op

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)


def _rank4(graph: Graph, t: str) -> bool:
    return bool(t) and graph.tensors[t].rank == 4


def _is_anchor(graph: Graph, n: Node) -> bool:
    """An op that carries a layout (``Layout.ATTR``) or becomes one that does (``Layout.VIA``), still NCHW."""
    d = get_op(n.op)
    if d.layout is Layout.ATTR:
        return n.attrs["layout"] == "NCHW" and _rank4(graph, n.inputs[0])
    if d.layout is Layout.VIA:
        target = get_op(d.layout_via).attrs  # attributes the channels-last op cannot carry must be at their default
        lost = [k for k, v in n.attrs.items() if k not in target and v != d.attrs[k]]
        real_outs = [t for t in n.outputs if t]
        return len(real_outs) == 1 and _rank4(graph, n.inputs[0]) and not lost
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
    if d.layout is Layout.AGNOSTIC:
        acts = [i for i, t in enumerate(n.inputs)
                if t and not _is_scalar_const(graph, t) and not _per_channel_const(graph, t)]
        shape = graph.tensors[n.outputs[0]].shape
        if acts and all(graph.tensors[n.inputs[i]].shape == shape for i in acts):
            return acts
        return None
    if d.layout is Layout.CHANNEL_AXIS and n.attrs["axis"] in (1, -3) and all(_rank4(graph, t) for t in n.inputs):
        return list(range(len(n.inputs)))
    return None


def _nhwc_attrs(n: Node) -> tuple[str, dict[str, Any]]:
    """The channels-last version of an anchor or agnostic node: (op, attrs)."""
    d = get_op(n.op)
    if d.layout is Layout.ATTR:
        return n.op, {**n.attrs, "layout": "NHWC"}
    if d.layout is Layout.VIA:
        target = get_op(d.layout_via).attrs
        return d.layout_via, {"kind": n.op, "layout": "NHWC", **{k: v for k, v in n.attrs.items() if k in target}}
    if d.layout is Layout.CHANNEL_AXIS:
        return n.op, {**n.attrs, "axis": 3}
    return n.op, dict(n.attrs)


def _activation_slots(graph: Graph, n: Node) -> list[int]:
    d = get_op(n.op)
    if d.layout in (Layout.ATTR, Layout.VIA):
        return [i for i in d.layout_slots if i < len(n.inputs) and n.inputs[i]]
    return _agnostic_inputs(graph, n) or []


def _carry_qparams(graph: Graph, src: str, dst: str, perm: tuple[int, ...] = (0, 1, 2, 3)) -> None:
    """``dst`` (``src`` permuted by ``perm``) keeps ``src``'s quantization, with a per-channel axis moved along."""
    qp = graph.tensors[src].qparams
    if qp is not None and graph.tensors[dst].qparams is None:
        axis = None if qp.axis is None else perm.index(qp.axis % 4)
        graph.set_tensor(graph.tensors[dst].with_(qparams=replace(qp, axis=axis)))


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
                _carry_qparams(graph, t, to_nhwc[t], TO_NHWC)
                record("Transpose")
            return to_nhwc[t]

        chosen_names = {n.name for n in chosen}
        for n in chosen:
            slots = set(_activation_slots(graph, n))
            ins = [nhwc(t) if i in slots and t else t for i, t in enumerate(n.inputs)]
            if get_op(n.op).layout is Layout.AGNOSTIC:  # per-channel constants move their channel axis last too
                for i, t in enumerate(ins):
                    if i not in slots and _per_channel_const(graph, t):
                        c = graph.tensors[t].const
                        c4 = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(TO_NHWC)
                        ins[i] = graph.add_const(c4, name=graph.unique_name(f"{t}/nhwc"))
            op, attrs = _nhwc_attrs(n)
            out = graph.add(op, ins, name=f"convert_layout/{n.name}", **attrs)
            mapped[n.outputs[0]] = out[0] if isinstance(out, tuple) else out
            _carry_qparams(graph, n.outputs[0], mapped[n.outputs[0]], TO_NHWC)
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
                _carry_qparams(graph, y, back)
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
