"""The int8 table of ``bench model``: one model on every backend, int8 and fp32, in one run.

Rows: quantgraph fp32 (the reference), quantgraph int8 (``compile(quantize="int8", calibration=batches)``),
onnxruntime fp32, onnxruntime int8 static (``bench.qdq.ort_quantize_static``) and, for the transformer, dynamic
(``quantize_dynamic``: the issue compares against the better of the two), OpenVINO fp32 and int8 (``nncf.quantize``
defaults; ``bench/ov.py``; the fp32 row forces f32 precision, the int8 row keeps the plugin's defaults). Every int8
backend calibrates on the same seeded batch-1 feed dicts. Per row: median latency at each batch, throughput at the
largest, SQNR of the output against our fp32 output on a held-out batch (seed 999, not among the calibration seeds),
the ISA rung for our rows and the preparation seconds (our compile, our compile + calibrate, onnxruntime pre-process
+ quantize, OpenVINO convert + quantize; per-shape compiles of onnxruntime sessions and OpenVINO models are not
counted). ``x`` columns: the row's time / quantgraph int8's (above 1: ours is faster), or / quantgraph fp32's when
our int8 is not available.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from quantgraph.bench.qdq import calibration_batches, sqnr_db

#: a backend's preparation: returns (seconds spent, a factory of zero-argument runs returning the first output
#: for one feed dict); raises when the backend cannot run, and the row then says why
Prepare = Callable[[], tuple[float, Callable[[dict[str, np.ndarray]], Callable[[], np.ndarray]]]]

HELD_OUT_SEED = 999


@dataclass
class Row:
    backend: str
    isa: str = "-"
    prep_s: float | None = None
    ms: dict[int, float] = field(default_factory=dict)
    sqnr_db: float | None = None
    status: str = ""


def _unavailable(e: BaseException) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return "not available: " + (text if len(text) <= 140 else text[:137] + "...")


def _ort_run(threads: int) -> Callable[[Any], Callable[[dict[str, np.ndarray]], Callable[[], np.ndarray]]]:
    from quantgraph.bench.common import ort_session

    def factory(model: Any) -> Callable[[dict[str, np.ndarray]], Callable[[], np.ndarray]]:
        sess = ort_session(model, threads)
        return lambda feeds: (lambda: sess.run(None, feeds)[0])

    return factory


def _qg_run(cm: Any) -> Callable[[dict[str, np.ndarray]], Callable[[], np.ndarray]]:
    def make(feeds: dict[str, np.ndarray]) -> Callable[[], np.ndarray]:
        ordered = [feeds[k] for k in cm.input_names]
        return lambda: cm(*ordered)[0]

    return make


def _backends(name: str, model: Any, cm: Any, compile_s: float, calib: list[dict[str, np.ndarray]], workdir: str,
              threads: int, use_ort: bool, use_ov: bool, kernel: str,
              target: float | None = None) -> list[tuple[str, str, Prepare]]:
    """(label, ISA rung, prepare) per row, in table order."""
    from quantgraph.kernels.target import select_isa

    def qg_int8() -> tuple[float, Any]:
        from quantgraph.compiler.api import compile as qg_compile

        t0 = time.perf_counter()
        cm_q = qg_compile(model, quantize="int8", calibration=calib)
        return time.perf_counter() - t0, _qg_run(cm_q)

    def qg_mixed() -> tuple[float, Any]:
        from quantgraph.compiler.api import compile as qg_compile

        t0 = time.perf_counter()
        cm_m = qg_compile(model, quantize="int8", calibration=calib, accuracy_target=target)
        prep = time.perf_counter() - t0
        res = cm_m.accuracy_search
        kept = {p: sum(1 for v in res.kept.values() if v == p) for p in ("int16", "fp32")}
        print(f"  {name} accuracy search: target {target:g} dB, met={res.met}, {len(res.trials)} trials, kept "
              f"{kept['int16']} unit(s) int16 and {kept['fp32']} fp32 of {len(res.order)}, search "
              f"{res.seconds:.1f} s", flush=True)
        return prep, _qg_run(cm_m)

    # NOTE: the fp32 rung is the packed GEMM's vector width (gemm_f32_avx512 -> avx512), the int8 one the kernel rung
    fp32_isa = kernel.removeprefix("gemm_f32_")
    rows: list[tuple[str, str, Prepare]] = [("quantgraph fp32", fp32_isa, lambda: (compile_s, _qg_run(cm))),
                                            ("quantgraph int8", select_isa(), qg_int8)]
    if target is not None:
        rows.append((f"quantgraph mixed {target:g} dB", select_isa(), qg_mixed))
    if use_ort:
        from quantgraph.bench import qdq

        ort = _ort_run(threads)

        def ort_static() -> tuple[float, Any]:
            t0 = time.perf_counter()
            q = qdq.ort_quantize_static(model, calib, workdir, name)
            return time.perf_counter() - t0, ort(q)

        def ort_dynamic() -> tuple[float, Any]:
            t0 = time.perf_counter()
            q = qdq.ort_quantize_dynamic(model, workdir, name)
            return time.perf_counter() - t0, ort(q)

        rows += [("onnxruntime fp32", "-", lambda: (0.0, ort(model))), ("onnxruntime int8", "-", ort_static)]
        if name.startswith("bert"):
            rows.append(("onnxruntime int8 dyn", "-", ort_dynamic))
    if use_ov:
        from quantgraph.bench import ov

        def ov_fp32() -> tuple[float, Any]:
            t0 = time.perf_counter()
            m = ov.convert(model, workdir, name)
            return time.perf_counter() - t0, lambda feeds: ov.runner(m, feeds, threads, f32=True)

        def ov_int8() -> tuple[float, Any]:
            t0 = time.perf_counter()
            m = ov.quantize(ov.convert(model, workdir, name), calib)
            return time.perf_counter() - t0, lambda feeds: ov.runner(m, feeds, threads)

        rows += [("openvino fp32", "-", ov_fp32), ("openvino int8", "-", ov_int8)]
    return rows


def int8_table(args: Any, name: str, model: Any, cm: Any, compile_s: float, timed: dict[tuple[str, int], float],
               batches: list[int], threads: int, budget: float, use_ort: bool, kernel: str,
               median_ms: Callable[..., float]) -> list[Row]:
    """Measure and print the int8 table of one model; ``timed`` holds fp32 medians the fp32 table already took."""
    from quantgraph.bench import ov
    from quantgraph.bench.models import sample_inputs

    ov_reason = "skipped (--no-openvino)" if args.no_openvino else ov.available()
    calib = calibration_batches(model, args.calib)
    held = sample_inputs(model, batch=4, seed=HELD_OUT_SEED)
    ref = _qg_run(cm)(held)()
    feeds = {b: sample_inputs(model, batch=b) for b in batches}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, isa, prepare in _backends(name, model, cm, compile_s, calib, workdir, threads, use_ort,
                                             ov_reason is None, kernel, getattr(args, "accuracy_target", None)):
            row = Row(label, isa)
            rows.append(row)
            try:
                row.prep_s, make = prepare()
                row.sqnr_db = None if label == "quantgraph fp32" else round(sqnr_db(ref, make(held)()), 2)
                for b in batches:
                    row.ms[b] = timed.get((label, b)) or median_ms(make(feeds[b]), budget)
            except Exception as e:  # a backend that cannot run this model is a row that says why, not a crash
                row.status = _unavailable(e)
            make = None  # drop the session / compiled model before the next backend
    if ov_reason is not None:
        rows.append(Row("openvino", status=ov_reason))
    _print(args, name, rows, batches, threads)
    return rows


def _print(args: Any, name: str, rows: list[Row], batches: list[int], threads: int) -> None:
    by = {r.backend: r for r in rows}
    base = by["quantgraph int8"] if by["quantgraph int8"].ms else by["quantgraph fp32"]
    big = max(batches)

    def x(r: Row, b: int) -> float | None:
        return round(r.ms[b] / base.ms[b], 2) if b in r.ms and b in base.ms else None

    if args.json:
        for r in rows:
            print(json.dumps({"model": name, "table": "int8", "backend": r.backend, "isa": r.isa,
                              "threads": threads, "prep_s": None if r.prep_s is None else round(r.prep_s, 2),
                              **{f"b{b}_ms": round(r.ms[b], 3) for b in r.ms},
                              f"b{big}_per_s": round(1e3 * big / r.ms[big], 1) if big in r.ms else None,
                              "sqnr_db": r.sqnr_db, **{f"x_b{b}": x(r, b) for b in batches},
                              "x_vs": base.backend, "status": r.status}), flush=True)
    else:
        head = " ".join(f"{f'b{b} ms':>9s}" for b in batches)
        xs = " ".join(f"{f'x b{b}':>6s}" for b in batches)
        print(f"\n{name}: int8 and fp32 backends, {threads} thread(s), median; load average "
              f"{os.getloadavg()[0]:.2f}; x = row time / {base.backend} time (above 1: {base.backend} is faster)")
        print(f"{'backend':22s} {head} {f'b{big} /s':>9s} {'SQNR dB':>8s} {xs} {'isa':>8s} {'prep s':>7s}")
        for r in rows:
            if r.status:
                print(f"{r.backend:22s} {r.status}")
                continue
            ms = " ".join(f"{r.ms[b]:9.2f}" for b in batches)
            sq = "ref" if r.sqnr_db is None else f"{r.sqnr_db:.1f}"
            xr = " ".join(f"{x(r, b):6.2f}" for b in batches)
            print(f"{r.backend:22s} {ms} {1e3 * big / r.ms[big]:9.1f} {sq:>8s} {xr} {r.isa:>8s} "
                  f"{r.prep_s:7.1f}", flush=True)
    _print_summary(args, name, by, batches)


def _print_summary(args: Any, name: str, by: dict[str, Row], batches: list[int]) -> None:
    """quantgraph int8 against the best onnxruntime int8 (static or dynamic), OpenVINO int8 and our fp32."""
    ours = by["quantgraph int8"]
    if not ours.ms:
        return
    ort_rows = [r for k, r in by.items() if k.startswith("onnxruntime int8") and r.ms]
    others = {"best onnxruntime int8": min(ort_rows, key=lambda r: r.ms[min(batches)]) if ort_rows else None,
              "openvino int8": by.get("openvino int8"), "quantgraph fp32": by["quantgraph fp32"]}
    speedups = {k: {b: round(r.ms[b] / ours.ms[b], 2) for b in batches if b in r.ms}
                for k, r in others.items() if r is not None and r.ms}
    if args.json:
        print(json.dumps({"model": name, "table": "int8_summary", "speedup_of_quantgraph_int8": speedups,
                          "best_ort": others["best onnxruntime int8"].backend
                          if others["best onnxruntime int8"] else None}), flush=True)
    else:
        parts = [f"{k} " + "/".join(f"{v:.2f}x" for v in s.values()) for k, s in speedups.items()]
        print(f"quantgraph int8 speedup (batch {'/'.join(map(str, batches))}) over: " + "; ".join(parts))
