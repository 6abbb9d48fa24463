"""Kernel records for LSTM and GRU (float32) and their dynamically quantized forms QLSTM / QGRU (int8 GEMMs).

One driver for all four (:class:`_Layer`), per direction:

* the input projection ``X @ W^T + bias`` for a chunk of time steps at once, as one GEMM (about 300 rows: packed
  GEMM efficiency without a (seq, batch, gates*hidden) buffer: 540 MB for DeepSpeech2's first layer), into planned
  scratch; the biases are folded into it (Wb + Rb; GRU linear_before_reset=1 keeps Rb_h apart, it is scaled by r);
* per step, ``h @ R^T`` with R packed once at lowering, the GEMM adding the step's projection rows as its residual
  (packed fp32 GEMM, both threads splitting N, R packed thin for a batch of 8-12; numpy/OpenBLAS on the portable
  rung), then one fused cell kernel
  (``rnn_f32.lstm_cell`` / ``gru_cell``) writing h, c and Y[t]. GRU linear_before_reset=0 needs ``(r * h) @ R_h^T``,
  so it runs two GEMMs and two cell calls per step.
* int8 (QLSTM / QGRU, ``ir/ops/rnn_quant.py`` defines them): the same, with X quantized once per call and h each
  step (``rnn_f32.quantize_u8``) and the u8 x s8 GEMM (``gemm_int8``, weights packed once with zero point 0). Its
  float32 epilogue dequantizes in registers, ``float32(acc - zp * col_sum) * (scale * w_scale) + bias (+ the step's
  projection rows)``, from two per-column arrays the layer rewrites whenever the GEMM's input is quantized
  (``rnn_f32.dequant_params``), so the fp32 cell kernels run unchanged. GRU linear_before_reset=0 adds the
  projection's strided (z, r) / h columns, which an epilogue residual cannot read, so it keeps the int32 sums and
  dequantizes in its cell (``rnn_f32.gru_cell_q``).

* small layers (R^T <= ``SMALL_BYTES`` as float32, batch <= 8): the chunk's steps run in one serial Numba call
  (``rnn_f32.lstm_small`` / ``gru_small``), where a parallel GEMM launch per step would cost more than the work.

Refused (the registry reference runs them): custom activations or alpha/beta, clip, LSTM peepholes and
input_forget, sequence_lens, non-constant weights, RNN (the Elman cell).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.rnn import CELLS, DIRECTIONS, canonical_activation
from quantgraph.ir.ops.rnn_quant import GATES, folded_bias
from quantgraph.kernels.checks import const_of, dtype_of
from quantgraph.kernels.epilogue import Epilogue
from quantgraph.kernels.fp32 import gemm_f32_packed, rnn_f32
from quantgraph.kernels.gemm_int8 import GemmCall
from quantgraph.kernels.packing import PackedWeights, pack_weights
from quantgraph.kernels.registry import Kernel, Shapes, Step, register

ALIGN = 64
#: rows of the chunked input projection (time steps x batch) and the most scratch it may take
CHUNK_ROWS = 384
CHUNK_BYTES = 2 << 20
#: small layers run a chunk of steps per call (``rnn_f32.lstm_small``/``gru_small``, one core): R^T as dense float32
#: of at most this many bytes, at most this batch, and (int8, exact float32 sums) K <= 518. NOTE: measured on the
#: 2-core Zen 5, batch 1, 160 steps (``bench.rnn.build_model``): LSTM hidden 32 0.15 vs 0.56 ms (per-step GEMM),
#: hidden 128 (R^T 256 KB) 0.77 vs 1.25 ms, but hidden 256 (1 MB) 2.2 vs 1.6 ms: one core then reads R from L2 in
#: ~12 us a step (numpy's sgemv too), the two-thread GEMM in half that.
SMALL_BYTES = 512 * 1024
SMALL_MAX_BATCH = 8
SMALL_MAX_K_INT8 = 518
_EMPTY_F = np.zeros((1, 1), np.float32)
_EMPTY_Y = np.zeros(1, np.float32)


# -- accepts ----------------------------------------------------------------------------------------------------
def _inp(n: Node, i: int) -> str:
    return n.inputs[i] if len(n.inputs) > i else ""


def _common_refusal(n: Node, g: Graph, float_op: bool) -> str | None:
    if float_op:
        cell = CELLS[n.op]
        names = n.attrs["activations"]
        if names and tuple(canonical_activation(a) for a in names) not in (
                cell.default_acts, cell.default_acts * len(DIRECTIONS[n.attrs["direction"]])):
            return f"activations {tuple(names)} are not the defaults {cell.default_acts}: the reference runs them"
        if n.attrs["activation_alpha"] or n.attrs["activation_beta"]:
            return "activation_alpha/beta are set: the reference runs them"
        if n.attrs["clip"] is not None:
            return "clip is set: the reference runs it"
        if _inp(n, 4):
            return "sequence_lens (masking) runs the reference"
        if n.op == "LSTM" and n.attrs["input_forget"]:
            return "input_forget=1 runs the reference"
        if n.op == "LSTM" and _inp(n, 7):
            p = const_of(g, _inp(n, 7))
            if p is None or np.any(p):
                return "peepholes (P) run the reference"
        wr = (_inp(n, 1), _inp(n, 2), _inp(n, 3))
    else:
        wr = (_inp(n, 1), _inp(n, 2), _inp(n, 3), _inp(n, 4), _inp(n, 5))
    for t in wr:
        if t and const_of(g, t) is None:
            return f"'{t}' is not a constant: weights are packed at lowering"
    for t in [t for t in n.inputs if t][:1] + [t for t in n.outputs if t]:
        if dtype_of(g, t) != "float32":
            return f"tensor '{t}' is {dtype_of(g, t)}, kernel is float32 only"
    x = g.tensors[n.inputs[0]].shape
    if x is None or len(x) != 3:
        return "X has no known rank-3 shape"
    return None


def _f32_accepts(n: Node, g: Graph) -> str | None:
    return _common_refusal(n, g, True)


def _q_accepts(n: Node, g: Graph) -> str | None:
    return _common_refusal(n, g, False)


# -- prepack ----------------------------------------------------------------------------------------------------
@dataclass
class _Dir:
    """One direction's packed weights: the projection (K=input, N=gates*hidden) and 1 or 2 recurrent GEMMs."""

    wx: Any
    bias_x: np.ndarray
    rec: list[tuple[Any, np.ndarray | None]]    # (packed weights, GEMM bias or None)
    wx_scale: np.ndarray | None = None          # int8: per-row scales of W (dequantization)
    rec_scale: list[np.ndarray] | None = None
    small: list[tuple[np.ndarray, np.ndarray]] | None = None   # dense R^T float32 and its column sums, per GEMM


