"""LSTM / GRU kernels (fp32 ``lstm_gru_f32``, int8 ``qlstm_qgru_u8s8``) against the registry references.

One shape family (input 8, hidden 16, 12 steps; batch 1 or 3) so the Numba kernels compile once; the packed fp32
GEMM and the int8 GEMM run on the rung in force (CI repeats this file at ``avx2`` and ``portable``).
"""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph import config
from quantgraph.compiler.executable import CompiledModel
from quantgraph.compiler.lower import lower
from quantgraph.compiler.quantize.dynamic_rnn import quantize_dynamic_rnn, quantize_rows
from quantgraph.errors import ShapeError
from quantgraph.ir import interpreter
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.rnn_quant import dynamic_quantize_u8, int_matmul
from quantgraph.kernels.fp32 import bind_rnn, rnn_f32
from quantgraph.kernels.fp32.bind_rnn import _pack_s8
from tests.kernels.conftest import ISAS

SEQ, INP, HID = 12, 8, 16
F32, Q8 = "lstm_gru_f32", "qlstm_qgru_u8s8"


def rnn_graph(op: str, batch: int = 3, direction: str = "forward", layout: int = 0, lbr: int = 0,
              init: bool = False, bias: bool = True, seed: int = 0, const_w: bool = True,
              **attrs) -> tuple[Graph, dict[str, np.ndarray]]:
    """One LSTM/GRU node with every output used; weights constant (or graph inputs with ``const_w=False``)."""
    rng = np.random.default_rng(seed)
    gates = 4 if op == "LSTM" else 3
    nd = 2 if direction == "bidirectional" else 1
    g = Graph(op.lower())
    xs = (batch, SEQ, INP) if layout else (SEQ, batch, INP)
    ss = (batch, nd, HID) if layout else (nd, batch, HID)
    feeds = {"x": rng.standard_normal(xs).astype(np.float32)}
    x = g.add_input("x", xs, "float32")
    w = (rng.standard_normal((nd, gates * HID, INP)) * 0.4).astype(np.float32)
    r = (rng.standard_normal((nd, gates * HID, HID)) * 0.4).astype(np.float32)
    if const_w:
        ins = [x, g.add_const(w, "W"), g.add_const(r, "R")]
    else:
        ins = [x, g.add_input("W", w.shape, "float32"), g.add_const(r, "R")]
        feeds["W"] = w
    ins.append(g.add_const((rng.standard_normal((nd, 2 * gates * HID)) * 0.4).astype(np.float32), "B")
               if bias else "")
    lens = attrs.pop("lens", None)
    ins.append("" if lens is None else g.add_const(lens, "lens"))
    if init:
        for name in ("h0", "c0")[:2 if op == "LSTM" else 1]:
            ins.append(g.add_input(name, ss, "float32"))
            feeds[name] = (rng.standard_normal(ss) * 0.5).astype(np.float32)
    if "P" in attrs:
        ins += [""] * (7 - len(ins)) + [g.add_const(attrs.pop("P"), "P")]
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    outs = g.add(op, ins, hidden_size=HID, direction=direction, layout=layout, **attrs)
    g.set_outputs(list(outs))
    return g, feeds


def run_compiled(g: Graph, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str], CompiledModel]:
    cm = CompiledModel(g, lower(g), opt_level=2)
    got = cm.run(feeds)
    return got, next(iter(cm.plans.values())).kernels, cm


def assert_close(got: dict, want: dict, tol: float) -> None:
    for t, w in want.items():
        np.testing.assert_allclose(got[t], w, rtol=tol, atol=tol, err_msg=t)


def sqnr_db(test: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / ((test - ref.astype(np.float64)) ** 2).sum()))


