"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", section 4.1), on the fp32 graph.

For Conv1 -> [Relu] -> Conv2 where the tensors between have no other reader, relu(x / s) = relu(x) / s for s > 0
(Relu and identity are positively homogeneous; Relu6 / Clip are not, so a Clip between stops a pair), so dividing
Conv1's output channel i (weights and bias) by s_i and multiplying Conv2's input channel i by s_i leaves the
function unchanged. With r1_i = max|W1[i]| and r2_i = max|W2[:, i]|, s_i = sqrt(r1_i * r2_i) / r2_i makes both
ranges sqrt(r1_i * r2_i): a depthwise conv whose channels span 1000x in range stops writing channels 1000x apart
into one per-tensor activation scale. Chains (pointwise -> depthwise -> pointwise) share convs between pairs, so
the pairs are swept ``iterations`` times. Conv2 may be a plain conv (group 1) or depthwise (group == its input
channels); other group counts are left alone. Runs before planning, so calibration observes the equalized graph.
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node

#: sweeps over the pairs (the paper's iteration; ranges change by < 1e-3 relative after a few on chains)
ITERATIONS = 4


def _sole_reader(g: Graph, t: str) -> Node | None:
    readers = g.consumers(t)
    return readers[0] if len(readers) == 1 and t not in g.outputs else None


def _const_input(g: Graph, n: Node, slot: int) -> np.ndarray | None:
    if len(n.inputs) <= slot or not n.inputs[slot]:
        return None
    return g.tensors[n.inputs[slot]].const


def _conv_ok(g: Graph, n: Node) -> bool:
    w = _const_input(g, n, 1)
    if w is None or w.dtype != np.float32 or w.ndim < 3:
        return False
    return len(n.inputs) < 3 or not n.inputs[2] or _const_input(g, n, 2) is not None


def pairs(graph: Graph) -> list[tuple[Node, Node]]:
    """(Conv1, Conv2) pairs CLE can rescale (see the module docstring)."""
    g = graph
    out = []
    for n in g.topo():
        if n.op != "Conv" or not _conv_ok(g, n):
            continue
        r = _sole_reader(g, n.outputs[0])
        if r is not None and r.op == "Relu":
            r = _sole_reader(g, r.outputs[0])
        if r is None or r.op != "Conv" or not _conv_ok(g, r):
            continue
        c = g.tensors[n.inputs[1]].const.shape[0]
        w2 = g.tensors[r.inputs[1]].const
        group = int(r.attrs.get("group", 1))
        if (group == 1 and w2.shape[1] == c) or (group == c and w2.shape[1] == 1 and w2.shape[0] % c == 0):
            out.append((n, r))
    return out


def _set_const(g: Graph, n: Node, slot: int, value: np.ndarray) -> Node:
    """A new constant in ``slot`` of ``n`` (the old one may be shared with another node); returns the new node
    (nodes are immutable: ``n`` is stale afterwards)."""
    name = g.add_const(value.astype(np.float32), f"{n.inputs[slot]}/equalized")
    ins = list(n.inputs)
    ins[slot] = name
    return g.set_inputs_of(n, ins)


def equalize(graph: Graph, iterations: int = ITERATIONS) -> int:
    """Cross-layer equalization of ``graph`` in place; returns the number of conv pairs rescaled."""
    g = graph
    found = [(a.name, b.name) for a, b in pairs(g)]
    for _ in range(iterations):
        for a_name, b_name in found:
            a, b = g.node(a_name), g.node(b_name)
            w1 = g.tensors[a.inputs[1]].const.astype(np.float64)
            w2 = g.tensors[b.inputs[1]].const.astype(np.float64)
            c = w1.shape[0]
            r1 = np.abs(w1.reshape(c, -1)).max(axis=1)
            depthwise = int(b.attrs.get("group", 1)) == c and w2.shape[1] == 1 and c > 1
            if depthwise:  # output channels of input channel i are rows i*m .. i*m + m - 1
                r2 = np.abs(w2.reshape(c, -1)).max(axis=1)
            else:
                r2 = np.abs(np.moveaxis(w2, 1, 0).reshape(c, -1)).max(axis=1)
            ok = (r1 > 0) & (r2 > 0)
            s = np.where(ok, np.sqrt(r1 * r2) / np.where(ok, r2, 1.0), 1.0)
            shape1 = (c,) + (1,) * (w1.ndim - 1)
            a = _set_const(g, a, 1, w1 / s.reshape(shape1))
            b1 = _const_input(g, a, 2)
            if b1 is not None:
                _set_const(g, a, 2, b1.astype(np.float64) / s)
            if depthwise:
                m = w2.shape[0] // c
                _set_const(g, b, 1, w2 * np.repeat(s, m).reshape((c * m,) + (1,) * (w2.ndim - 1)))
            else:
                _set_const(g, b, 1, w2 * s.reshape((1, c) + (1,) * (w2.ndim - 2)))
    if found:
        g.remove_unused_constants()
    return len(found)
