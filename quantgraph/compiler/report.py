"""Text report of a CompiledModel: op counts before/after, fusions applied, kernels chosen, time per op type."""
from __future__ import annotations

from typing import Any


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...], text: bool = False) -> list[str]:
    """Fixed-width columns: the first left-aligned, the others right-aligned (numbers) or, with ``text``, left."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 or text else '>'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]


def format_summary(model: Any) -> str:
    """The report behind ``CompiledModel.summary()``."""
    g = model.graph
    after = g.op_counts()
    before = model.optimized_from
    lines = [f"CompiledModel '{g.name}' opt_level={model.opt_level}: {len(g)} nodes"
             + (f" (from {sum(before.values())})" if before else "")]
    if getattr(model, "quantization", None) is not None:
        lines += ["", model.quantization.summary()]
    lines.append("")
    lines.append("op counts")
    ops = sorted(set(after) | set(before or {}))
    rows = [(op, str((before or {}).get(op, "")) if before else "-", str(after.get(op, 0))) for op in ops]
    rows.append(("total", str(sum(before.values())) if before else "-", str(len(g))))
    lines += ["  " + s for s in _table(rows, ("op", "before", "after"))]
    if model.pass_reports:
        lines += ["", "passes"]
        prow = []
        fused: dict[str, int] = {}
        for r in model.pass_reports:
            counts = dict(getattr(r, "counts", {}) or {})
            prow.append((r.name, "yes" if r.changed else "no", f"{1e3 * float(getattr(r, 'seconds', 0.0)):.1f}",
                         ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"))
            for k, v in counts.items():
                fused[k] = fused.get(k, 0) + int(v)
        lines += ["  " + s for s in _table(prow, ("pass", "changed", "ms", "rules fired"))]
        if fused:
            lines += ["", "fusions / rewrites applied"]
            lines += [f"  {k}: {v}" for k, v in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]
    prof = model._last_profile
    lowered = model._lowered
    if lowered is not None:
        kernels: dict[str, dict[str, int]] = {}
        for ln in lowered:
            name = ln.kernel.name if ln.kernel is not None else "reference"
            kernels.setdefault(ln.node.op, {}).setdefault(name, 0)
            kernels[ln.node.op][name] += 1
        lines += ["", "kernels (op: kernel x count)"]
        for op in sorted(kernels):
            lines.append(f"  {op}: " + ", ".join(f"{k} x{v}" for k, v in sorted(kernels[op].items())))
        refused = sorted({(ln.node.op, ln.reason) for ln in lowered if ln.kernel is None})
        if refused:
            lines += ["", "reference fallbacks"]
            lines += [f"  {op}: {why}" for op, why in refused]
    else:
        lines += ["", "kernels: reference interpreter (opt_level 0)"]
    if model.compile_seconds:
        lines += ["", "compile times"]
        lines += [f"  {k}: {1e3 * v:.1f} ms" for k, v in model.compile_seconds.items()]
    if prof is not None:
        total = prof["total"] or 1e-12
        lines += ["", f"time per op type (profiling run, total {1e3 * prof['total']:.3f} ms)"]
        counts = {}
        if lowered is not None:
            for ln in lowered:
                counts[ln.node.op] = counts.get(ln.node.op, 0) + 1
        trows = [(op, str(counts.get(op, "")), f"{1e3 * s:.3f}", f"{100 * s / total:.1f}%")
                 for op, s in sorted(prof["per_op"].items(), key=lambda kv: -kv[1])]
        lines += ["  " + s for s in _table(trows, ("op", "nodes", "ms", "share"))]
    else:
        lines += ["", "time per op type: call profile(*inputs) first"]
    return "\n".join(lines)


def node_rows(model: Any) -> list[dict[str, str]]:
    """Per node in execution order: name, op, precision, kernel (or "reference"/"interpreter"), ISA rung and what a
    fused node holds."""
    from quantgraph.compiler.visualize import fused_text, precision_of
    from quantgraph.kernels.target import select_isa

    g = model.graph
    rows = []
    lowered = model.lowered
    if lowered is None:
        return [{"node": n.name, "op": n.op, "precision": precision_of(g, n), "kernel": "interpreter",
                 "rung": "-", "holds": fused_text(n) or ""} for n in g.topo()]
    for ln in lowered:
        k = ln.kernel
        if k is None:
            kernel, rung = "reference", "-"
        else:
            kernel, rung = k.name, select_isa(k.name)
        rows.append({"node": ln.node.name, "op": ln.node.op, "precision": precision_of(g, ln.node),
                     "kernel": kernel, "rung": rung, "holds": fused_text(ln.node) or ""})
    return rows


def format_inspect(model: Any, source: str = "") -> str:
    """What ``quantgraph inspect`` prints: the source, op counts before/after, fusions, precision per node, and the
    kernel and ISA rung of every node."""
    from quantgraph.compiler.artifact import quantization_summary
    from quantgraph.compiler.pipeline import fusions_applied
    from quantgraph.kernels.target import default_isa
    from quantgraph import config

    g = model.graph
    lines = [f"model '{g.name}'" + (f" from {source}" if source else "") + f": opt_level {model.opt_level}, "
             f"{len(g)} nodes, running on ISA rung {config.get().isa or default_isa()}"]
    manifest = model.manifest
    if manifest is not None:
        lines.append(f"artifact: quantgraph {manifest.get('quantgraph_version')}, compiled on "
                     f"{manifest.get('compiled_on', {}).get('isa')} ({manifest.get('compiled_on', {}).get('cpu')}) "
                     f"at {manifest.get('created')}, source sha256 {str(manifest.get('source_sha256'))[:16]}")
    q = quantization_summary(model)
    mode = q.get("mode")
    if mode == "int8":
        nodes = q.get("nodes", {})
        cal = q.get("calibration", {})
        lines.append(f"quantized: int8 {nodes.get('int8', 0)}, int16 {nodes.get('int16', 0)}, fp32 "
                     f"{nodes.get('fp32', 0)} planned nodes; calibration {cal.get('mode', '?')} over "
                     f"{cal.get('batches', '?')} batch(es)")
    else:
        lines.append(f"precision: {mode}")
    after = g.op_counts()
    before = model.optimized_from or {}
    ops = sorted(set(after) | set(before))
    rows = [(op, str(before.get(op, "")) if before else "-", str(after.get(op, ""))) for op in ops]
    rows.append(("total", str(sum(before.values())) if before else "-", str(len(g))))
    lines += ["", "op counts"] + ["  " + s for s in _table(rows, ("op", "before", "after"))]
    fused = fusions_applied(model.pass_reports) if model.pass_reports else model.fusions_saved
    if fused:
        lines += ["", "fusions / rewrites applied"]
        lines += [f"  {k}: {v}" for k, v in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]
    per_node = node_rows(model)
    counts: dict[str, int] = {}
    for r in per_node:
        counts[r["precision"]] = counts.get(r["precision"], 0) + 1
    lines += ["", "nodes (" + ", ".join(f"{p} {n}" for p, n in sorted(counts.items())) + ")"]
    nrows = [(r["node"], r["op"], r["precision"], r["kernel"], r["rung"], r["holds"]) for r in per_node]
    header = ("node", "op", "precision", "kernel", "rung", "holds")
    lines += ["  " + s.rstrip() for s in _table(nrows, header, text=True)]
    return "\n".join(lines)