def _pack_f32(b_kn: np.ndarray, rows: int | None = None) -> Any:
    """Packed for the fp32 GEMM of the rung in force (thin panels when ``gemm_f32_packed.thin_for(rows)``: the
    recurrent GEMM of a batch of 8-12), or the dense (K, N) copy numpy multiplies by."""
    if gemm_f32_packed.select() is None:
        return np.ascontiguousarray(b_kn, np.float32)
    return gemm_f32_packed.pack_b(np.ascontiguousarray(b_kn, np.float32), thin=gemm_f32_packed.thin_for(rows))


def _pack_s8(w_nk: np.ndarray) -> PackedWeights:
    return pack_weights(np.ascontiguousarray(np.asarray(w_nk, np.int8).T), a_dtype="uint8", a_zero_point=0)


def _split_rec(op: str, lbr: int, hid: int) -> list[slice]:
    """Row ranges of R multiplied per GEMM: all gates, or (z, r) then h for GRU linear_before_reset=0."""
    if op in ("GRU", "QGRU") and not lbr:
        return [slice(0, 2 * hid), slice(2 * hid, 3 * hid)]
    return [slice(0, GATES["Q" + op.lstrip("Q")] * hid)]


def _prepack(n: Node, g: Graph) -> dict:
    quant = n.op.startswith("Q")
    qop = n.op if quant else "Q" + n.op
    w = const_of(g, n.inputs[1])
    r = const_of(g, n.inputs[3 if quant else 2])
    b = const_of(g, _inp(n, 5 if quant else 3))
    hid = r.shape[2]
    gh = GATES[qop] * hid
    lbr = int(n.attrs.get("linear_before_reset", 0))
    bias_x, rb_h = folded_bias(qop, b, gh, lbr)
    x_shape = g.tensors[n.inputs[0]].shape
    batch = x_shape[0 if n.attrs["layout"] else 1] if x_shape is not None and len(x_shape) == 3 else None
    dirs = []
    for d in range(r.shape[0]):
        bx = np.ascontiguousarray(bias_x[min(d, len(bias_x) - 1)], np.float32)
        parts = _split_rec(n.op, lbr, hid)
        rbias = None
        if qop == "QGRU" and lbr:
            rbias = np.zeros(gh, np.float32)
            rbias[2 * hid:] = rb_h[min(d, len(rb_h) - 1)]
        small = None
        if hid * gh * 4 <= SMALL_BYTES and (not quant or hid <= SMALL_MAX_K_INT8):
            small = [(np.ascontiguousarray(r[d][p].T, np.float32),
                      np.asarray(r[d][p], np.int64).sum(axis=1).astype(np.float32)) for p in parts]
        if quant:
            ws = np.asarray(const_of(g, n.inputs[2]), np.float32)[d]
            rs = np.asarray(const_of(g, n.inputs[4]), np.float32)[d]
            rec = [(_pack_s8(r[d][p]), rbias) for p in parts]
            dirs.append(_Dir(_pack_s8(w[d]), bx, rec, np.ascontiguousarray(ws),
                             [np.ascontiguousarray(rs[p]) for p in parts], small))
        else:
            rec = [(_pack_f32(r[d][p].T, batch), rbias) for p in parts]
            dirs.append(_Dir(_pack_f32(w[d].T), bx, rec, small=small))
    return {"dirs": dirs, "hidden": hid, "gates": gh, "lbr": lbr, "quant": quant,
            "kind": "lstm" if qop == "QLSTM" else "gru"}


