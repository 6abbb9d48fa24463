"""Automatic mixed precision: ``compile(..., quantize="int8", accuracy_target=...)``.

    model = quantgraph.compile("m.onnx", quantize="int8", calibration=batches, accuracy_target=35.0)   # dB
    model = quantgraph.compile("m.onnx", quantize="int8", calibration=batches,
                               accuracy_target=top1, accuracy_tolerance=0.005)    # top1(model) -> float
    print(model.accuracy_search)                  # the trials: what was kept wider, what each step bought

The target is an output SQNR in dB (the lowest over the model's float outputs, against the fp32 graph on the
calibration batches), or a callable ``metric(model) -> float`` (higher is better, on the user's own data) that must
stay within ``accuracy_tolerance`` of the fp32 model's value.

The search orders the quantized units by the harm each does alone (``quantization_report``: the model outputs' SQNR
with only that unit quantized, lowest first) and keeps the first ``k`` of them wider: int16 for Conv/MatMul/Gemm
groups where int16 is realized (``WIDER``), fp32 otherwise (and fp32 for every unit if int16 is not enough: one
probe with every unit widened to int16 tells, before any search inside the tier). The
first ``k`` tried is the one the measured noises predict (independent roundings: their noise powers add, the sum
rescaled to the whole int8 model's measured noise, which is larger where errors compound); from there it doubles
upward until a trial meets the target, then bisects down (the error is not strictly monotone in
``k``, so bisection can return a larger ``k`` than the best, never a model that misses the target). The default
int8 model is returned when it meets the target already. Each trial is a real compile (QDQ on the
planned fp32 graph, realization, lowering) evaluated on the real kernels; calibration runs once.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from quantgraph.compiler.quantize.quantize import QuantizeOptions, _two_activation
from quantgraph.compiler.quantize.sensitivity import QuantSource, plan_units, quantization_report, sqnr_db
from quantgraph.errors import InputError

#: batches the sensitivity measurement of the search uses (the trials use them all)
SEARCH_BATCHES = 2
#: the precision a unit is widened to first (by anchor op), before fp32: W8A16 for groups with constant weights
#: (a MatMul of two activations has no int16 form: it goes to fp32 straight away, see ``_unit_precision``)
WIDER: dict[str, str] = {"Conv": "int16", "MatMul": "int16", "Gemm": "int16"}


@dataclass
class Trial:
    """One compile of the search: ``kept`` units at ``precision``, the value it reached."""

    k: int
    precision: str
    kept: list[str]
    value: float
    ok: bool
    seconds: float

    def __str__(self) -> str:
        return (f"k={self.k:3d} {self.precision:5s} -> {self.value:.4g} ({'meets' if self.ok else 'misses'} the "
                f"target, {self.seconds:.1f} s)" + (f": {', '.join(self.kept[-3:])}" if self.kept else ""))


@dataclass
class SearchResult:
    """What ``accuracy_target`` did: the target, the fp32 and chosen values, every trial, what was kept."""

    target: str
    fp32_value: float | None
    trials: list[Trial] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)    # unit -> precision it was kept at
    met: bool = False
    seconds: float = 0.0
    order: list[tuple[str, float]] = field(default_factory=list)   # (unit, local SQNR) worst first

    def __str__(self) -> str:
        head = (f"accuracy search ({self.target}): {'met' if self.met else 'NOT met'} with {len(self.kept)} "
                f"unit(s) kept wider, {len(self.trials)} trial(s), {self.seconds:.1f} s")
        lines = [head] + ["  " + str(t) for t in self.trials]
        if self.kept:
            lines.append("  kept: " + ", ".join(f"{u} ({p})" for u, p in self.kept.items()))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"target": self.target, "fp32_value": self.fp32_value, "met": self.met, "kept": self.kept,
                "seconds": self.seconds, "order": [list(o) for o in self.order],
                "trials": [t.__dict__ for t in self.trials]}


def output_sqnr(model: Any, data: Sequence[Any], reference: list[dict[str, np.ndarray]]) -> float:
    """The lowest SQNR (dB) over the float outputs of ``model`` against ``reference`` (one dict per batch)."""
    sig: dict[str, float] = {}
    err: dict[str, float] = {}
    for feeds, ref in zip(data, reference):
        got = model.run(feeds)
        for t, f in ref.items():
            f = np.asarray(f, np.float64).ravel()
            e = f - np.asarray(got[t], np.float64).ravel()
            ok = np.isfinite(e)
            sig[t] = sig.get(t, 0.0) + float(f[ok] @ f[ok])
            err[t] = err.get(t, 0.0) + float(e[ok] @ e[ok])
    return min((sqnr_db(sig[t], err[t]) for t in sig), default=math.inf)


def search(source: QuantSource, build: Callable[[QuantizeOptions], Any], fp32: Any, target: Any,
           tolerance: float, progress: bool = False) -> tuple[Any, SearchResult]:
    """Find the fewest units to keep wider so the model meets ``target`` (see the module docstring).

    ``build(options)`` compiles the planned fp32 graph with those options; ``fp32`` is the fp32 CompiledModel.
    Returns the chosen CompiledModel and the record of the search.
    """
    from quantgraph.compiler.quantize.calibrate import batch_feeds

    t0 = time.perf_counter()
    if source.data is None:
        raise InputError("accuracy_target= needs the calibration batches as a sequence (a list), not an iterator")
    g = source.graph
    inputs = [g.tensors[t] for t in g.inputs]
    feeds = [batch_feeds(inputs, b, i) for i, b in enumerate(source.data)]
    if callable(target):
        base = float(target(fp32))
        goal = base - float(tolerance)

        def value(m: Any) -> float:
            return float(target(m))
        result = SearchResult(f"metric >= {goal:.4g} (fp32 {base:.4g} - {tolerance:g})", base)
    else:
        if not isinstance(target, (int, float)) or not math.isfinite(float(target)):
            raise ValueError(f"accuracy_target must be an output SQNR in dB (a number) or a callable "
                             f"metric(model) -> float; got {target!r}")
        goal = float(target)
        ref = []
        for f in feeds:
            out = fp32.run(f)
            ref.append({t: v for t, v in out.items() if np.issubdtype(np.asarray(v).dtype, np.floating)})
        if not ref or not ref[0]:
            raise InputError("accuracy_target in dB needs a float output; give a callable metric instead")

        def value(m: Any) -> float:
            return output_sqnr(m, feeds, ref)
        result = SearchResult(f"output SQNR >= {goal:g} dB", None)

    done: dict[tuple[int, str], tuple[Any, Trial]] = {}

    def trial(k: int, precision: str, order: list[str]) -> tuple[Any, Trial]:
        if (k, precision) in done:  # the int16 tier's first probe (k = all) may come up again
            return done[(k, precision)]
        t1 = time.perf_counter()
        kept = order[:k]
        opts = _widened(source.options, g, units_by_name, kept, precision)
        m = build(opts)
        v = value(m)
        tr = Trial(k, precision, kept, v, v >= goal, time.perf_counter() - t1)
        result.trials.append(tr)
        if v > seen[1].value:
            seen[:] = [m, tr]
        bar.update(1)
        bar.set_postfix_str(f"kept {k} at {precision}: {v:.2f} (goal {goal:.2f})")
        done[(k, precision)] = (m, tr)
        return m, tr

    from tqdm.auto import tqdm

    # NOTE: bisection: the number of trials is not known up front, so the bar counts them and shows the last
    bar = tqdm(desc="accuracy search", unit="trial", disable=not progress, leave=False)
    model0 = build(source.options)
    v0 = value(model0)
    bar.update(1)
    result.trials.append(Trial(0, "int8", [], v0, v0 >= goal, time.perf_counter() - t0))
    seen: list = [model0, result.trials[0]]   # the best model so far, returned if nothing meets the target
    if v0 >= goal:
        result.met, result.seconds = True, time.perf_counter() - t0
        bar.close()
        return model0, result
    report = quantization_report(model0, feeds, max_batches=SEARCH_BATCHES)
    units = plan_units(g, model0.quantization)
    units_by_name = {u.name: u for u in units}
    ranked = report.ranked()
    order = [r.unit for r in ranked]
    result.order = [(r.unit, r.output_sqnr if r.output_sqnr is not None else r.local_sqnr) for r in ranked]
    start = _predicted_k(ranked, goal, v0) if not callable(target) else 1
    best: tuple[Any, Trial] | None = None
    tiers = (["int16"] if any(_unit_precision("int16", g, units_by_name[u]) == "int16" for u in order) else []) \
        + ["fp32"]
    for precision in tiers:
        # int16 removes only the activation rounding (weights stay s8, some units have no int16 form): one probe
        # with every unit widened says whether the tier can meet the target at all before searching inside it
        if precision != tiers[-1] and not trial(len(order), precision, order)[1].ok:
            continue
        best = _smallest_k(lambda k: trial(k, precision, order), start, len(order))
        if best is not None:
            break
    met = best is not None
    best = best or (seen[0], seen[1])   # nothing met it: the closest model (every unit fp32 missed too)
    result.met = met
    result.kept = {u: _unit_precision(best[1].precision, g, units_by_name[u]) for u in best[1].kept}
    result.seconds = time.perf_counter() - t0
    bar.close()
    return best[0], result


def _predicted_k(ranked: Sequence[Any], goal_db: float, measured_db: float | None = None) -> int:
    """The fewest units (most harmful first) to keep so the rest's noise, added up, meets ``goal_db``: the noises
    of units quantized alone add (they are independent roundings), measured at the outputs. ``measured_db``, the
    whole int8 model's SQNR, rescales the sum to it: where the units' errors compound (a noisy input to a unit
    that clips, pplcnet's gates) the alone-noises add up to far less than the model's, and an unscaled sum
    predicted k = 1 there (16.8 dB measured, 30 asked)."""
    nsr = [10.0 ** (-r.output_sqnr / 10.0) if r.output_sqnr is not None and math.isfinite(r.output_sqnr) else 0.0
           for r in ranked]
    goal = 10.0 ** (-goal_db / 10.0)
    rest = sum(nsr)
    if measured_db is not None and math.isfinite(measured_db) and rest > 0.0:
        goal /= max(1.0, 10.0 ** (-measured_db / 10.0) / rest)
    for k, x in enumerate(nsr):
        if rest <= goal:
            return max(k, 1)
        rest -= x
    return len(nsr)


def _smallest_k(run: Callable[[int], tuple[Any, Trial]], start: int, n: int) -> tuple[Any, Trial] | None:
    """The smallest k in 1..n whose trial meets the target (k = 0 is known to miss), searching from ``start``:
    doubling the distance upward until one meets, then bisecting; None if even k = n misses."""
    lo, hi, found = 0, None, None
    k = max(1, min(start, n))
    step = max(1, k // 2)
    while hi is None:
        m, tr = run(k)
        if tr.ok:
            hi, found = k, (m, tr)
        elif k >= n:
            return None
        else:
            lo, k, step = k, min(n, k + step), step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        m, tr = run(mid)
        if tr.ok:
            hi, found = mid, (m, tr)
        else:
            lo = mid
    return found


def _unit_precision(precision: str, g: Any, unit: Any) -> str:
    """What a unit kept wider in tier ``precision`` runs at: int16 where ``WIDER`` has its op and it has constant
    weights (not a MatMul of two activations), else fp32."""
    if precision != "int16" or WIDER.get(unit.op) != "int16":
        return "fp32"
    return "fp32" if _two_activation(g, g.node(unit.name)) else "int16"


def _widened(options: QuantizeOptions, g: Any, units: dict, kept: Sequence[str], precision: str) -> QuantizeOptions:
    """``options`` with the nodes of ``kept`` units asked to run at ``precision`` (int16 where realized)."""
    pairs = []
    for name in kept:
        u = units[name]
        want = _unit_precision(precision, g, u)
        nodes = u.nodes if want == "fp32" else [u.name]
        pairs += [(re.escape(n), want) for n in nodes]
    return replace(options, precision=tuple(pairs) + tuple(options.precision))