CASES = [
    ("LSTM", dict()),
    ("LSTM", dict(batch=1, direction="bidirectional", layout=1, init=True)),
    ("LSTM", dict(direction="reverse", init=True, bias=False)),
    ("GRU", dict(lbr=1)),
    ("GRU", dict(lbr=0, batch=1, direction="reverse", init=True)),
    ("GRU", dict(lbr=0, direction="bidirectional", layout=1, bias=False)),
    ("GRU", dict(lbr=1, direction="bidirectional", layout=1, init=True)),
]
IDS = [f"{op}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for op, kw in CASES]


@pytest.fixture(params=["gemm", "small"])
def path(request, monkeypatch) -> str:
    """Both drivers: per-step GEMM + cell calls, and the small layers' chunk-per-call loop."""
    if request.param == "gemm":
        monkeypatch.setattr(bind_rnn, "SMALL_BYTES", 0)
    return request.param


@pytest.mark.parametrize("op,kw", CASES, ids=IDS)
def test_rnn_f32_kernel_matches_reference(op: str, kw: dict, path: str) -> None:
    g, feeds = rnn_graph(op, **kw)
    got, kernels, _ = run_compiled(g, feeds)
    assert kernels == [F32]
    assert_close(got, interpreter.run(g, feeds), 1e-5)


@pytest.mark.parametrize("op,kw", [("LSTM", dict()), ("GRU", dict(lbr=0)), ("GRU", dict(lbr=1)),
                                   ("LSTM", dict(direction="bidirectional", layout=1, init=True))])
def test_batch_of_thin_gemms_gives_the_regular_bits(op: str, kw: dict, monkeypatch) -> None:
    """A batch of 10 packs R thin (16-column panels) where the rung has the thin GEMM: the same bits as the regular
    packing, through the LSTM residual, GRU linear_before_reset=0's strided (z, r) columns and layout 1."""
    from quantgraph.kernels.fp32 import gemm_f32_packed

    monkeypatch.setattr(bind_rnn, "SMALL_BYTES", 0)
    packed_thin = []
    pack_b = gemm_f32_packed.pack_b

    def recording_pack_b(b, isa=None, thin=False):
        packed_thin.append(thin)
        return pack_b(b, isa, thin)

    monkeypatch.setattr(gemm_f32_packed, "pack_b", recording_pack_b)
    g, feeds = rnn_graph(op, batch=10, **kw)
    got, kernels, cm = run_compiled(g, feeds)
    assert kernels == [F32]
    assert_close(got, interpreter.run(g, feeds), 1e-5)
    isa = gemm_f32_packed.select()
    if isa is None or not isa.thin_nr:
        assert not any(packed_thin)
        pytest.skip(f"no thin GEMM on {isa.name if isa else 'this rung'}")
    # W (the projection, many rows) regular, every R (1 or 2 GEMMs per direction) thin
    assert packed_thin.count(False) == packed_thin.count(True) // (2 if op == "GRU" and not kw["lbr"] else 1)
    monkeypatch.setattr(gemm_f32_packed, "THIN_ROWS", (0, 0))
    regular, _, _ = run_compiled(g, feeds)
    for t in got:
        assert np.array_equal(got[t], regular[t]), t


@pytest.mark.parametrize("isa", [i for i in ISAS if i in ("avx2", "portable")])
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_rnn_kernels_on_lower_rungs(op: str, isa: str, monkeypatch) -> None:
    monkeypatch.setattr(bind_rnn, "SMALL_BYTES", 0)  # the GEMMs of the rung (the small path has none)
    g, feeds = rnn_graph(op, direction="bidirectional", init=True, lbr=0)
    want = interpreter.run(g, feeds)
    with config.override(isa=isa):
        got, kernels, _ = run_compiled(g, feeds)
        assert_close(got, want, 1e-5)
        quantize_dynamic_rnn(g)
        got8, kernels8, _ = run_compiled(g, feeds)
    assert kernels == [F32] and kernels8 == [Q8]
    assert_close(got8, interpreter.run(g, feeds), 2e-3)


@pytest.mark.parametrize("op,kw", CASES, ids=IDS)
def test_qrnn_kernel_matches_reference(op: str, kw: dict, path: str) -> None:
    g, feeds = rnn_graph(op, **kw)
    want32 = interpreter.run(g, feeds)
    quantize_dynamic_rnn(g)
    assert [n.op for n in g.topo()] == ["Q" + op]
    want = interpreter.run(g, feeds)
    got, kernels, _ = run_compiled(g, feeds)
    assert kernels == [Q8]
    # NOTE: float32 gates here, float64 in the reference: a state can round to the other side of a quantization
    # step, so the outputs match closely, not exactly (the integer sums are checked exactly below)
    assert_close(got, want, 2e-3)
    for t in want:
        assert sqnr_db(got[t], want32[t]) > 30, t


@pytest.mark.parametrize("case", ["random", "positive", "negative", "zeros", "ties"])
def test_quantize_u8_is_bit_exact(case: str) -> None:
    rng = np.random.default_rng(1)
    x = {"random": rng.standard_normal((3, 37)), "positive": rng.random((3, 37)) + 0.5,
         "negative": -rng.random((3, 37)), "zeros": np.zeros((3, 37)),
         "ties": np.arange(-2.0, 2.0, 4 / 111).reshape(3, 37) * (255 / 4)}[case].astype(np.float32)
    q = np.empty(x.shape, np.uint8)
    scale, zp = rnn_f32.quantize_u8(x, q)
    q_ref, s_ref, zp_ref = dynamic_quantize_u8(x)
    assert np.float32(scale) == s_ref and zp == zp_ref
    np.testing.assert_array_equal(q, q_ref)
    # the chunked projection quantizes rows with the whole X's parameters: the same values
    x3 = x.reshape(3, 37, 1)
    q3 = np.empty((37, 3 * 1), np.uint8).reshape(37 * 3, 1)
    rnn_f32.quantize_rows_u8(x3.transpose(1, 0, 2).copy(), 0, 0, 37, np.float32(scale), zp, q3)
    np.testing.assert_array_equal(q3.reshape(37, 3).T, q_ref)


@pytest.mark.parametrize("batch,k", [(1, 16), (3, 16), (3, 13)])
@pytest.mark.parametrize("isa", ISAS)
def test_int8_recurrent_gemm_dequantizes_exact_sums(batch: int, k: int, isa: str) -> None:
    """The recurrent GEMM's epilogue: float32(exact int32 sum of (q - zp) @ W_q) * (scale * w_scale) + bias +
    residual, with the per-column terms rewritten in place between calls (two quantizations of different h)."""
    from quantgraph.ir.node import Node

    rng = np.random.default_rng(2)
    w = rng.standard_normal((1, 4 * HID, k)).astype(np.float32)
    w_q, w_scale = quantize_rows(w)
    w_scale = np.ascontiguousarray(w_scale[0], np.float32)
    packed = _pack_s8(w_q[0])
    q = np.empty((batch, k), np.uint8)
    out = np.empty((batch, 4 * HID), np.float32)
    bias = rng.standard_normal(4 * HID).astype(np.float32)
    res = rng.standard_normal((batch, 4 * HID)).astype(np.float32)
    b32, factor = np.zeros(4 * HID, np.int32), np.zeros(4 * HID, np.float32)
    with config.override(isa=isa):
        fn, args = bind_rnn._q_gemm(Node("r", "QLSTM", (), ()), q, packed, out, (b32, factor, bias, res))
        zps = []
        for shift in (0.0, 0.7):  # the second h has another scale and zero point
            h = (np.tanh(rng.standard_normal((batch, k))) + shift).astype(np.float32)
            scale, zp = rnn_f32.quantize_u8_params(h, q, packed.col_sum, w_scale, b32, factor)
            q_ref, s_ref, zp_ref = dynamic_quantize_u8(h)
            assert (np.float32(scale), zp) == (s_ref, zp_ref) and np.array_equal(q, q_ref)
            zps.append(zp)
            fn(*args)
            f32 = np.float32
            want = int_matmul(q, zp, w_q[0]).astype(f32) * (f32(scale) * w_scale) + bias + res
            np.testing.assert_array_equal(out, want)
        assert zps[0] != zps[1]


REFUSALS = [
    ("clip", dict(clip=3.0), "clip"),
    ("activations", dict(activations=["HardSigmoid", "Tanh", "Tanh"]), "activations"),
    ("peepholes", dict(P=np.full((1, 3 * HID), 0.1, np.float32)), "peepholes"),
    ("input_forget", dict(input_forget=1), "input_forget"),
    ("weights", dict(const_w=False), "not a constant"),
]


@pytest.mark.parametrize("what,kw,reason", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_lstm_runs_the_reference(what: str, kw: dict, reason: str) -> None:
    g, feeds = rnn_graph("LSTM", **kw)
    got, kernels, cm = run_compiled(g, feeds)
    assert kernels == ["reference"]
    assert reason in cm._lowered[0].reason
    assert_close(got, interpreter.run(g, feeds), 1e-6)


def test_sequence_lens_runs_the_reference() -> None:
    g, feeds = rnn_graph("GRU", lens=np.array([SEQ, 5, 1], np.int32))
    got, kernels, cm = run_compiled(g, feeds)
    assert kernels == ["reference"] and "sequence_lens" in cm._lowered[0].reason
    assert_close(got, interpreter.run(g, feeds), 1e-6)


def test_quantized_rnn_op_rejects_bad_inputs() -> None:
    g = Graph("bad")
    x = g.add_input("x", (SEQ, 1, INP), "float32")
    w = g.add_const(np.zeros((1, 4 * HID, INP), np.float32), "W")   # float, not int8
    ws = g.add_const(np.ones((1, 4 * HID), np.float32), "ws")
    r = g.add_const(np.zeros((1, 4 * HID, HID), np.int8), "R")
    with pytest.raises(ShapeError, match="W is float32; QLSTM expects int8 weights"):
        g.add("QLSTM", [x, w, ws, r, ws], name="q")
    w8 = g.add_const(np.zeros((1, 4 * HID, INP + 1), np.int8), "W8")  # K does not match X
    with pytest.raises(ShapeError, match="W has shape"):
        g.add("QLSTM", [x, w8, ws, r, ws], name="q")
