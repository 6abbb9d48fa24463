"""Dynamic int8 for recurrent layers: LSTM ==> QLSTM, GRU ==> QGRU (``ir/ops/rnn_quant.py``).

    LSTM(x, W, R, B, -, h0, c0)  ==>  QLSTM(x, W_q, W_scale, R_q, R_scale, B, h0, c0)
    GRU(x, W, R, B, -, h0)       ==>  QGRU(x, W_q, W_scale, R_q, R_scale, B, h0)

The weights become s8, symmetric, one scale per output row (per gate channel), quantized once here; X and the
hidden state are quantized at run time (per tensor, every step), so nothing is calibrated for them: an LSTM's
recurrent state has no range a calibration set could bound well, and onnxruntime's DynamicQuantizeLSTM does the
same. The quantizer (``quantize.plan_quantization``) decides these nodes int8 with the reason :data:`DECISION`, and
``insert_qdq`` calls :func:`quantize_dynamic_rnn` for them; ``exclude=`` / ``precision=`` fp32 keep a node fp32.
A node keeps fp32, with :func:`dynamic_rnn_refusal`'s reason, when its weights are not constant or it uses
something the int8 op does not define (custom activations, clip, peepholes, input_forget, sequence_lens).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.rnn import CELLS, DIRECTIONS, canonical_activation

#: float op -> its dynamically quantized form
DYNAMIC_RNN_OPS = {"LSTM": "QLSTM", "GRU": "QGRU"}
DECISION = "dynamic int8 (QLSTM/QGRU: s8 weights per gate row, X and h quantized per step)"
WEIGHT_QMAX = 127


def _inp(n: Node, i: int) -> str:
    return n.inputs[i] if len(n.inputs) > i else ""


def dynamic_rnn_refusal(g: Graph, n: Node) -> str | None:
    """Why ``n`` (an LSTM or GRU) cannot become QLSTM/QGRU, or None."""
    cell = CELLS[n.op]
    names = n.attrs["activations"]
    nd = len(DIRECTIONS.get(n.attrs["direction"], ()))
    if names and tuple(canonical_activation(a) for a in names) not in (cell.default_acts, cell.default_acts * nd):
        return f"activations {tuple(names)} are not the defaults: no int8 form"
    if n.attrs["activation_alpha"] or n.attrs["activation_beta"] or n.attrs["clip"] is not None:
        return "activation alpha/beta or clip are set: no int8 form"
    if _inp(n, 4):
        return "sequence_lens is given: no int8 form"
    if n.op == "LSTM" and (n.attrs["input_forget"] or _inp(n, 7)):
        return "peepholes or input_forget: no int8 form"
    for t in (_inp(n, 1), _inp(n, 2), _inp(n, 3)):
        if t and g.tensors[t].const is None:
            return f"'{t}' is not a constant: dynamic int8 needs constant weights"
    if g.tensors[n.inputs[0]].dtype != "float32":
        return f"X is {g.tensors[n.inputs[0]].dtype}: dynamic int8 takes float32"
    r = g.tensors[n.inputs[2]].const
    if r.ndim != 3:
        return "R is not 3-D"
    return None


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8, float32 scales) of w (dirs, rows, K): symmetric in [-127, 127], one scale per (dir, row)."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=2) if w.shape[2] else np.zeros(w.shape[:2], np.float32)
    scale = np.where(amax > 0, amax / np.float32(WEIGHT_QMAX), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, :, None]), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return q, scale


def _replace(g: Graph, n: Node) -> None:
    x, w, r = n.inputs[0], g.tensors[n.inputs[1]].const, g.tensors[n.inputs[2]].const
    wq, ws = quantize_rows(w)
    rq, rs = quantize_rows(r)
    c = [g.add_const(wq, f"{n.inputs[1]}/int8"), g.add_const(ws, f"{n.inputs[1]}/scale"),
         g.add_const(rq, f"{n.inputs[2]}/int8"), g.add_const(rs, f"{n.inputs[2]}/scale")]
    states = [_inp(n, 5)] + ([_inp(n, 6)] if n.op == "LSTM" else [])
    attrs = {"hidden_size": int(rq.shape[2]), "direction": n.attrs["direction"], "layout": n.attrs["layout"]}
    if n.op == "GRU":
        attrs["linear_before_reset"] = int(n.attrs["linear_before_reset"])
    qop = DYNAMIC_RNN_OPS[n.op]
    outs = g.add(qop, [x] + c + [_inp(n, 3)] + states, name=f"{n.name}/{qop}", **attrs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    for old, new in zip(n.outputs, outs):
        if old:
            g.replace_uses(old, new)
    g.erase(n)
    for old, new in zip(n.outputs, outs):  # keep the tensor names (graph outputs are named by them)
        if old and old not in g.tensors:
            g.rename_tensor(new, old)


def quantize_dynamic_rnn(graph: Graph, nodes: Iterable[str] | None = None) -> Graph:
    """Replace LSTM/GRU nodes (``nodes``, or every one that is not refused) by QLSTM/QGRU; returns the graph."""
    wanted = None if nodes is None else set(nodes)
    for n in list(graph.topo()):
        if n.op in DYNAMIC_RNN_OPS and (wanted is None or n.name in wanted) and dynamic_rnn_refusal(graph, n) is None:
            _replace(graph, n)
    return graph
