"""Text report of a CompiledModel: op counts before/after, fusions applied, kernels chosen, time per op type."""
from __future__ import annotations

from typing import Any


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
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
