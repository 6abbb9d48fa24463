"""Shared benchmark harness: timing, the measured VNNI peak, onnxruntime helpers and result printing."""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np


def parse_args(argv: list[str], prog: str, doc: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m quantgraph.bench {prog}", description=doc)
    p.add_argument("--json", action="store_true", help="one JSON object per result line")
    p.add_argument("--quick", action="store_true", help="a few shapes only (under a minute)")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime even when installed")
    return p.parse_args(argv)


def best_seconds(fn: Callable[[], Any], budget: float = 0.25, min_runs: int = 3, max_runs: int = 5000) -> float:
    """Best wall time of ``fn`` over repeated runs (after one warm-up call) within ``budget`` seconds: robust to a
    busy machine. NOTE: microsecond calls need thousands of runs: onnxruntime's thread pool, in particular, took 2-4x
    longer on thin GEMMs when timed over only 50 runs."""
    fn()
    best, spent, runs = float("inf"), 0.0, 0
    while runs < min_runs or (spent < budget and runs < max_runs):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return best


def _loop_gops(peak: Any, threads: int, n: int, ops_per_iter: int) -> float:
    """GOPS of ``peak(n)`` (an intrinsic loop of ``ops_per_iter`` int8 ops per iteration) on ``threads`` threads."""
    import numba
    from numba import njit, prange

    @njit(parallel=True)
    def run(iters, nt):
        s = 0
        for _ in prange(nt):
            s += peak(iters)
        return s

    numba.set_num_threads(threads)
    run(max(1, n // 1000), threads)
    sec = best_seconds(lambda: run(n, threads), budget=0.5, min_runs=5)
    return threads * n * ops_per_iter / sec / 1e9


def measure_peak(threads: int) -> float:
    """int8 GOPS of a loop of independent ``vpdpbusd`` on ``threads`` threads (0.0 without VNNI)."""
    from quantgraph.kernels import target
    from quantgraph.kernels.intrinsics.x86 import vnni_peak_loop

    if target.has("avx512vnni"):
        lanes = 16
    elif target.has("avxvnni"):
        lanes = 8
    else:
        return 0.0
    chains = 12
    return _loop_gops(vnni_peak_loop(lanes, chains), threads, 2_000_000, chains * lanes * 8)


def measure_fma_peak(threads: int, lanes: int) -> float:
    """fp32 GFLOP/s of a loop of independent ``llvm.fma.v<lanes>f32`` (8: ymm, 16: zmm) on ``threads`` threads."""
    from quantgraph.kernels.intrinsics.fma_f32 import fma_peak_loop

    chains = 12
    return _loop_gops(fma_peak_loop(lanes, chains), threads, 5_000_000, chains * lanes * 2)


def measure_amx_peak(threads: int) -> float:
    """int8 GOPS of a loop of independent ``tdpbusd`` on resident tiles on ``threads`` threads (0.0 without AMX)."""
    from quantgraph.kernels import target
    from quantgraph.kernels.intrinsics.amx import amx_peak_loop

    if not target.has("amx"):
        return 0.0
    return _loop_gops(amx_peak_loop(), threads, 100_000, 4 * 16 * 16 * 64 * 2)  # 4 tiles of 16x16x64 MACs


def measure_stream_gbs(nbytes: int, threads: int) -> float:
    """GB/s of ``threads`` threads each reading its share of an ``nbytes`` buffer again and again (after a warm-up,
    so what fits stays in L2/L3 as the weights of a thin GEMM do): the bound on streaming a weight matrix once."""
    import numba
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def read(x, reps, nt):
        total = 0
        per = x.size // nt
        for t in prange(nt):
            acc = 0
            for _ in range(reps):
                for i in range(np.uint64(t * per), np.uint64((t + 1) * per)):
                    acc ^= x[i]
            total += acc
        return total

    numba.set_num_threads(threads)
    x = np.ones(max(nbytes // 8, threads * 8), np.int64)
    read(x, 1, threads)
    sec = best_seconds(lambda: read(x, 1, threads), budget=0.3, min_runs=5)
    return x.nbytes / sec / 1e9


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ort_session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@dataclass
class Result:
    op: str
    m: int
    n: int
    k: int
    impl: str
    gops: float
    pct_peak: float
    ms: float
    extra: dict[str, Any] = field(default_factory=dict)


class Reporter:
    """Prints results as an aligned table or as JSON lines.

    ``pct_peak`` is relative to the measured ``vpdpbusd`` peak (the issue's yardstick); on an AMX host the kernels
    run ``tdpbusd``, so ``pct_isa_peak`` also gives the share of the measured AMX peak (the honest ceiling there).
    """

    def __init__(self, as_json: bool, peak: float, threads: int):
        from quantgraph.kernels.target import select_isa

        self.as_json, self.peak, self.threads = as_json, peak, threads
        self.isa = select_isa()
        self.isa_peak = measure_amx_peak(threads) if self.isa == "amx" else peak
        self.results: list[Result] = []
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        if not as_json:
            amx = f"; tdpbusd (AMX) peak {self.isa_peak:.0f} GOPS" if self.isa == "amx" else ""
            print(f"measured vpdpbusd peak: {peak:.0f} int8 GOPS on {threads} thread(s){amx}; load average "
                  f"{load:.2f}; quantgraph ISA {self.isa}")
            print(f"{'op':5s} {'shape':28s} {'impl':12s} {'ms':>9s} {'GOPS':>8s} {'%peak':>6s} {'%isa':>5s}  notes")

    def pct_isa(self, gops: float) -> float:
        return 100.0 * gops / self.isa_peak if self.isa_peak else 0.0

    def add(self, op: str, m: int, n: int, k: int, impl: str, seconds: float, ops: float, shape: str = "",
            **extra: Any) -> Result:
        gops = ops / seconds / 1e9
        pct = 100.0 * gops / self.peak if self.peak else 0.0
        r = Result(op, m, n, k, impl, round(gops, 2), round(pct, 2), round(seconds * 1e3, 4), extra)
        self.results.append(r)
        if self.as_json:
            d = asdict(r)
            d.update(d.pop("extra"))
            d["threads"], d["peak_gops"], d["isa"] = self.threads, round(self.peak, 1), self.isa
            d["pct_isa_peak"], d["isa_peak_gops"] = round(self.pct_isa(gops), 2), round(self.isa_peak, 1)
            print(json.dumps(d), flush=True)
        else:
            notes = " ".join(f"{k}={v}" for k, v in extra.items())
            print(f"{op:5s} {shape or f'{m}x{n}x{k}':28s} {impl:12s} {seconds * 1e3:9.3f} {gops:8.1f} {pct:6.1f} "
                  f"{self.pct_isa(gops):5.1f}  {notes}", flush=True)
        return r

    def note(self, text: str) -> None:
        if not self.as_json:
            print(text, flush=True)


def random_u8(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, shape).astype(np.uint8)


def random_s8(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)
