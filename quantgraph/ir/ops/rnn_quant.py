"""Dynamically quantized recurrent ops: QLSTM and QGRU (int8 weights, activations quantized at run time).

Compiler-made (``compiler/quantize/dynamic_rnn.py`` turns LSTM/GRU nodes with constant weights into them); their
references below define the exact semantics every kernel reproduces:

* weights: ``W`` (dirs, gates*hidden, input) and ``R`` (dirs, gates*hidden, hidden) int8, symmetric, one float32
  scale per output row (per gate channel): ``W_scale``/``R_scale`` (dirs, gates*hidden);
* the input projection: X (all steps, one tensor) quantized by ONNX DynamicQuantizeLinear (u8, zero point), int32
  sums ``(x_q - zp) @ W_q^T``, dequantized as ``float32(sum) * (x_scale * W_scale)``, plus the float biases;
* per step, the hidden state feeding ``R`` is quantized the same way (per tensor, every step; for GRU with
  ``linear_before_reset=0`` the product ``r * h`` is, before ``R_h``), with int32 sums and the same dequantization;
* the rest (gates, cell update) is the float LSTM/GRU of ``ir/ops/rnn.py`` with the default activations (no clip,
  peepholes, input_forget or sequence_lens: the quantizer leaves such nodes fp32).

The integer sums are exact (int64 here; |sum| <= 255 * 127 * K fits int32 for K < 66000, so the kernels' int32
sums equal them); the float parts are float32 where the quantizer rounds (scales, DynamicQuantizeLinear), and
float64 in the gates, so a kernel's outputs match closely, its integer sums exactly for the same quantized input.
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op
from quantgraph.ir.ops.rnn import DIRECTIONS, _expect, _sigmoid
from quantgraph.ir.tensor import TensorInfo, TensorType

GATES = {"QLSTM": 4, "QGRU": 3}
_ATTRS = {"hidden_size": None, "direction": "forward", "layout": 0}


def dynamic_quantize_u8(x: np.ndarray) -> tuple[np.ndarray, np.float32, int]:
    """ONNX DynamicQuantizeLinear in float32: (q u8, scale, zero point); an all-zero tensor gets scale 1, zp 0."""
    x = np.asarray(x, np.float32)
    lo = min(np.float32(0), x.min()) if x.size else np.float32(0)
    hi = max(np.float32(0), x.max()) if x.size else np.float32(0)
    scale = np.float32((hi - lo) / np.float32(255))
    if not scale > 0:
        return np.zeros(x.shape, np.uint8), np.float32(1), 0
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + np.float32(zp), 0, 255).astype(np.uint8)
    return q, scale, zp


def int_matmul(q: np.ndarray, zp: int, w_q: np.ndarray) -> np.ndarray:
    """The exact integer sums ``(q - zp) @ w_q^T`` (w_q: (N, K) int8), as int32."""
    return ((q.astype(np.int64) - zp) @ w_q.astype(np.int64).T).astype(np.int32)


def quantized_matmul(x: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """``x @ W^T`` as the op computes it: x quantized dynamically, int sums, dequantized (float32, no bias)."""
    q, s, zp = dynamic_quantize_u8(x)
    return int_matmul(q, zp, w_q).astype(np.float32) * (s * np.asarray(w_scale, np.float32))


qlstm = op("QLSTM", inputs="X W W_scale R R_scale B? initial_h? initial_c?", outputs="Y Y_h Y_c",
           attrs=dict(_ATTRS), fusion=Fusion.OPAQUE,
           doc="LSTM (gates i, o, f, c) on s8 per-row weights, X and h quantized dynamically (u8) per step")
qgru = op("QGRU", inputs="X W W_scale R R_scale B? initial_h?", outputs="Y Y_h",
          attrs={**_ATTRS, "linear_before_reset": 0}, fusion=Fusion.OPAQUE,
          doc="GRU (gates z, r, h) on s8 per-row weights, X and h quantized dynamically (u8) per step")


def _infer(n: Node, x: TensorInfo, w: TensorInfo, ws: TensorInfo, r: TensorInfo, rs: TensorInfo,
           b: TensorInfo | None, *states: TensorInfo | None) -> list[TensorType]:
    if n.attrs["direction"] not in DIRECTIONS:
        raise n.error(f"direction is '{n.attrs['direction']}'; expected one of {', '.join(DIRECTIONS)}")
    if n.attrs["layout"] not in (0, 1):
        raise n.error(f"layout is {n.attrs['layout']}; expected 0 or 1")
    if x.dtype != "float32":
        raise n.error(f"X is {x.dtype}; {n.op} expects float32")
    for what, t in (("W", w), ("R", r)):
        if t.dtype != "int8":
            raise n.error(f"{what} is {t.dtype}; {n.op} expects int8 weights")
    nd = len(DIRECTIONS[n.attrs["direction"]])
    _expect(n, "X", x, (None, None, None))
    _expect(n, "R", r, (nd, None, None))
    if r.shape is None or not isinstance(r.shape[2], int):
        raise n.error(f"R has shape {r.shape}; {n.op} needs a static hidden size")
    hid = r.shape[2]
    g = GATES[n.op] * hid
    seq, batch, feat = x.shape if x.shape is not None else (None, None, None)
    if n.attrs["layout"]:
        seq, batch = batch, seq
    _expect(n, "W", w, (nd, g, feat))
    _expect(n, "R", r, (nd, g, hid))
    _expect(n, "W_scale", ws, (nd, g))
    _expect(n, "R_scale", rs, (nd, g))
    _expect(n, "B", b, (nd, 2 * g))
    state = (batch, nd, hid) if n.attrs["layout"] else (nd, batch, hid)
    for what, t in zip(("initial_h", "initial_c"), states):
        _expect(n, what, t, state)
    y = (batch, seq, nd, hid) if n.attrs["layout"] else (seq, nd, batch, hid)
    return [TensorType(y, "float32")] + [TensorType(state, "float32")] * (len(n.outputs) - 1)


@qlstm.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, ws: TensorInfo, r: TensorInfo, rs: TensorInfo, b: TensorInfo | None,
      h0: TensorInfo | None, c0: TensorInfo | None) -> list[TensorType]:
    return _infer(n, x, w, ws, r, rs, b, h0, c0)


@qgru.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, ws: TensorInfo, r: TensorInfo, rs: TensorInfo, b: TensorInfo | None,
      h0: TensorInfo | None) -> list[TensorType]:
    return _infer(n, x, w, ws, r, rs, b, h0)


def _lstm_step(h: np.ndarray, c: np.ndarray, xw: np.ndarray, rq: np.ndarray, rs: np.ndarray,
               attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    gi, go, gf, gc = np.split(xw + quantized_matmul(h, rq, rs), 4, axis=1)
    c = _sigmoid(gf, 0, 0) * c + _sigmoid(gi, 0, 0) * np.tanh(gc)
    return _sigmoid(go, 0, 0) * np.tanh(c), c


def _gru_step(h: np.ndarray, c: None, xw: np.ndarray, rq: np.ndarray, rs: np.ndarray,
              attrs: dict) -> tuple[np.ndarray, None]:
    hid = h.shape[1]
    xz, xr, xh = np.split(xw, 3, axis=1)  # Rb is in xw for z and r, and for h when linear_before_reset=0
    if attrs["linear_before_reset"]:
        rec = quantized_matmul(h, rq, rs)
        rec[:, 2 * hid:] += attrs["_rb_h"]
        z = _sigmoid(xz + rec[:, :hid], 0, 0)
        r = _sigmoid(xr + rec[:, hid:2 * hid], 0, 0)
        cand = np.tanh(xh + r * rec[:, 2 * hid:])
    else:
        rec = quantized_matmul(h, rq[:2 * hid], rs[:2 * hid])
        z = _sigmoid(xz + rec[:, :hid], 0, 0)
        r = _sigmoid(xr + rec[:, hid:], 0, 0)
        cand = np.tanh(xh + quantized_matmul(r * h, rq[2 * hid:], rs[2 * hid:]))
    return (1 - z) * cand + z * h, None


def folded_bias(op_name: str, b: np.ndarray | None, gh: int, lbr: int) -> tuple[np.ndarray, np.ndarray]:
    """(bias added to the input projection, Rb_h kept apart) per direction: Wb + Rb, except GRU
    linear_before_reset=1, whose Rb_h is multiplied by r and so stays out of the projection."""
    nd = 1 if b is None else b.shape[0]
    hid = gh // GATES[op_name]
    if b is None:
        return np.zeros((nd, gh), np.float32), np.zeros((nd, hid), np.float32)
    b = np.asarray(b, np.float32)
    wb, rb = b[:, :gh], b[:, gh:]
    if op_name == "QGRU" and lbr:
        keep = rb.copy()
        keep[:, 2 * hid:] = 0
        return wb + keep, np.ascontiguousarray(rb[:, 2 * hid:])
    return wb + rb, np.zeros((nd, hid), np.float32)


def _run(n: Node, x: np.ndarray, wq: np.ndarray, ws: np.ndarray, rq: np.ndarray, rs: np.ndarray,
         b: np.ndarray | None, init: list[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    layout = n.attrs["layout"]
    lstm = n.op == "QLSTM"
    x = np.asarray(x, np.float32)
    if layout:
        x = x.transpose(1, 0, 2)
        init = [None if s is None else s.transpose(1, 0, 2) for s in init]
    seq, batch, feat = x.shape
    hid = rq.shape[2]
    gh = GATES[n.op] * hid
    lbr = n.attrs.get("linear_before_reset", 0)
    bias_x, rb_h = folded_bias(n.op, b, gh, lbr)
    directions = DIRECTIONS[n.attrs["direction"]]
    xflat = x.reshape(seq * batch, feat)
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(directions):
        xw = (quantized_matmul(xflat, wq[d], ws[d]) + bias_x[min(d, len(bias_x) - 1)]).astype(np.float64)
        xw = xw.reshape(seq, batch, gh)
        attrs = dict(n.attrs, _rb_h=rb_h[min(d, len(rb_h) - 1)].astype(np.float64))
        h = np.zeros((batch, hid)) if init[0] is None else init[0][d].astype(np.float64)
        c = None if not lstm else (np.zeros((batch, hid)) if init[1] is None else init[1][d].astype(np.float64))
        y = np.zeros((seq, batch, hid))
        step = _lstm_step if lstm else _gru_step
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            h, c = step(h, c, xw[t], rq[d], rs[d], attrs)
            y[t] = h
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y_all = np.stack(ys, axis=1)
    states = [np.stack(hs)] + ([np.stack(cs)] if lstm else [])
    if layout:
        y_all = y_all.transpose(2, 0, 1, 3)
        states = [s.transpose(1, 0, 2) for s in states]
    return tuple(a.astype(np.float32) for a in [y_all] + states)


@qlstm.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, ws: np.ndarray, r: np.ndarray, rs: np.ndarray, b: np.ndarray | None,
      h0: np.ndarray | None, c0: np.ndarray | None) -> tuple[np.ndarray, ...]:
    return _run(n, x, w, ws, r, rs, b, [h0, c0])


@qgru.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, ws: np.ndarray, r: np.ndarray, rs: np.ndarray, b: np.ndarray | None,
      h0: np.ndarray | None) -> tuple[np.ndarray, ...]:
    return _run(n, x, w, ws, r, rs, b, [h0])
