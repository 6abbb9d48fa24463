"""SmoothQuant (Xiao et al. 2023): move activation outliers of MatMul/Gemm inputs into the constant weights.

For an activation X read only by MatMul / Gemm nodes with constant weights, X W = (X / s) (s W) for any per-input-
channel s > 0. With s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (the max over every reader's weights), an outlier
channel of X is divided down and its weight row multiplied up, so the per-tensor activation scale is no longer set
by one channel (weights are per output channel, so a larger input row costs them less). The per-channel max|X_j|
comes from a first calibration pass (``channel_absmax``); the smoothed graph is then calibrated as usual.

Where X / s goes: folded into a LayerNormalization that produces X (gamma / s, beta / s) when X has no reader but
the smoothed products, free at run time; otherwise a Mul by 1 / s is inserted before the products (an fp32
elementwise pass: correct for any producer, and the common transformer case, LayerNorm, pays nothing).
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node

#: s is kept within [1/S_LIMIT, S_LIMIT]: a dead channel (max 0) must not blow the other side up
S_LIMIT = 1e4


def _weight_rows(g: Graph, n: Node) -> np.ndarray | None:
    """Reader ``n``'s weights as (K, N): input channel first; None when it cannot be smoothed."""
    if n.op not in ("MatMul", "Gemm") or len(n.inputs) < 2:
        return None
    w = g.tensors[n.inputs[1]].const
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return None
    if n.op == "Gemm":
        if n.attrs["transA"] or n.attrs["alpha"] != 1.0:
            return None
        return w.T if n.attrs["transB"] else w
    return w


def candidates(graph: Graph) -> dict[str, list[str]]:
    """{activation: the MatMul/Gemm nodes reading it} for activations read only as the A of such products."""
    g = graph
    out: dict[str, list[str]] = {}
    for t, info in g.tensors.items():
        if info.const is not None or info.dtype != "float32" or (info.rank or 0) < 2:
            continue
        readers = g.consumers(t)
        if not readers:
            continue
        if all(r.inputs[0] == t and t not in r.inputs[1:] and _weight_rows(g, r) is not None for r in readers):
            out[t] = [r.name for r in readers]
    return out


def factors(graph: Graph, x: str, readers: list[str], x_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's s for activation ``x`` (see the module docstring)."""
    w_max = np.max([np.abs(_weight_rows(graph, graph.node(r))).max(axis=1) for r in readers], axis=0)
    a = np.asarray(x_absmax, np.float64)
    ok = (a > 0) & (w_max > 0)
    s = np.where(ok, np.power(np.where(ok, a, 1.0), alpha) / np.power(np.where(ok, w_max, 1.0), 1.0 - alpha), 1.0)
    return np.clip(s, 1.0 / S_LIMIT, S_LIMIT)


def smooth(graph: Graph, absmax: dict[str, np.ndarray], alpha: float) -> int:
    """Apply SmoothQuant to ``graph`` in place, for the activations in ``absmax`` (from :func:`candidates`);
    returns how many activations were smoothed."""
    g = graph
    done = 0
    for x, readers in candidates(g).items():
        if x not in absmax:
            continue
        s = factors(g, x, readers, absmax[x], alpha)
        if np.allclose(s, 1.0):
            continue
        for r in readers:  # W * s along the input channel
            n = g.node(r)
            w = g.tensors[n.inputs[1]].const.astype(np.float64)
            trans = n.op == "Gemm" and n.attrs["transB"]
            w = w * (s[None, :] if trans else s[:, None])
            name = g.add_const(w.astype(np.float32), f"{n.inputs[1]}/smoothed")
            g.set_inputs_of(n, [n.inputs[0], name] + list(n.inputs[2:]))
        p = g.producer(x)
        if (p is not None and p.op == "LayerNormalization" and p.outputs[0] == x and x not in g.outputs
                and p.attrs.get("axis", -1) in (-1, g.tensors[x].rank - 1)
                and all(t and g.tensors[t].const is not None for t in p.inputs[1:])):
            ins = list(p.inputs)
            for slot in range(1, len(ins)):
                v = g.tensors[ins[slot]].const.astype(np.float64)
                ins[slot] = g.add_const((v / s).astype(np.float32), f"{ins[slot]}/smoothed")
            g.set_inputs_of(p, ins)
        else:
            inv = g.add_const((1.0 / s).astype(np.float32), f"{x}/smooth_inv")
            y = g.add("Mul", [x, inv], name=g.unique_name(f"{x}/smooth"))
            for r in readers:
                n = g.node(r)
                g.set_inputs_of(n, [y] + list(n.inputs[1:]))
        done += 1
    if done:
        g.remove_unused_constants()
    return done
