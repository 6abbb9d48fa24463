"""``python -m quantgraph.bench rnn``: LSTM / GRU layers, quantgraph fp32 and int8 vs onnxruntime fp32 and int8.

The models are built here: one ONNX LSTM or GRU node (linear_before_reset=1, PyTorch's GRU) with random weights.
The large case is DeepSpeech2's first recurrent layer (batch 12, 1600 steps, input 161, hidden 1760, forward;
``--steps`` shortens it, ``--quick`` runs 100 steps); the small one a speaker-embedding LSTM (batch 1, 160 steps,
input 40, hidden 256), and a tiny one (hidden 64: quantgraph's one-call-per-chunk path).

quantgraph int8 is ``compile(model, quantize="int8", calibration=[x])`` (QLSTM / QGRU: s8 weights per gate row,
X and h quantized per step); onnxruntime int8 is ``quantize_dynamic`` (DynamicQuantizeLSTM for LSTM; it leaves
GRU in float, so that column repeats onnxruntime fp32 for GRU and says so). Every backend runs on the same number
of threads (default 2); times are medians; ``sqnr`` compares each int8 Y with quantgraph fp32 (dB).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from typing import Any, Callable

import numpy as np

from quantgraph.bench.common import ort_available, ort_session

#: name -> (op, batch, steps, input, hidden)
CASES = {
    "ds2_lstm": ("LSTM", 12, 1600, 161, 1760),
    "ds2_gru": ("GRU", 12, 1600, 161, 1760),
    "small_lstm": ("LSTM", 1, 160, 40, 256),
    "small_gru": ("GRU", 1, 160, 40, 256),
    "tiny_lstm": ("LSTM", 1, 160, 40, 64),
}


def build_model(op: str, batch: int, steps: int, inp: int, hidden: int, seed: int = 0) -> tuple[Any, np.ndarray]:
    """An ONNX model of one forward LSTM/GRU node (outputs Y, Y_h) and an input X (steps, batch, inp)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    g = 4 if op == "LSTM" else 3
    s = 1.0 / np.sqrt(hidden)  # PyTorch's init range
    w = rng.uniform(-s, s, (1, g * hidden, inp)).astype(np.float32)
    r = rng.uniform(-s, s, (1, g * hidden, hidden)).astype(np.float32)
    b = rng.uniform(-s, s, (1, 2 * g * hidden)).astype(np.float32)
    attrs: dict[str, Any] = {"hidden_size": hidden}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y", "Y_h"], **attrs)
    graph = helper.make_graph(
        [node], f"{op.lower()}_layer", [helper.make_tensor_value_info("X", TensorProto.FLOAT, (steps, batch, inp))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (steps, 1, batch, hidden)),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, (1, batch, hidden))],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    x = rng.standard_normal((steps, batch, inp)).astype(np.float32)
    return model, x


def median_seconds(fn: Callable[[], Any], runs: int, budget: float) -> float:
    """Median wall time of ``fn`` over ``runs`` calls (fewer past ``budget`` seconds, at least 3), after a warm-up."""
    fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < runs and (len(times) < 3 or spent < budget):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return float(np.median(times))