# -- scratch ----------------------------------------------------------------------------------------------------
def _dims(n: Node, x_shape: tuple[int, ...]) -> tuple[int, int, int]:
    seq, batch, feat = x_shape
    return (batch, seq, feat) if n.attrs["layout"] else (seq, batch, feat)


def _chunk(seq: int, batch: int, gh: int) -> int:
    by_rows = max(1, -(-CHUNK_ROWS // batch))
    by_bytes = max(1, CHUNK_BYTES // max(1, batch * gh * 4))
    return max(1, min(seq, by_rows, by_bytes))


def _layout_of_scratch(n: Node, packed: dict, x_shape: tuple[int, ...]) -> list[tuple[str, tuple, Any]]:
    seq, batch, feat = _dims(n, x_shape)
    hid, gh = packed["hidden"], packed["gates"]
    ch = _chunk(seq, batch, gh)
    bufs = [("xw", (ch * batch, gh), np.float32), ("gates", (batch, gh), np.float32),
            ("h", (batch, hid), np.float32), ("c", (batch, hid), np.float32), ("z", (batch, hid), np.float32),
            ("rh", (batch, hid), np.float32)]
    if n.attrs["layout"] and not packed["quant"]:
        bufs.append(("xbuf", (ch * batch, feat), np.float32))
    if packed["quant"]:
        bufs += [("xq", (ch * batch, feat), np.uint8), ("hq", (batch, hid), np.uint8)]
        if packed["kind"] == "gru" and not packed["lbr"]:
            bufs.append(("acc", (batch, gh), np.int32))
    return bufs


def _nbytes(shape: tuple, dtype: Any) -> int:
    return -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // ALIGN) * ALIGN


def _scratch(n: Node, packed: dict, ins: Shapes, outs: Shapes) -> int | None:
    if ins[0] is None or any(not isinstance(d, int) for d in ins[0]):
        return None
    if _dims(n, ins[0])[0] == 0 or _dims(n, ins[0])[1] == 0:
        return None
    return sum(_nbytes(s, dt) for _, s, dt in _layout_of_scratch(n, packed, ins[0]))


def _carve(n: Node, packed: dict, x_shape: tuple[int, ...], scratch: np.ndarray) -> dict[str, np.ndarray]:
    out, off = {}, 0
    for name, shape, dt in _layout_of_scratch(n, packed, x_shape):
        nb = int(np.prod(shape)) * np.dtype(dt).itemsize
        out[name] = scratch[off:off + nb].view(dt).reshape(shape)
        off += _nbytes(shape, dt)
    return out


# -- GEMM steps -------------------------------------------------------------------------------------------------
def _np_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None) -> None:
    np.matmul(a, b, out=out)
    if bias is not None:
        out += bias
    if z is not None:
        out += z


def _f32_gemm(n: Node, a: np.ndarray, w: Any, out: np.ndarray, bias: np.ndarray | None = None,
              z: np.ndarray | None = None) -> Step:
    if isinstance(w, np.ndarray):
        return (_np_gemm, (a, w, out, bias, z))
    return gemm_f32_packed.bind(a, w, out, bias, z, node=n.name, op=n.op)


def _q_gemm(n: Node, a: np.ndarray, w: PackedWeights, out: np.ndarray, deq: tuple | None = None) -> Step:
    """The u8 x s8 GEMM into ``out``: int32 sums, or with ``deq = (b32, factor, bias, residual)`` float32
    ``float32(acc + b32) * factor (+ bias) (+ residual)`` (bias and residual may be None)."""
    if deq is None:
        ep = Epilogue()
    else:
        b32, factor, bias, res = deq
        if res is not None and not res.flags.c_contiguous:  # NOTE: the GEMM would read a copy made here
            raise AssertionError("the epilogue residual must be C-contiguous")
        ep = Epilogue(out_dtype="float32", scale=factor, bias=bias, residual=res)
    call = GemmCall("u8s8", "u8s8s32", a, w, ep, out, n.name, n.op)
    if deq is not None:
        # NOTE: the layer's own b32 and factor replace the epilogue's copies: they change with every quantization of
        # the GEMM's input (dequant_params rewrites them in place); the compiled kernel reads them per call
        call.ep = (deq[0], deq[1]) + call.ep[2:]
    if call.in_place and a.flags.c_contiguous:
        # NOTE: the kernel reads this A in place (checked once, here), so a step calls the numba dispatcher itself:
        # the per-call checks and the primitive wrapper cost ~5 us a step, as much as a small layer's GEMM. One run
        # now (on scratch) compiles or loads it through the primitive cache, which counts it and sets the threads.
        args = (a.reshape(-1), *call.head, call.ep, out, *call.tail)
        call.fn(*args)
        return (getattr(call.fn, "dispatcher", call.fn), args)
    return (call, (a, out))


def _deq_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(b32 int32[n], factor float32[n]): the epilogue terms ``rnn_f32.dequant_params`` writes."""
    return np.zeros(n, np.int32), np.zeros(n, np.float32)


# -- the driver -------------------------------------------------------------------------------------------------
class _Layer:
    """One bound LSTM/GRU/QLSTM/QGRU node: ``run(x, h0, c0)`` writes Y, Y_h, Y_c (any may be None)."""

    def __init__(self, n: Node, packed: dict, x: np.ndarray, outs: list, sc: dict[str, np.ndarray]):
        self.n, self.p, self.sc = n, packed, sc
        self.layout = n.attrs["layout"]
        self.seq, self.batch, self.feat = _dims(n, x.shape)
        self.hid, self.gh = packed["hidden"], packed["gates"]
        self.reverse = DIRECTIONS[n.attrs["direction"]]
        self.nd = len(self.reverse)
        self.y, self.yh, self.yc = (list(outs) + [None] * 3)[:3]
        self.chunk = _chunk(self.seq, self.batch, self.gh)
        self.yflat = self.y.reshape(-1) if self.y is not None else _EMPTY_Y
        if self.y is not None and not self.y.flags.c_contiguous:  # NOTE: planned outputs are; be safe anyway
            raise AssertionError("Y must be C-contiguous")
        b, h = self.batch, self.hid
        # Y offsets (elements) of step t, direction d, batch row 0; and the stride between batch rows
        self.y_bstride = self.seq * self.nd * h if self.layout else h
        self.chunks = [(t0, min(self.seq, t0 + self.chunk)) for t0 in range(0, self.seq, self.chunk)]
        # int8: per direction, the epilogue terms (b32, factor) of the projection and of each recurrent GEMM
        self.xdeq = [_deq_arrays(self.gh) for _ in range(self.nd)] if packed["quant"] else []
        self.hdeq = [[_deq_arrays(w.n) for w, _ in dr.rec] if packed["quant"] else [] for dr in packed["dirs"]]
        self.proj = [[self._proj_step(d, x, t0, t1) for t0, t1 in self.chunks] for d in range(self.nd)]
        self.rec = [[self._rec_steps(d, s) for s in range(self.chunk)] for d in range(self.nd)]
        # the cells read dequantized float32 gates, except GRU linear_before_reset=0's int8 one (see the docstring)
        name = "gru_q" if self.p["quant"] and self.p["kind"] == "gru" and not self.p["lbr"] else self.p["kind"]
        self.lstm = self.p["kind"] == "lstm"
        self.h, self.c = sc["h"], sc["c"]
        self.small = b <= SMALL_MAX_BATCH and all(dr.small is not None for dr in packed["dirs"])
        self.zero = np.zeros(self.gh, np.float32)
        self.q_dummy = (np.zeros((1, 1), np.uint8), np.zeros(1, np.float32))
        self.q_dummy[1].setflags(write=False)  # NOTE: as the constant scales are: one compiled signature for both
        self.g12 = (sc["gates"].reshape(-1)[:b * 2 * h].reshape(b, 2 * h),
                    sc["gates"].reshape(-1)[b * 2 * h:b * 3 * h].reshape(b, h))
        self.cells = (rnn_f32.cell(self.p["kind"], b, h), rnn_f32.cell(name, b, h))
        assert sc["h"].shape == (b, h)

    def y_off(self, t: int, d: int) -> int:
        h = self.hid
        return (t * self.nd + d) * h if self.layout else (t * self.nd + d) * self.batch * h

    # -- per-chunk projection
    def _proj_step(self, d: int, x: np.ndarray, t0: int, t1: int) -> list[Step]:
        sc, dr, n = self.sc, self.p["dirs"][d], self.n
        rows = (t1 - t0) * self.batch
        xw = sc["xw"][:rows]
        if self.p["quant"]:
            xq = sc["xq"][:rows]
            return [(self._quantize_x, (t0, t1, xq)), _q_gemm(n, xq, dr.wx, xw, (*self.xdeq[d], dr.bias_x, None))]
        if self.layout:
            a = sc["xbuf"][:rows]
            gather = (np.copyto, (a.reshape(t1 - t0, self.batch, self.feat), x[:, t0:t1].transpose(1, 0, 2)))
            return [gather, _f32_gemm(n, a, dr.wx, xw, dr.bias_x)]
        a = x.reshape(self.seq * self.batch, self.feat)[t0 * self.batch:t1 * self.batch]
        return [_f32_gemm(n, a, dr.wx, xw, dr.bias_x)]

    def _quantize_x(self, t0: int, t1: int, xq: np.ndarray) -> None:
        rnn_f32.quantize_rows_u8(self.x, self.layout, t0, t1, self.xs, self.xzp, xq)

    # -- per-step recurrent GEMM(s): slot s of the chunk buffer holds the step's projection rows
    def _rec_steps(self, d: int, s: int) -> list[_Part]:
        """The parts of one step: each is a GEMM (its steps) and the cell call that reads its result."""
        sc, dr, n, b, h = self.sc, self.p["dirs"][d], self.n, self.batch, self.hid
        xw = sc["xw"][s * b:(s + 1) * b]
        kind, lbr, quant = self.p["kind"], self.p["lbr"], self.p["quant"]
        gates, acc = sc["gates"], sc.get("acc")
        if kind == "lstm" or lbr:
            w, bias = dr.rec[0]
            base = xw if kind == "lstm" else None   # GRU lbr=1: the projection stays out of r * (...)
            if quant:
                b32, factor = self.hdeq[d][0]
                quantize = (self._quantize_h_deq, (sc["h"], w.col_sum, dr.rec_scale[0], b32, factor))
                return [_Part([quantize, _q_gemm(n, sc["hq"], w, gates, (b32, factor, bias, base))], xw, gates, 1)]
            return [_Part([_f32_gemm(n, sc["h"], w, gates, bias, base)], xw, gates, 1)]
        # GRU linear_before_reset=0: (z, r) from h, then h's gate from r * h
        (w1, _), (w2, _) = dr.rec
        x1, x2 = xw[:, :2 * h], xw[:, 2 * h:]
        g1 = gates.reshape(-1)[:b * 2 * h].reshape(b, 2 * h)
        g2 = gates.reshape(-1)[b * 2 * h:].reshape(b, h)
        if quant:
            a1 = acc.reshape(-1)[:b * 2 * h].reshape(b, 2 * h)
            a2 = acc.reshape(-1)[b * 2 * h:].reshape(b, h)
            return [_Part([(self._quantize_h, (sc["h"],)), _q_gemm(n, sc["hq"], w1, a1)], xw, g1, 2,
                          (a1, w1.col_sum, dr.rec_scale[0], np.zeros(2 * h, np.float32), x1)),
                    _Part([(self._quantize_h, (sc["rh"],)), _q_gemm(n, sc["hq"], w2, a2)], xw, g2, 3,
                          (a2, w2.col_sum, dr.rec_scale[1], np.zeros(h, np.float32), x2))]
        return [_Part([_f32_gemm(n, sc["h"], w1, g1, None, x1)], xw, g1, 2),
                _Part([_f32_gemm(n, sc["rh"], w2, g2, None, x2)], xw, g2, 3)]

    def _quantize_h(self, h: np.ndarray) -> None:
        self.hs, self.hzp = rnn_f32.quantize_u8(h, self.sc["hq"])

    def _quantize_h_deq(self, h: np.ndarray, col_sum: np.ndarray, w_scale: np.ndarray, b32: np.ndarray,
                        factor: np.ndarray) -> None:
        rnn_f32.quantize_u8_params(h, self.sc["hq"], col_sum, w_scale, b32, factor)

    # -- the time loop
    def run(self, x: np.ndarray, h0: np.ndarray | None, c0: np.ndarray | None) -> None:
        sc, lay = self.sc, self.layout
        self.x = x
        if self.p["quant"]:
            lo, hi = rnn_f32.range_of(x)
            q0 = np.zeros((1, 2), np.uint8)
            self.xs, self.xzp = rnn_f32.quantize_u8(np.array([[lo, hi]], np.float32), q0)
            for dr, (b32, factor) in zip(self.p["dirs"], self.xdeq):
                rnn_f32.dequant_params(self.xs, self.xzp, dr.wx.col_sum, dr.wx_scale, b32, factor)
        for d, reverse in enumerate(self.reverse):
            for buf, init in ((sc["h"], h0), (sc["c"], c0)):
                if init is None:
                    buf[...] = 0.0
                else:
                    buf[...] = init[:, d] if lay else init[d]
            order = range(len(self.chunks) - 1, -1, -1) if reverse else range(len(self.chunks))
            for ci in order:
                t0, t1 = self.chunks[ci]
                for fn, args in self.proj[d][ci]:
                    fn(*args)
                if self.small:
                    self._small(d, t0, t1, reverse)
                    continue
                steps = range(t1 - t0 - 1, -1, -1) if reverse else range(t1 - t0)
                for s in steps:
                    self._step(self.rec[d][s], self.y_off(t0 + s, d))
            for dst, buf in ((self.yh, sc["h"]), (self.yc, sc["c"])):
                if dst is not None:
                    if lay:
                        dst[:, d] = buf
                    else:
                        dst[d] = buf
        self.x = None

    def _small(self, d: int, t0: int, t1: int, reverse: bool) -> None:
        """A chunk of steps of a small layer in one call (``rnn_f32.lstm_small`` / ``gru_small``)."""
        sc, dr, quant = self.sc, self.p["dirs"][d], self.p["quant"]
        y_off0 = self.y_off(t0, d)
        y_step = self.y_off(t0 + 1, d) - y_off0
        hq = sc["hq"] if quant else self.q_dummy[0]
        scales = dr.rec_scale if quant else [self.q_dummy[1]] * len(dr.small)
        has_y = self.y is not None
        if self.p["kind"] == "lstm":
            (rt, cs), = dr.small
            rnn_f32.lstm_small(sc["xw"], t1 - t0, reverse, rt, quant, hq, cs, scales[0], self.zero, sc["h"], sc["c"],
                               self.yflat, y_off0, y_step, self.y_bstride, has_y, sc["gates"])
            return
        lbr = bool(self.p["lbr"])
        (rt1, cs1), (rt2, cs2) = dr.small if not lbr else (dr.small[0], dr.small[0])
        ws1, ws2 = (scales[0], scales[0]) if lbr else (scales[0], scales[1])
        rbias = dr.rec[0][1] if lbr else self.zero
        rnn_f32.gru_small(sc["xw"], t1 - t0, reverse, rt1, rt2, lbr, quant, hq, cs1, ws1, cs2, ws2, rbias, self.zero,
                          sc["h"], sc["z"], sc["rh"], self.yflat, y_off0, y_step, self.y_bstride, has_y, sc["gates"],
                          *self.g12)

    def _step(self, parts: list[_Part], y_off: int) -> None:
        sc, yb, yf = self.sc, self.y_bstride, self.yflat
        has_y = self.y is not None
        for part in parts:
            for fn, args in part.gemm:
                fn(*args)
            q = part.q
            if self.lstm:
                self.cells[1](part.rec, self.c, self.h, yf, y_off, yb, has_y)
                continue
            write = has_y and part.mode != 2
            if q is None:
                self.cells[0](part.xw, part.rec, sc["h"], sc["z"], sc["rh"], yf, y_off, yb, write, part.mode)
            else:
                base = q[4]
                self.cells[1](q[0], self.hzp, q[1], self.hs, q[2], q[3], _EMPTY_F if base is None else base,
                              base is not None, part.xw, part.rec, sc["h"], sc["z"], sc["rh"], yf, y_off, yb, write,
                              part.mode)


@dataclass
class _Part:
    """One GEMM of a step and what its cell call reads: ``xw`` the step's projection rows, ``rec`` the GEMM's
    output; int8 GRU linear_before_reset=0: ``q`` = (int32 sums, col_sum, R scales, bias, base or None) for the
    dequantization in the cell."""

    gemm: list[Step]
    xw: np.ndarray
    rec: np.ndarray
    mode: int
    q: tuple | None = None


def _bind(n: Node, packed: dict, ins: list, outs: list, scratch: np.ndarray | None) -> list[Step]:
    x = ins[0]
    sc = _carve(n, packed, x.shape, scratch)
    if packed["quant"]:
        h0, c0 = ins[6] if len(ins) > 6 else None, ins[7] if len(ins) > 7 else None
    else:
        h0, c0 = ins[5] if len(ins) > 5 else None, ins[6] if len(ins) > 6 else None
    layer = _Layer(n, packed, x, outs, sc)
    return [(layer.run, (x, h0, c0 if packed["kind"] == "lstm" else None))]


register(Kernel("lstm_gru_f32", ("LSTM", "GRU"), _f32_accepts, _bind, dtypes=("float32",), prepack=_prepack,
                scratch=_scratch, priority=10))
register(Kernel("qlstm_qgru_u8s8", ("QLSTM", "QGRU"), _q_accepts, _bind, dtypes=("float32",), prepack=_prepack,
                scratch=_scratch, priority=10))
