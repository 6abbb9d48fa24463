"""The data behind ``quantgraph report``: one JSON-serializable dict per compiled model.

    report = collect(model, data=batches, feeds={"image": x})    # plain lists, floats, ints, strings
    print(format_text(report))                                    # the per-layer error table
    html_report.write_html(report, "report.html")                 # the page (compiler/html_report.py)

Sections (a key is left out when there is nothing to put in it):

``model``, ``inputs``, ``outputs``    name, opt_level, ISA rung, node counts; tensor names, dtypes and shapes
``op_counts``, ``fusions``, ``passes``  op counts before / after, rule firings (``pipeline.fusions_applied``), passes
``nodes``                         per node of the graph that runs: precision (``visualize.precision_of``), what it
                                  fuses, kernel and ISA rung (``model.lowered``), why a reference runs, its time
``quantization``                  quantized models: the plan's counts, options and fp32 reasons
``calibration``                   quantized models: per calibrated tensor the histogram (at most ``HIST_BINS`` bins),
                                  the range seen, the range chosen and the scale / zero point it became
``layers``, ``output_sqnr``       with ``data``: ``model.quantization_report(data)`` (per quantized unit)
``profile``                       with ``feeds``: ``model.profile(feeds)`` per op type
``comparison``                    quantized models with ``feeds`` or ``data``: the fp32 twin (``compile`` of
                                  ``quant_source.graph`` at the same opt_level) against the int8 model: latency on
                                  ``feeds``, output SQNR, max abs error and top-1 agreement over ``data``

Non-finite floats (an exact unit's SQNR is +inf) are the strings "inf", "-inf" and "nan", so
``json.dumps(report, allow_nan=False)`` works.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Mapping

import numpy as np

from quantgraph.compiler.pipeline import fusions_applied
from quantgraph.compiler.visualize import fused_text, precision_of
from quantgraph.ir.dtypes import is_float
from quantgraph.ir.graph import Graph
from quantgraph.ir.tensor import TensorInfo

FORMAT = "quantgraph.report"
VERSION = 1
#: calibration histograms are summed down to at most this many bins (the page draws each one)
HIST_BINS = 64
#: a latency sample lasts at least this long (tiny models run many calls per sample)
SAMPLE_S = 0.005


# -- plain values -----------------------------------------------------------------------------------------------
def num(x: Any) -> float | str | None:
    """A float for JSON: finite floats as they are, +-inf and NaN as "inf" / "-inf" / "nan", None stays None."""
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def as_float(x: Any) -> float | None:
    """The inverse of :func:`num` (None stays None)."""
    return None if x is None else float(x)


def _plain(x: Any) -> Any:
    """Numbers, tuples, numpy scalars and arrays as JSON values (floats through :func:`num`)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return num(x)
    return x if x is None or isinstance(x, str) else str(x)


def _shape(info: TensorInfo) -> list | None:
    return None if info.shape is None else [d if isinstance(d, (int, str)) else None for d in info.shape]


def _tensor(graph: Graph, t: str) -> dict:
    info = graph.tensors[t]
    return {"name": t, "dtype": info.dtype, "shape": _shape(info)}


# -- sections -----------------------------------------------------------------------------------------------------
def _model_section(model: Any) -> dict:
    from quantgraph.kernels import target

    g = model.graph
    before = model.optimized_from
    return {"name": g.name, "opt_level": int(model.opt_level), "quantized": model.quantization is not None,
            "nodes_before": int(sum(before.values())) if before else None, "nodes_after": len(g),
            "isa": target.select_isa(), "available_isas": list(target.available_isas()),
            "compile_ms": {k: 1e3 * float(v) for k, v in model.compile_seconds.items()}}


def _nodes_section(model: Any) -> list[dict]:
    from quantgraph.kernels import target

    g = model.graph
    lowered = model.lowered
    rows = []
    items = [(ln.node, ln) for ln in lowered] if lowered is not None else [(n, None) for n in g.topo()]
    for n, ln in items:
        if ln is None:
            kernel, rung, reason = "interpreter", None, "opt_level 0 runs the reference interpreter"
        elif ln.kernel is None:
            kernel, rung, reason = "reference", None, ln.reason
        else:
            kernel, reason = ln.kernel.name, ""
            rung = None if ln.kernel.view else target.select_isa(ln.kernel.name)
        outs = [t for t in n.outputs if t]
        rows.append({"name": n.name, "op": n.op, "precision": precision_of(g, n), "fused": fused_text(n),
                     "kernel": kernel, "rung": rung, "reason": reason,
                     "outputs": [_tensor(g, t) for t in outs]})
    return rows