def ort_int8(model: Any, threads: int) -> tuple[Any, list[str]]:
    """onnxruntime's dynamic quantization of ``model``: (session, op types of the quantized graph)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        q = onnx.load(dst)
    return ort_session(q, threads), sorted({n.op_type for n in q.graph.node})


def sqnr_db(test: np.ndarray, ref: np.ndarray) -> float:
    err = float(((test.astype(np.float64) - ref) ** 2).sum())
    return float("inf") if err == 0 else 10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / err)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m quantgraph.bench rnn", description=__doc__)
    p.add_argument("--json", action="store_true", help="one JSON object per case")
    p.add_argument("--quick", action="store_true", help="100 steps for the DeepSpeech2 cases")
    p.add_argument("--steps", type=int, default=None, help="time steps of the DeepSpeech2 cases (default 1600)")
    p.add_argument("--threads", type=int, default=2, help="threads for every backend (default 2)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--runs", type=int, default=5, help="timed runs per backend (median)")
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    import quantgraph
    from quantgraph import config

    args = _parse(argv)
    threads = args.threads
    use_ort = ort_available() and not args.no_ort
    steps_ds2 = args.steps or (100 if args.quick else None)
    if not args.json:
        print(f"LSTM/GRU layers, {threads} thread(s), median of up to {args.runs} runs; load average "
              f"{os.getloadavg()[0]:.2f}; ISA rung {config.get().isa or 'host default'}")
        print(f"{'case':11s} {'shape (T,B,I,H)':22s} {'qg fp32':>9s} {'qg int8':>9s} {'ort fp32':>9s} "
              f"{'ort int8':>9s} {'fp32 ort/qg':>11s} {'int8 ort/qg':>11s} {'qg f/i':>7s} {'sqnr qg':>7s} "
              f"{'sqnr ort':>8s}  notes")
    with config.override(threads=threads):
        for name in args.cases.split(","):
            op, batch, steps, inp, hid = CASES[name]
            if name.startswith("ds2") and steps_ds2:
                steps = steps_ds2
            model, x = build_model(op, batch, steps, inp, hid)
            budget = 20.0 if steps * batch * hid > 10_000_000 else 3.0
            ms: dict[str, float] = {}
            cm32 = quantgraph.compile(model)
            y32 = cm32(x)[0]
            ms["qg_fp32"] = 1e3 * median_seconds(lambda: cm32(x), args.runs, budget)
            cm8 = quantgraph.compile(model, quantize="int8", calibration=[x])
            y8 = cm8(x)[0]
            ms["qg_int8"] = 1e3 * median_seconds(lambda: cm8(x), args.runs, budget)
            kernels = sorted({k for p in cm8.plans.values() for k in p.kernels})
            row: dict[str, Any] = {"case": name, "op": op, "steps": steps, "batch": batch, "input": inp,
                                   "hidden": hid, "threads": threads, "qg_int8_kernels": kernels,
                                   "sqnr_qg_int8_db": round(sqnr_db(y8, y32), 1)}
            notes = []
            if use_ort:
                s32 = ort_session(model, threads)
                feeds = {"X": x}
                yo = s32.run(None, feeds)[0]
                row["max_abs_qg_fp32_vs_ort"] = float(np.abs(yo - y32).max())
                ms["ort_fp32"] = 1e3 * median_seconds(lambda: s32.run(None, feeds), args.runs, budget)
                s8, ops = ort_int8(model, threads)
                y8o = s8.run(None, feeds)[0]
                row["ort_int8_ops"] = ops
                row["sqnr_ort_int8_db"] = round(sqnr_db(y8o, y32), 1)
                ms["ort_int8"] = 1e3 * median_seconds(lambda: s8.run(None, feeds), args.runs, budget)
                if not any(o.startswith("DynamicQuantize") for o in ops):
                    notes.append(f"ort int8 graph is {'/'.join(ops)} (float)")
                # NOTE: drop the sessions now: their spinning pool threads slowed the next case's quantgraph runs
                # (tiny LSTM 0.3 -> 4-8 ms after the small cases)
                del s32, s8
                gc.collect()
            row.update({k: round(v, 2) for k, v in ms.items()})
            if "ort_fp32" in ms:
                row["fp32_ort_over_qg"] = round(ms["ort_fp32"] / ms["qg_fp32"], 2)
                row["int8_ort_over_qg"] = round(ms["ort_int8"] / ms["qg_int8"], 2)
            row["qg_fp32_over_int8"] = round(ms["qg_fp32"] / ms["qg_int8"], 2)
            if args.json:
                print(json.dumps(row), flush=True)
                continue
            na = "-"
            print(f"{name:11s} {f'{steps},{batch},{inp},{hid}':22s} {ms['qg_fp32']:9.1f} {ms['qg_int8']:9.1f} "
                  f"{ms.get('ort_fp32', 0):9.1f} {ms.get('ort_int8', 0):9.1f} "
                  f"{row.get('fp32_ort_over_qg', na):>11} {row.get('int8_ort_over_qg', na):>11} "
                  f"{row['qg_fp32_over_int8']:>7} {row['sqnr_qg_int8_db']:>7} {row.get('sqnr_ort_int8_db', na):>8}  "
                  f"{' '.join(notes)}", flush=True)
    return 0
