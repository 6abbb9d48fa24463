"""``python -m quantgraph.bench model [--json] [--quick] [--models resnet50,bert,mobilenet] [--no-int8|--int8-only]``:
end-to-end latency of quantgraph fp32 and int8 vs onnxruntime and OpenVINO.

ResNet-50, a 4-layer BERT-style encoder (hidden 384, seq 128) and MobileNetV2 (dynamic batch; batch 1 and 16), built
by ``quantgraph.bench.models``. The fp32 table: our compile at the default opt_level next to onnxruntime
(CPUExecutionProvider, all graph optimizations, intra-op threads = our thread count): median latency, the ratio
ours / ort, and our conv/matmul GFLOP/s as a share of the measured FMA peak of the vector width the packed fp32 GEMM
runs at on the ISA rung in force (``QUANTGRAPH_ISA=avx2`` measures the AVX2 kernel on an AVX-512 host).

The int8 table, per model, in the same run (``bench/int8.py``): quantgraph int8 (``compile(quantize="int8",
calibration=batches)``), onnxruntime ``quantize_static`` (QDQ, per-channel, u8/s8, MinMax) and, for BERT,
``quantize_dynamic``, OpenVINO fp32 and ``nncf.quantize`` int8 (when installed), all calibrated on the same seeded
batches; latency at batch 1, throughput at batch 16, SQNR vs our fp32 on a held-out batch, the ISA rung and the
compile / quantize seconds. ``--qdq`` runs quantgraph on onnxruntime's QDQ ResNet-50 file instead: ``bench/qdq.py``.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from quantgraph.bench.common import ort_available, ort_session
from quantgraph.compiler.api import DEFAULT_OPT_LEVEL


def _models() -> dict[str, tuple[str, Callable[[], Any]]]:
    from quantgraph.bench.models import bert_encoder, mobilenet_v2, resnet50

    return {"resnet50": ("resnet50", lambda: resnet50(batch="N")),
            "bert": ("bert4_h384_s128", lambda: bert_encoder(layers=4, hidden=384, seq=128)),
            "mobilenet": ("mobilenet_v2", lambda: mobilenet_v2(batch="N"))}


#: --models keys, in run order
MODELS = ("resnet50", "bert", "mobilenet")


def _median_ms(fn: Callable[[], Any], budget: float, min_runs: int = 5, max_runs: int = 200) -> float:
    fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < min_runs or (spent < budget and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return 1e3 * statistics.median(times)


def _parse(argv: list[str]) -> Any:
    import argparse

    p = argparse.ArgumentParser(prog="python -m quantgraph.bench model", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="one JSON object per result line")
    p.add_argument("--quick", action="store_true", help="batch 1 only, shorter timing")
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    p.add_argument("--no-int8", action="store_true", help="the fp32 table only")
    p.add_argument("--int8-only", action="store_true", help="the int8 table only (our fp32 still runs: reference)")
    p.add_argument("--calib", type=int, default=8, help="calibration batches (batch 1, seeded) for every int8 backend")
    p.add_argument("--accuracy-target", type=float, default=None, metavar="DB",
                   help="also a mixed-precision row: compile(..., accuracy_target=DB), SQNR on the calib batches")
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO even when installed")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime even when installed")
    p.add_argument("--nchw", action="store_true", help="also run ResNet-50 at opt_level 2 (NCHW, no layout pass)")
    p.add_argument("--qdq", action="store_true",
                   help="QDQ ResNet-50 (quantize_static) on the int8 kernels vs onnxruntime on the same file and fp32")
    p.add_argument("--summary", action="store_true", help="with --qdq: print CompiledModel.summary() after profiling")
    args = p.parse_args(argv)
    unknown = sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    if args.no_int8 and args.int8_only:
        p.error("--no-int8 and --int8-only exclude each other")
    return args


def compile_fp32(model: Any, opt_level: int) -> tuple[Any, dict[str, float]]:
    """``quantgraph.compile`` with its wall time (import + passes + lowering)."""
    from quantgraph.compiler.api import compile as qg_compile

    t0 = time.perf_counter()
    cm = qg_compile(model, opt_level=opt_level)
    return cm, {"compile_s": time.perf_counter() - t0}


def gemm_gflop(cm: Any, feeds: dict[str, np.ndarray]) -> float:
    """GFLOP (2 x multiply-adds) of the convolutions and matrix products of one call, from the compiled graph's
    shapes for these inputs."""
    from quantgraph.compiler.plan import resolve_shapes

    g = resolve_shapes(cm.graph, {t: feeds[t].shape for t in cm.graph.inputs})
    total = 0
    for n in g.topo():
        out = g.tensors[n.outputs[0]].shape
        if n.op in ("Conv", "FusedConv"):
            total += 2 * int(np.prod(out)) * int(np.prod(g.tensors[n.inputs[1]].shape[1:]))
        elif n.op in ("MatMul", "FusedMatMul", "Gemm"):
            a = g.tensors[n.inputs[0]].shape
            total += 2 * int(np.prod(out)) * (a[0] if n.op == "Gemm" and n.attrs["transA"] else a[-1])
    return total / 1e9


def _fma_peak(threads: int) -> tuple[str, float]:
    """(packed fp32 kernel in force, measured FMA peak in GFLOP/s of its vector width; 0.0 without one)."""
    from quantgraph.bench.common import measure_fma_peak
    from quantgraph.kernels.fp32 import gemm_f32_packed
    from quantgraph.kernels.fp32.threads import configure_threads

    isa = gemm_f32_packed.select()
    if isa is None:
        return "none (numpy/BLAS)", 0.0
    configure_threads(threads)  # before the first parallel launch, which fixes numba's threading layer
    return isa.kernel, measure_fma_peak(threads, isa.lanes)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    threads = args.threads or os.cpu_count() or 1
    if args.qdq:
        from quantgraph.bench.qdq import run

        return run(args, threads, _median_ms)
    from quantgraph import config

    use_ort = ort_available() and not args.no_ort
    budget = 1.0 if args.quick else 3.0
    batches = [1] if args.quick else [1, 16]
    level = DEFAULT_OPT_LEVEL
    builders = _models()
    cases = [(builders[k][0], builders[k][1], level) for k in MODELS if k in args.models.split(",")]
    if args.nchw and "resnet50" in args.models.split(","):
        cases.insert(1, ("resnet50_nchw_O2", builders["resnet50"][1], 2))
    with config.override(threads=threads):
        kernel, peak = _fma_peak(threads)
        done: list[tuple[str, Any, Any, dict[str, float], dict[tuple[str, int], float]]] = []
        if not args.int8_only:
            if not args.json:
                print(f"fp32 model latency, {threads} thread(s), median; load average {os.getloadavg()[0]:.2f}; "
                      f"ISA rung {config.get().isa or 'host default'}, packed GEMM {kernel}, "
                      f"FMA peak {peak:.0f} GFLOP/s")
                print(f"{'model':18s} {'batch':>5s} {'nodes':>6s} {'ours ms':>9s} {'ort ms':>9s} {'ours/ort':>8s} "
                      f"{'GFLOP/s':>8s} {'%peak':>6s}  compile")
        for name, build, lvl in cases:
            model = build()
            cm, ctimes = compile_fp32(model, lvl)
            timed: dict[tuple[str, int], float] = {}  # (backend, batch) -> ms, reused by the int8 table
            if not args.int8_only:
                _fp32_rows(args, name, model, cm, ctimes, lvl, batches, threads, budget, use_ort, kernel, peak,
                           timed)
            if lvl == level:  # the int8 table compares against the default compile only
                done.append((name, model, cm, ctimes, timed))
        if not args.no_int8:
            from quantgraph.bench.int8 import int8_table

            for name, model, cm, ctimes, timed in done:
                int8_table(args, name, model, cm, ctimes["compile_s"], timed, batches, threads, budget, use_ort,
                           kernel, _median_ms)
    return 0


def _fp32_rows(args: Any, name: str, model: Any, cm: Any, ctimes: dict[str, float], level: int, batches: list[int],
               threads: int, budget: float, use_ort: bool, kernel: str, peak: float,
               timed: dict[tuple[str, int], float]) -> None:
    from quantgraph.bench.models import sample_inputs

    sess = ort_session(model, threads) if use_ort else None
    for batch in batches:
        feeds = sample_inputs(model, batch=batch)
        ordered = [feeds[k] for k in cm.input_names]
        t0 = time.perf_counter()
        ours_out = cm(*ordered)
        first_call = time.perf_counter() - t0
        ours = _median_ms(lambda: cm(*ordered), budget)
        timed["quantgraph fp32", batch] = ours
        gflops = gemm_gflop(cm, feeds) / (ours / 1e3)
        row: dict[str, Any] = {"model": name, "batch": batch, "opt_level": level, "nodes": len(cm.graph),
                               "packed_kernel": kernel, "ours_gflops": round(gflops, 1),
                               "pct_fma_peak": round(100 * gflops / peak, 1) if peak else None,
                               "nodes_before": sum((cm.optimized_from or {}).values()),
                               "ours_ms": round(ours, 3), "threads": threads,
                               "first_call_s": round(first_call, 3),
                               **{k: round(v, 3) for k, v in ctimes.items()}}
        if sess is not None:
            ort_ms = _median_ms(lambda: sess.run(None, feeds), budget)
            timed["onnxruntime fp32", batch] = ort_ms
            ref = sess.run(None, feeds)[0]
            err = float(np.max(np.abs(ours_out[0] - ref)) / (np.max(np.abs(ref)) + 1e-12))
            row.update(ort_ms=round(ort_ms, 3), ratio=round(ours / ort_ms, 3), max_rel_err=err)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            ort_s = f"{row['ort_ms']:9.2f} {row['ratio']:8.2f}" if "ort_ms" in row else f"{'-':>9s} {'-':>8s}"
            pct = f"{row['pct_fma_peak']:6.1f}" if peak else f"{'-':>6s}"
            print(f"{name:18s} {batch:5d} {row['nodes']:6d} {ours:9.2f} {ort_s} {gflops:8.1f} {pct}  "
                  f"{ctimes['compile_s']:.2f}s, first call {first_call:.2f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