def _quantization_section(model: Any) -> dict:
    plan = model.quantization
    counts = plan.counts()
    return {"summary": plan.summary(), "options": _plain(plan.options.to_json()),
            "counts": {p: dict(sorted(c.items())) for p, c in counts.items()},
            "nodes": {p: int(sum(c.values())) for p, c in counts.items()},
            "fp32_reasons": {why: list(nodes) for why, nodes in plan.fp32_reasons().items()},
            "int16": dict(plan.int16)}


def downsample(counts: np.ndarray, offset: int, exp: int, max_bins: int = HIST_BINS) -> dict | None:
    """A power-of-two-grid histogram (``HistogramObserver``: counts[i] holds [(i + offset) w, (i + offset + 1) w),
    w = 2**exp) cut to its non-empty span and summed in groups to at most ``max_bins`` bins: ``counts`` and
    ``edges`` (one more than counts). Nothing is lost but resolution: the counts add up to the same total."""
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return None
    i0, i1 = int(nz[0]), int(nz[-1]) + 1
    span = counts[i0:i1].astype(np.int64)
    group = max(1, -(-span.size // max_bins))
    bins = -(-span.size // group)
    padded = np.zeros(bins * group, np.int64)
    padded[:span.size] = span
    summed = padded.reshape(bins, group).sum(axis=1)
    w = 2.0 ** exp
    edges = (offset + i0 + np.arange(bins + 1) * group) * w
    return {"counts": [int(c) for c in summed], "edges": [float(e) for e in edges], "bin_width": float(w * group)}


def clipped_fraction(counts: np.ndarray, offset: int, exp: int, lo: float, hi: float, vmin: float,
                     vmax: float) -> float:
    """The share of the histogram's values outside [lo, hi]: each bin's values spread evenly over the bin narrowed to
    the observed [vmin, vmax] (so values at the observed max, e.g. saturated pixels, are not counted as clipped by a
    range that ends there)."""
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    w = 2.0 ** exp
    left = np.maximum((np.arange(counts.size) + offset) * w, vmin)
    right = np.minimum((np.arange(counts.size) + offset + 1) * w, vmax)
    width = right - left
    point = width <= 0
    safe = np.where(point, 1.0, width)
    below = np.where(point, left < lo, np.clip((np.minimum(right, lo) - left) / safe, 0.0, 1.0))
    above = np.where(point, left > hi, np.clip((right - np.maximum(left, hi)) / safe, 0.0, 1.0))
    return float(np.sum(counts * (below + above)) / total)


def _qparams(export: Graph | None, t: str) -> dict:
    """The scale, zero point and storage dtype of the activation Q/DQ pair insert_qdq wrote on tensor ``t``."""
    if export is None or f"{t}/quantize" not in export:
        return {}
    q = export.node(f"{t}/quantize")
    out: dict[str, Any] = {"dtype": export.tensors[q.outputs[0]].dtype}
    for key, slot in (("scale", 1), ("zero_point", 2)):
        x = q.inputs[slot] if len(q.inputs) > slot else ""
        c = export.tensors[x].const if x else None
        if c is not None and np.size(c) == 1:
            out[key] = float(np.asarray(c).reshape(-1)[0]) if key == "scale" else int(np.asarray(c).reshape(-1)[0])
    return out


def _calibration_section(model: Any) -> dict:
    from quantgraph.compiler.quantize.observers import AUTO_CANDIDATES

    stats = model.quant_source.stats
    plan = model.quantization
    wide = set(plan.int16.values())
    readers: dict[str, list[str]] = {}
    for t, src in plan.quantized.items():
        if t != src:
            readers.setdefault(src, []).append(t)
    tensors = []
    for t, obs in stats.observers.items():
        chosen = stats.range(t)
        entry: dict[str, Any] = {"name": t, "kind": obs.kind, "min": num(obs.min), "max": num(obs.max),
                                 "count": int(obs.count), "nonfinite": int(obs.nonfinite),
                                 "range": None if chosen is None else [num(chosen[0]), num(chosen[1])],
                                 "chosen_by": stats.mode, "shares_params": sorted(readers.get(t, []))}
        if chosen is not None and stats.mode == "auto" and obs.kind == "histogram":
            for m in AUTO_CANDIDATES:  # which candidate "auto" picked (the same range as one of them)
                if stats.range(t, m) == chosen:
                    entry["chosen_by"] = f"auto: {m}"
                    break
        if t in wide and obs.min is not None:  # an int16 group's input: symmetric over +-max|x|
            m = max(abs(obs.min), abs(obs.max))
            entry["quantized_range"] = [num(-m), num(m)]
            entry["chosen_by"] = "int16: +-max|x|"
        elif chosen is not None:  # the quantize pass widens the range to hold 0
            entry["quantized_range"] = [num(min(chosen[0], 0.0)), num(max(chosen[1], 0.0))]
        entry.update(_qparams(getattr(model, "export_graph", None), t))
        if obs.kind == "histogram" and obs.exp is not None:
            entry["histogram"] = downsample(obs.counts, obs.offset, obs.exp)
            if chosen is not None and t not in wide:
                entry["clipped_fraction"] = clipped_fraction(obs.counts, obs.offset, obs.exp, chosen[0], chosen[1],
                                                             obs.min, obs.max)
        tensors.append(entry)
    return {"mode": stats.mode, "percentile": float(stats.percentile), "batches": int(stats.batches),
            "tensors": tensors}


def _layers(model: Any, data: list, sensitivity: bool) -> dict:
    rep = model.quantization_report(data, sensitivity=sensitivity)
    ranked = {id(r): i for i, r in enumerate(rep.ranked())}
    layers = []
    for r in rep.layers:
        row = _plain(r.to_json())
        row["harm_rank"] = ranked[id(r)] + 1
        layers.append(row)
    return {"layers": layers, "output_sqnr": _plain(rep.output_sqnr),
            "simulated_output_sqnr": _plain(rep.simulated_output_sqnr), "report_batches": int(rep.batches)}


def _profile_section(model: Any, feeds: dict, repeats: int) -> dict:
    prof = model.profile(feeds, repeats=max(1, repeats))
    total = float(prof["total"]) or 1e-12
    counts: dict[str, int] = {}
    for n in (ln.node for ln in model.lowered) if model.lowered is not None else ():
        counts[n.op] = counts.get(n.op, 0) + 1
    per_op = [{"op": op, "ms": 1e3 * float(s), "share": float(s) / total, "nodes": counts.get(op, 0),
               "kernels": list(prof["kernels"].get(op, []))}
              for op, s in sorted(prof["per_op"].items(), key=lambda kv: -kv[1])]
    return {"total_ms": 1e3 * float(prof["total"]), "per_op": per_op,
            "per_node_ms": {k: 1e3 * float(v) for k, v in prof["per_node"].items()},
            "batch": [list(np.shape(v)) for v in feeds.values()]}


def latency_ms(model: Any, feeds: dict, repeats: int = 3) -> float:
    """Median milliseconds of one ``model(feeds)`` call over ``repeats`` samples (after a warm-up call); a sample
    runs the model as often as fits ``SAMPLE_S`` (at least once)."""
    t0 = time.perf_counter()
    model(feeds)
    first = time.perf_counter() - t0
    calls = max(1, min(1000, int(SAMPLE_S / max(first, 1e-7))))
    samples = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(calls):
            model(feeds)
        samples.append((time.perf_counter() - t0) / calls)
    return 1e3 * statistics.median(samples)


class _Agreement:
    """Running SQNR, max |error| and top-1 agreement of outputs ``q`` against reference ``f``."""

    def __init__(self) -> None:
        self.ff = self.ee = 0.0
        self.max_abs = 0.0
        self.same = self.rows = 0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f64, q64 = np.asarray(f, np.float64), np.asarray(q, np.float64)
        ok = np.isfinite(f64) & np.isfinite(q64)
        e = (f64 - q64)[ok]
        self.ff += float(np.sum(f64[ok] ** 2))
        self.ee += float(np.sum(e ** 2))
        if e.size:
            self.max_abs = max(self.max_abs, float(np.abs(e).max()))
        if f64.ndim == 2 and f64.shape[1] > 1:
            self.same += int((f64.argmax(axis=1) == q64.argmax(axis=1)).sum())
            self.rows += f64.shape[0]

    def to_json(self, name: str) -> dict:
        from quantgraph.compiler.quantize.sensitivity import sqnr_db

        return {"name": name, "sqnr_db": num(sqnr_db(self.ff, self.ee)), "max_abs_error": num(self.max_abs),
                "top1_agreement": (self.same / self.rows) if self.rows else None}


def _comparison(model: Any, data: list | None, feeds: dict | None, repeats: int) -> dict:
    from quantgraph.compiler.api import compile as qg_compile
    from quantgraph.compiler.quantize.calibrate import batch_feeds

    t0 = time.perf_counter()
    fp32 = qg_compile(model.quant_source.graph, opt_level=model.opt_level)
    out: dict[str, Any] = {"fp32_compile_ms": 1e3 * (time.perf_counter() - t0)}
    if feeds is not None:
        a, b = latency_ms(fp32, feeds, repeats), latency_ms(model, feeds, repeats)
        out.update(fp32_latency_ms=a, int8_latency_ms=b, speedup=a / b if b > 0 else None,
                   batch=[list(np.shape(v)) for v in feeds.values()])
    if data:
        inputs = model.input_info()
        names = [t for t in model.graph.outputs if is_float(model.graph.tensors[t].dtype)]
        agree = {t: _Agreement() for t in names}
        for i, batch in enumerate(data):
            fd = batch_feeds(inputs, batch, i)
            ref, got = fp32.run(fd), model.run(fd)
            for t in names:
                agree[t].add(ref[t], got[t])
        out["outputs"] = [agree[t].to_json(t) for t in names]
        out["batches"] = len(data)
    return out


# -- collect --------------------------------------------------------------------------------------------------
def _as_batches(data: Any) -> list | None:
    if data is None:
        return None
    if isinstance(data, (np.ndarray, Mapping)):
        return [data]
    return list(data)


def _as_feeds(model: Any, feeds: Any) -> dict | None:
    from quantgraph.compiler.executable import validate_feeds

    if feeds is None:
        return None
    if isinstance(feeds, Mapping) or isinstance(feeds, np.ndarray):
        args: tuple = (feeds,)
    else:
        args = tuple(feeds)
    return validate_feeds(model.input_info(), args, {})


def collect(model: Any, data: Any = None, feeds: Any = None, repeats: int = 3, sensitivity: bool = True) -> dict:
    """Everything ``quantgraph report`` shows about a CompiledModel, as plain JSON data (see the module docstring).

    Args:
        model: a CompiledModel (fp32 or ``compile(quantize="int8")``).
        data: batches like ``calibration=`` (a list of arrays or feed dicts; one array or dict is one batch) for
            the per-layer error and the fp32-vs-int8 accuracy; None leaves those sections out.
        feeds: one input (a dict, an array for a one-input model, or arrays in input order) for the profile and
            the latencies; None leaves those out.
        repeats: timed runs per latency and profile measurement (the median is kept).
        sensitivity: also measure each unit's error at the outputs with only it quantized (one run of the model per
            unit and batch: about 10x the cost of the rest; the report's ``alone@out`` column).
    """
    g = model.graph
    batches = _as_batches(data)
    fd = _as_feeds(model, feeds)
    report: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": _model_section(model),
                              "inputs": [_tensor(g, t) for t in g.inputs],
                              "outputs": [_tensor(g, t) for t in g.outputs],
                              "op_counts": {"before": dict(model.optimized_from or {}), "after": g.op_counts()},
                              "fusions": fusions_applied(model.pass_reports),
                              "passes": [{"name": r.name, "changed": bool(r.changed), "ms": 1e3 * float(r.seconds),
                                          "counts": dict(r.counts), "nodes_before": int(r.nodes_before),
                                          "nodes_after": int(r.nodes_after)} for r in model.pass_reports]}
    nodes = _nodes_section(model)
    report["nodes"] = nodes
    report["precision_counts"] = {p: sum(1 for r in nodes if r["precision"] == p) for p in ("int8", "int16", "fp32")}
    # a model loaded from an artifact may keep its plan without the source it was quantized from
    quantized = model.quantization is not None and getattr(model, "quant_source", None) is not None
    if model.quantization is not None:
        report["quantization"] = _quantization_section(model)
    if quantized:
        report["calibration"] = _calibration_section(model)
        if batches:
            report.update(_layers(model, batches, sensitivity))
    if fd is not None:
        report["profile"] = _profile_section(model, fd, repeats)
        for row in nodes:
            ms = report["profile"]["per_node_ms"].get(row["name"])
            row["ms"] = None if ms is None else ms
    if quantized and (fd is not None or batches):
        report["comparison"] = _comparison(model, batches, fd, repeats)
    return _plain(report)


# -- text -------------------------------------------------------------------------------------------------------
def db_text(x: Any) -> str:
    """An SQNR value of a report ("inf" strings included) as text: one decimal, or "inf"."""
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    return f"{x:.1f}"


def _range_text(r: Any) -> str:
    return "" if not r else f"{as_float(r[0]):.3g}..{as_float(r[1]):.3g}"


def _harm_key(row: dict) -> tuple[float, float]:
    alone = row.get("output_sqnr")
    local = as_float(row["local_sqnr"])
    return (as_float(alone) if alone is not None else local, local)


def layer_rows(report: dict) -> list[dict]:
    """The report's layers, most harmful first (as ``QuantizationReport.ranked``)."""
    layers = list(report.get("layers", []))
    if all("harm_rank" in r for r in layers):
        return sorted(layers, key=lambda r: r["harm_rank"])
    return sorted(layers, key=_harm_key)


def format_text(report: dict) -> str:
    """A plain-text report: one header line and the per-layer error table, most harmful unit first."""
    from quantgraph.compiler.report import _table

    m = report["model"]
    head = [f"{m['name']}: opt_level {m['opt_level']}, {m['nodes_after']} nodes"
            + (f" (from {m['nodes_before']})" if m.get("nodes_before") else "") + f", ISA {m['isa']}"]
    pc = report.get("precision_counts", {})
    if pc:
        head.append("precision: " + ", ".join(f"{p} {pc[p]}" for p in ("int8", "int16", "fp32") if pc.get(p)))
    cmp = report.get("comparison", {})
    if "fp32_latency_ms" in cmp:
        head.append(f"latency: fp32 {cmp['fp32_latency_ms']:.3f} ms, int8 {cmp['int8_latency_ms']:.3f} ms"
                    + (f" ({cmp['speedup']:.2f}x)" if cmp.get("speedup") else ""))
    for o in cmp.get("outputs", []):
        top1 = "" if o["top1_agreement"] is None else f", top-1 agreement {100 * o['top1_agreement']:.1f}%"
        head.append(f"output {o['name']}: SQNR {db_text(o['sqnr_db'])} dB vs fp32, max |error| "
                    f"{as_float(o['max_abs_error']):.3g}{top1}")
    if not report["model"].get("quantized"):
        return "\n".join(head + ["", "fp32 model: no quantized layers"])
    layers = layer_rows(report)
    if not layers:
        return "\n".join(head + ["", "per-layer error: not measured (collect(model, data=batches) measures it)"])
    outs = ", ".join(f"{t} {db_text(v)} dB" for t, v in report.get("output_sqnr", {}).items())
    head += ["", f"per-layer error over {report.get('report_batches', '?')} batch(es), {len(layers)} quantized units, "
             f"most harmful first; int8 output SQNR {outs}"]
    header = ("unit", "op", "prec", "alone@out dB", "local dB", "cumul dB", "cos", "x scale", "range chosen",
              "range seen", "flags")
    rows = []
    for r in layers:
        scale = r.get("input_scale")
        rows.append((r["unit"], r["op"], r["precision"], db_text(r.get("output_sqnr")),
                     db_text(r["local_sqnr"]), db_text(r["cumulative_sqnr"]),
                     f"{as_float(r['local_cosine']):.4f}", "" if scale is None else f"{scale:.3g}",
                     _range_text(r.get("calib_range")), _range_text(r.get("seen_range")),
                     ",".join(r.get("flags", []))))
    return "\n".join(head + [""] + ["  " + s for s in _table(rows, header)])


__all__ = ["collect", "format_text", "downsample", "clipped_fraction", "latency_ms", "num", "as_float", "db_text",
           "layer_rows", "HIST_BINS"]
