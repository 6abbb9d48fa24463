"""Quantizing inside control flow: each If branch and Loop/Scan body is quantized as a graph of its own, calibrated
on the values that reached it while the enclosing graph was calibrated.

onnxruntime's quantizer leaves everything inside an If in fp32, and silero VAD keeps all its weights in the two
branches of an If on the sample rate. Here the enclosing graph's calibration also records, per batch, the inputs of
each If, Loop and Scan (:func:`recorders`, handed to ``calibrate_graph`` as sinks). From them :func:`subgraph_feeds`
derives the feeds of each subgraph: for an If, the batches whose condition took that branch; for a Loop or Scan,
the body's inputs at each iteration, found by replaying the loop on the interpreter (at most
:data:`MAX_BODY_FEEDS`, evenly spaced). Each subgraph then goes through the whole quantize pipeline on its feeds
(first half of the passes, plan, calibrate, insert QDQ) as a graph whose inputs are its own inputs and captures,
the outer constants it reads becoming its constants (``ir.subgraph.standalone``); its QDQ form (integer weights)
replaces it (:func:`apply_subgraphs`). Lowering compiles each subgraph once from that form, which realizes its int8
ops as it does an imported QDQ model's; ``export_onnx`` writes it. A branch no calibration batch took, or a loop
that never iterated, stays fp32 (nothing says what its ranges are); control flow nested inside is handled by the
recursion, on the feeds that reached it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from quantgraph.ir.dtypes import is_tensor
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.control_flow import run_loop, run_scan
from quantgraph.ir.subgraph import (as_bool, as_subgraph, captured, replace_subgraphs, run_subgraph, standalone,
                                    subgraphs)

log = logging.getLogger(__name__)

CONTROL_FLOW = ("If", "Loop", "Scan")
#: feeds kept per Loop/Scan body (iterations x batches can be thousands; ranges settle long before)
MAX_BODY_FEEDS = 64


@dataclass
class Quantized:
    """One quantized subgraph: its QDQ form (inputs/captures as the original's) and the plan made for it."""

    node: str
    attr: str
    graph: Graph
    plan: Any                 # QuantPlan (quantize.py's; this module is imported by api.py, as quantize.py is)
    feeds: int

    @property
    def key(self) -> str:
        return f"{self.node}.{self.attr}"


class Recorder:
    """A calibration sink that keeps a copy of every value it sees (the plan hands out views of its arena)."""

    def __init__(self) -> None:
        self.values: list[np.ndarray] = []

    def observe(self, x: Any) -> None:
        self.values.append(np.array(x, copy=True))


def quantizable(graph: Graph) -> list[Node]:
    """The If/Loop/Scan nodes whose values, and their subgraphs' inputs and outputs, are all tensors."""
    out = []
    for n in graph.topo():
        if n.op not in CONTROL_FLOW:
            continue
        dts = [graph.tensors[t].dtype for t in list(n.inputs) + list(n.outputs) if t]
        for _, sub in subgraphs(n):
            dts += [sub.tensors[t].dtype for t in list(sub.inputs) + list(sub.outputs)]
        if all(is_tensor(dt) for dt in dts):
            out.append(n)
    return out


def recorders(graph: Graph) -> dict[str, Recorder]:
    """A recorder per computed input of each quantizable If/Loop/Scan."""
    out: dict[str, Recorder] = {}
    for n in quantizable(graph):
        for t in n.inputs:
            if t and graph.tensors[t].const is None:
                out.setdefault(t, Recorder())
    return out


def _batches(graph: Graph, n: Node, recorded: Mapping[str, Recorder]) -> list[list[Any]]:
    """The node's input values (None for an omitted optional input) at each calibration batch."""
    columns = [None if not t or graph.tensors[t].const is not None else recorded[t].values for t in n.inputs]
    counts = {len(c) for c in columns if c is not None}
    if len(counts) != 1:  # all constant (folding inlines those) or not observed once per batch: nothing to use
        return []
    return [[(graph.tensors[t].const if t else None) if c is None else c[i] for c, t in zip(columns, n.inputs)]
            for i in range(counts.pop())]


def subgraph_feeds(graph: Graph, n: Node, recorded: Mapping[str, Recorder]) -> dict[str, list[dict[str, Any]]]:
    """Per subgraph attribute: its feeds (input / capture name -> value) seen over the calibration batches."""
    out: dict[str, list[dict[str, Any]]] = {attr: [] for attr, _ in subgraphs(n)}
    for values in _batches(graph, n, recorded):
        if n.op == "If":
            attr = "then_branch" if as_bool(values[0]) else "else_branch"
            out[attr].append(captured(n, values)[attr])
            continue
        body = n.attrs["body"]

        def record(inputs: Sequence[Any], caps: dict) -> list:
            out["body"].append({**dict(zip(body.inputs, inputs)), **caps})
            return run_subgraph(body, inputs, caps)

        with np.errstate(all="ignore"):
            (run_loop if n.op == "Loop" else run_scan)(n, values, record)
    for attr, feeds in out.items():
        if len(feeds) > MAX_BODY_FEEDS:
            out[attr] = [feeds[int(i)] for i in np.linspace(0, len(feeds) - 1, MAX_BODY_FEEDS)]
    return out


def quantize_subgraphs(graph: Graph, recorded: Mapping[str, Recorder],
                       quantize: Callable[[Graph, list[dict[str, Any]]], "tuple[Graph | None, Any]"]
                       ) -> list[Quantized]:
    """Quantize every subgraph of the quantizable control-flow nodes that calibration reached;
    ``quantize(graph, feeds)`` runs the quantize pipeline on a standalone subgraph and returns (its QDQ graph, its
    plan), or (None, None) when it came quantized. Does not change ``graph`` (:func:`apply_subgraphs` does)."""
    out = []
    for n in quantizable(graph):
        feeds = subgraph_feeds(graph, n, recorded)
        for attr, sub in subgraphs(n):
            if not feeds.get(attr):
                what = "no calibration batch took" if n.op == "If" else "calibration never ran the"
                log.warning("quantize: %s %s of %s '%s'; it stays fp32", what, attr, n.op, n.name)
                continue
            own = standalone(n, attr, graph)  # outer constants it reads (weights) become its own
            qdq, plan = quantize(own, [{t: f[t] for t in own.inputs} for f in feeds[attr]])
            if qdq is None:
                continue
            out.append(Quantized(n.name, attr, as_subgraph(qdq, sub), plan, len(feeds[attr])))
    return out


def apply_subgraphs(graph: Graph, quantized: list[Quantized]) -> int:
    """Put the quantized subgraphs into ``graph``'s nodes of the same name (in place); returns how many."""
    done = 0
    for q in quantized:
        if q.node not in graph or graph.node(q.node).op not in CONTROL_FLOW:
            continue
        replace_subgraphs(graph, graph.node(q.node), {q.attr: q.graph})
        done += 1
    return done
