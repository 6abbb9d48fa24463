"""``quantgraph report --html``: one self-contained HTML5 page from a ``report_data.collect`` dict.

    html_report.write_html(report_data.collect(model, data, feeds), "report.html")

The page has inline CSS and inline SVG charts drawn here; no script, no external URL. Sections (each present when
the report has its data; ids in brackets):

* summary [summary]: model, ISA, node counts, precision counts; fp32 vs int8 latency (with a two-bar chart) and
  output accuracy (SQNR, max |error|, top-1 agreement); op counts before / after and the fusions applied.
* per-layer error [layers]: one bar per quantized unit, its local SQNR in dB (the error it adds alone), a dot for
  the cumulative SQNR (everything up to it quantized); flagged units (worst, outlier, clipped) in red; and the
  table of every number, most harmful first.
* calibration [calibration]: per calibrated tensor its histogram (log counts), the chosen clip range as red lines,
  0 as a grey line, the scale and zero point it became and the share of values clipped.
* speed per op type [speed]: milliseconds per op type from ``model.profile`` (bars, with the share).
* nodes [nodes]: per node of the graph that runs: precision, what it fuses, kernel, ISA rung, time.

Every piece of text goes through :func:`esc` (``html.escape``); numbers are formatted by the helpers below, and
chart elements carry their value in ``data-*`` attributes (tests read them).
"""
from __future__ import annotations

import html
import math
import os
from typing import Any, Iterable

from quantgraph.compiler.report_data import as_float, db_text, layer_rows
from quantgraph.compiler.visualize import BORDER, COLORS

#: chart geometry (pixels)
WIDTH = 1100
ROW = 22
LABEL_W = 330
HIST_W, HIST_H = 340, 150
#: chart colours
BAR = "#4a7fc1"
BAD = "#c43d3d"
CUMUL = "#1d2b3a"

CSS = """
:root { --fg: #1d2430; --muted: #5b6572; --line: #d8dde3; --card: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fff; }
main { max-width: 1160px; margin: 0 auto; padding: 18px 24px 40px; }
h1 { font-size: 24px; margin: 6px 0 2px; }
h2 { font-size: 19px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.sub, .note { color: var(--muted); margin: 2px 0 8px; }
nav { margin: 10px 0 4px; }
nav a { margin-right: 14px; color: #2a5d9f; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px;
        min-width: 150px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
.card .v { font-size: 21px; font-weight: 600; }
.card .v small { font-size: 13px; font-weight: 400; color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: var(--card); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { max-width: 380px; overflow-wrap: anywhere; }
td.nowrap { white-space: nowrap; }
tr.flagged td { background: #fdecec; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; border: 1px solid; font-size: 12px; }
.cols { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.hists { display: flex; flex-wrap: wrap; gap: 12px; }
.hist { border: 1px solid var(--line); border-radius: 6px; padding: 6px 8px; background: #fff; }
.hist .t { font-weight: 600; font-size: 13px; overflow-wrap: anywhere; max-width: 340px; }
.hist .m { color: var(--muted); font-size: 12px; }
pre { background: var(--card); border: 1px solid var(--line); padding: 8px 10px; border-radius: 6px;
      white-space: pre-wrap; font-size: 12px; }
svg text { font-family: inherit; }
footer { color: var(--muted); font-size: 12px; margin-top: 30px; }
"""


# -- text and numbers ---------------------------------------------------------------------------------------------
def esc(x: Any) -> str:
    """Any value as HTML text (``html.escape``, quotes too, so it is safe in attributes)."""
    return html.escape("" if x is None else str(x), quote=True)


def ms_text(x: Any) -> str:
    return "" if x is None else f"{float(x):.3f}"


def num_text(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return ""
    v = as_float(x)
    return db_text(x) if isinstance(x, str) else format(v, spec)


def pct_text(x: Any) -> str:
    return "" if x is None else f"{100 * float(x):.1f}%"


def _short(s: str, limit: int = 48) -> str:
    if len(s) <= limit:
        return s
    keep = (limit - 3) // 2
    return s[:keep] + "..." + s[-(limit - 3 - keep):]


def _tag(name: str, body: str = "", **attrs: Any) -> str:
    """``<name attrs>body</name>``; attribute names take ``_`` for ``-`` (``data_unit`` -> ``data-unit``) and a
    trailing ``_`` is dropped (``class_``); None values are left out."""
    parts = [name]
    for k, v in attrs.items():
        if v is None:
            continue
        parts.append(f'{k.rstrip("_").replace("_", "-")}="{esc(v)}"')
    return f"<{' '.join(parts)}>{body}</{name}>"


def _fmt(v: float) -> str:
    """A coordinate: two decimals at most."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric: set[int] = frozenset(),
           row_classes: Iterable[str | None] | None = None, raw: set[int] = frozenset(),
           nowrap: set[int] = frozenset(), **attrs: Any) -> str:
    """An HTML table; cells are escaped unless their column is in ``raw`` (pre-built HTML)."""
    hs = list(header)
    head = "".join(_tag("th", esc(h), class_="num" if i in numeric else None) for i, h in enumerate(hs))
    body = []
    classes = list(row_classes) if row_classes is not None else None
    for j, r in enumerate(rows):
        cells = []
        for i, c in enumerate(r):
            cls = "num" if i in numeric else ("name" if i == 0 else ("nowrap" if i in nowrap else None))
            cells.append(_tag("td", c if i in raw else esc(c), class_=cls))
        body.append(_tag("tr", "".join(cells), class_=classes[j] if classes else None))
    return _tag("table", _tag("thead", _tag("tr", head)) + _tag("tbody", "".join(body)), **attrs)


def _svg(width: float, height: float, body: str, label: str, **attrs: Any) -> str:
    return _tag("svg", _tag("title", esc(label)) + body, width=_fmt(width), height=_fmt(height),
                viewBox=f"0 0 {_fmt(width)} {_fmt(height)}", role="img", aria_label=label, **attrs)


def _text(x: float, y: float, s: str, anchor: str = "start", size: int = 12, fill: str = "#1d2430",
          **attrs: Any) -> str:
    return _tag("text", esc(s), x=_fmt(x), y=_fmt(y), text_anchor=anchor, font_size=size, fill=fill, **attrs)


def _nice_max(v: float) -> float:
    """The axis end: ``v`` rounded up to 1, 2 or 5 times a power of ten."""
    if not v > 0 or not math.isfinite(v):
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * p >= v:
            return m * p
    return 10 * p


def _badge(precision: str) -> str:
    return _tag("span", esc(precision), class_="badge",
                style=f"background:{COLORS.get(precision, '#fff')};border-color:{BORDER.get(precision, '#555')}")


# -- charts -------------------------------------------------------------------------------------------------------
def hbar_chart(rows: list[tuple[str, float, dict]], unit: str, label: str, width: int = WIDTH, cls: str = "bar",
               colors: list[str] | None = None, notes: list[str] | None = None) -> str:
    """Horizontal bars: ``rows`` of (label, value, data attributes); ``notes`` is text after each bar's value."""
    finite = [v for _, v, _ in rows if math.isfinite(v)]
    top = _nice_max(max(finite, default=1.0))
    plot = width - LABEL_W - 90
    h = 24 + ROW * len(rows) + 22
    parts = []
    for k in range(6):  # grid and axis labels
        x = LABEL_W + plot * k / 5
        parts.append(_tag("line", x1=_fmt(x), x2=_fmt(x), y1="18", y2=_fmt(h - 20), stroke="#e3e7eb"))
        parts.append(_text(x, h - 6, f"{top * k / 5:g}", "middle", 11, "#5b6572"))
    parts.append(_text(LABEL_W + plot, 12, unit, "end", 11, "#5b6572"))
    for i, (name, v, data) in enumerate(rows):
        y = 24 + ROW * i
        exact = not math.isfinite(v)
        w = plot if exact else max(0.0, plot * v / top)
        color = (colors[i] if colors else BAR)
        parts.append(_text(LABEL_W - 8, y + 14, _short(name), "end", 12))
        parts.append(_tag("rect", _tag("title", esc(f"{name}: {v:g} {unit}")), x=_fmt(LABEL_W), y=_fmt(y + 3),
                          width=_fmt(w), height=_fmt(ROW - 6), fill=color, opacity="0.45" if exact else None,
                          class_=cls, **data))
        value = ("inf (exact)" if exact else f"{v:.3g}") + (f"  {notes[i]}" if notes and notes[i] else "")
        parts.append(_text(LABEL_W + min(w, plot) + 6, y + 14, value, "start", 11, "#333"))
    return _svg(width, h, "".join(parts), label)


def layer_chart(layers: list[dict]) -> str:
    """One bar per quantized unit (network order): local SQNR in dB, a dot at the cumulative SQNR, flagged units red.
    Bars carry ``data-unit`` and ``data-sqnr`` (the report's value)."""
    finite = [as_float(x) for r in layers for x in (r["local_sqnr"], r["cumulative_sqnr"])
              if math.isfinite(as_float(x))]
    top = _nice_max(max(finite, default=1.0))
    plot = WIDTH - LABEL_W - 150
    h = 30 + ROW * len(layers) + 22
    parts = [_text(LABEL_W, 12, "bar: local SQNR (this unit alone)   dot: cumulative SQNR (all before it "
                   "quantized)   red: flagged", "start", 11, "#5b6572")]
    for k in range(6):
        x = LABEL_W + plot * k / 5
        parts.append(_tag("line", x1=_fmt(x), x2=_fmt(x), y1="22", y2=_fmt(h - 20), stroke="#e3e7eb"))
        parts.append(_text(x, h - 6, f"{top * k / 5:g}", "middle", 11, "#5b6572"))
    parts.append(_text(LABEL_W + plot + 14, h - 6, "dB", "start", 11, "#5b6572"))
    for i, r in enumerate(layers):
        y = 30 + ROW * i
        local, cumul = as_float(r["local_sqnr"]), as_float(r["cumulative_sqnr"])
        flagged = bool(r.get("flags"))
        exact = not math.isfinite(local)
        w = plot if exact else max(0.0, plot * max(local, 0.0) / top)
        tip = (f"{r['unit']} ({r['op']}): local {db_text(r['local_sqnr'])} dB, cumulative "
               f"{db_text(r['cumulative_sqnr'])} dB")
        parts.append(_text(LABEL_W - 8, y + 14, _short(r["unit"]), "end", 12, BAD if flagged else "#1d2430"))
        parts.append(_tag("rect", _tag("title", esc(tip)), x=_fmt(LABEL_W), y=_fmt(y + 3), width=_fmt(w),
                          height=_fmt(ROW - 6), fill=BAD if flagged else BAR, opacity="0.45" if exact else None,
                          class_="bar layer", data_unit=r["unit"], data_sqnr=str(r["local_sqnr"]),
                          data_flags=",".join(r.get("flags", []))))
        if math.isfinite(cumul):
            cx = LABEL_W + plot * min(max(cumul, 0.0), top) / top
            parts.append(_tag("circle", _tag("title", esc(f"cumulative {cumul:.1f} dB")), cx=_fmt(cx),
                              cy=_fmt(y + ROW / 2), r="4", fill=CUMUL, class_="cumul", data_unit=r["unit"],
                              data_sqnr=str(r["cumulative_sqnr"])))
        note = f"{db_text(r['local_sqnr'])} dB" + (f"  [{', '.join(r['flags'])}]" if flagged else "")
        parts.append(_text(LABEL_W + w + 8, y + 14, note, "start", 11, BAD if flagged else "#333"))
    return _svg(WIDTH, h, "".join(parts), "per-layer SQNR", class_="chart layers")


def histogram_chart(t: dict) -> str:
    """A calibration histogram (log counts) with the chosen range as red lines and 0 as a grey line."""
    hist = t["histogram"]
    counts, edges = hist["counts"], hist["edges"]
    rng = t.get("range")
    lo_x, hi_x = edges[0], edges[-1]
    if rng:
        lo_x, hi_x = min(lo_x, as_float(rng[0])), max(hi_x, as_float(rng[1]))
    span = (hi_x - lo_x) or 1.0
    left, right, top, bottom = 8, 8, 16, 22
    pw, ph = HIST_W - left - right, HIST_H - top - bottom
    peak = math.log10(1 + max(counts, default=1))

    def xs(v: float) -> float:
        return left + pw * (v - lo_x) / span

    parts = [_tag("rect", x=_fmt(left), y=_fmt(top), width=_fmt(pw), height=_fmt(ph), fill="#fafbfc",
                  stroke="#e3e7eb")]
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        hh = ph * math.log10(1 + c) / peak if peak > 0 else 0.0
        parts.append(_tag("rect", x=_fmt(xs(a)), y=_fmt(top + ph - hh), width=_fmt(max(xs(b) - xs(a) - 0.4, 0.6)),
                          height=_fmt(hh), fill=BAR, class_="hbin", data_count=c))
    if lo_x < 0 < hi_x:
        parts.append(_tag("line", x1=_fmt(xs(0)), x2=_fmt(xs(0)), y1=_fmt(top), y2=_fmt(top + ph), stroke="#999"))
    if rng:
        for k, v in enumerate((as_float(rng[0]), as_float(rng[1]))):
            x = xs(v)
            parts.append(_tag("line", _tag("title", esc(f"chosen {'low' if k == 0 else 'high'} {v:.4g}")),
                              x1=_fmt(x), x2=_fmt(x), y1=_fmt(top - 4), y2=_fmt(top + ph), stroke=BAD,
                              stroke_width="2", stroke_dasharray="4 2", class_="threshold", data_value=v))
        parts.append(_text(xs(as_float(rng[1])), top - 5, f"{as_float(rng[1]):.3g}",
                           "end" if xs(as_float(rng[1])) > HIST_W / 2 else "start", 11, BAD))
    parts.append(_text(left, HIST_H - 6, f"{lo_x:.3g}", "start", 11, "#5b6572"))
    parts.append(_text(left + pw, HIST_H - 6, f"{hi_x:.3g}", "end", 11, "#5b6572"))
    parts.append(_text(left + pw / 2, HIST_H - 6, "log count", "middle", 10, "#9aa3ad"))
    return _svg(HIST_W, HIST_H, "".join(parts), f"calibration histogram of {t['name']}", class_="chart histogram",
                data_tensor=t["name"])


# -- sections -----------------------------------------------------------------------------------------------------
def _card(key: str, value: str, small: str = "", **attrs: Any) -> str:
    v = esc(value) + (" " + _tag("small", esc(small)) if small else "")
    return _tag("div", _tag("div", esc(key), class_="k") + _tag("div", v, class_="v"), class_="card", **attrs)


def _summary(r: dict) -> str:
    m = r["model"]
    pc = r.get("precision_counts", {})
    cards = [_card("model", m["name"]), _card("nodes", f"{m.get('nodes_before') or '?'} -> {m['nodes_after']}"),
             _card("opt level", f"O{m['opt_level']}"), _card("ISA rung", m["isa"]),
             _card("precision", " / ".join(f"{pc.get(p, 0)}" for p in ("int8", "int16", "fp32")),
                   "int8 / int16 / fp32")]
    out = [_tag("div", "".join(cards), class_="cards")]
    cmp = r.get("comparison", {})
    if "fp32_latency_ms" in cmp:
        speed = [_card("fp32 latency", ms_text(cmp["fp32_latency_ms"]), "ms", data_value=cmp["fp32_latency_ms"],
                       id="fp32-latency"),
                 _card("int8 latency", ms_text(cmp["int8_latency_ms"]), "ms", data_value=cmp["int8_latency_ms"],
                       id="int8-latency"),
                 _card("speedup", f"{cmp['speedup']:.2f}x" if cmp.get("speedup") else "", "fp32 / int8")]
        out.append(_tag("h3", "fp32 vs int8 latency") + _tag("div", "".join(speed), class_="cards"))
        batch = " x ".join(str(d) for d in (cmp.get("batch") or [[]])[0])
        out.append(_tag("p", esc(f"median of one call on an input of shape ({batch})"), class_="note"))
        out.append(hbar_chart([("fp32", float(cmp["fp32_latency_ms"]), {"data_variant": "fp32"}),
                               ("int8", float(cmp["int8_latency_ms"]), {"data_variant": "int8"})],
                              "ms", "fp32 vs int8 latency", width=760, cls="bar latency", colors=["#8c99a6", BAR]))
    elif r.get("profile"):
        out.append(_tag("div", _card("latency (profile total)", ms_text(r["profile"]["total_ms"]), "ms"),
                        class_="cards"))
    if cmp.get("outputs"):
        rows = [(o["name"], f"{db_text(o['sqnr_db'])}", num_text(o["max_abs_error"]), pct_text(o["top1_agreement"]))
                for o in cmp["outputs"]]
        out.append(_tag("h3", f"int8 accuracy vs the fp32 model over {cmp.get('batches', '?')} batch(es)"))
        out.append(_table(("output", "SQNR dB", "max |error|", "top-1 agreement"), rows, {1, 2, 3},
                          class_="accuracy"))
    elif m.get("quantized") and "layers" not in r:
        out.append(_tag("p", "accuracy not measured: collect(model, data=batches) measures it", class_="note"))
    before, after = r["op_counts"]["before"], r["op_counts"]["after"]
    ops = sorted(set(before) | set(after))
    rows = [(op, before.get(op, ""), after.get(op, "")) for op in ops]
    rows.append(("total", sum(before.values()) if before else "", sum(after.values())))
    fus = sorted(r.get("fusions", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    cols = [_tag("div", _tag("h3", "op counts") + _table(("op", "before", "after"), rows, {1, 2}, class_="ops"))]
    if fus:
        cols.append(_tag("div", _tag("h3", "fusions / rewrites applied")
                         + _table(("rule", "times"), fus, {1}, class_="fusions")))
    if r.get("quantization"):
        cols.append(_tag("div", _tag("h3", "quantization plan") + _tag("pre", esc(r["quantization"]["summary"]))))
    out.append(_tag("div", "".join(cols), class_="cols"))
    return _section("summary", "Summary", "".join(out))


def _layers(r: dict) -> str:
    layers = r["layers"]
    outs = ", ".join(f"{t} {db_text(v)} dB" for t, v in r.get("output_sqnr", {}).items())
    sim = ", ".join(f"{t} {db_text(v)} dB" for t, v in r.get("simulated_output_sqnr", {}).items())
    intro = (f"{len(layers)} quantized units over {r.get('report_batches', '?')} batch(es). Output SQNR of the int8 "
             f"model: {outs} (simulated QDQ graph: {sim}).")
    ranked = layer_rows(r)
    rows = [(x["unit"], x["op"], x["precision"], db_text(x.get("output_sqnr")), db_text(x["local_sqnr"]),
             db_text(x["cumulative_sqnr"]), f"{as_float(x['local_cosine']):.5f}", num_text(x.get("input_scale")),
             "" if x.get("calib_range") is None else f"{num_text(x['calib_range'][0])} .. "
                                                     f"{num_text(x['calib_range'][1])}",
             "" if x.get("seen_range") is None else f"{num_text(x['seen_range'][0])} .. "
                                                    f"{num_text(x['seen_range'][1])}",
             ", ".join(x.get("flags", []))) for x in ranked]
    table = _table(("unit", "op", "prec", "alone@out dB", "local dB", "cumul dB", "cosine", "x scale",
                    "range chosen", "range seen", "flags"), rows, {3, 4, 5, 6, 7},
                   row_classes=["flagged" if x.get("flags") else None for x in ranked], class_="layers")
    body = (_tag("p", esc(intro), class_="note") + layer_chart(layers)
            + _tag("h3", "all units, most harmful first (alone@out: the model outputs' SQNR with only this unit "
                         "quantized)") + table)
    return _section("layers", "Per-layer error", body)


def _calibration(r: dict) -> str:
    c = r["calibration"]
    mode = c["mode"] + (f" {c['percentile']:g}" if c["mode"] == "percentile" else "")
    figs = []
    for t in c["tensors"]:
        meta = [f"seen {num_text(t['min'])} .. {num_text(t['max'])}"]
        if t.get("range"):
            meta.append(f"chosen {num_text(t['range'][0])} .. {num_text(t['range'][1])} ({t.get('chosen_by', '')})")
        if t.get("scale") is not None:
            meta.append(f"{t.get('dtype', '')} scale {t['scale']:.4g}, zero point {t.get('zero_point', '')}")
        if t.get("clipped_fraction") is not None:
            meta.append(f"clipped {100 * t['clipped_fraction']:.3f}% of {t['count']:,} values")
        if t.get("shares_params"):
            meta.append("also used by " + ", ".join(t["shares_params"]))
        chart = histogram_chart(t) if t.get("histogram") else _tag("p", "min/max observer: no histogram",
                                                                   class_="note")
        figs.append(_tag("div", _tag("div", esc(t["name"]), class_="t") + chart
                         + "".join(_tag("div", esc(s), class_="m") for s in meta), class_="hist"))
    intro = (f"{len(c['tensors'])} tensors calibrated over {c['batches']} batch(es), mode {mode}. Bars: log counts "
             "of the observed values; red dashed lines: the range chosen (the quantizer widens it to hold 0).")
    return _section("calibration", "Calibration", _tag("p", esc(intro), class_="note")
                    + _tag("div", "".join(figs), class_="hists"))


def _speed(r: dict) -> str:
    p = r["profile"]
    per_op = p["per_op"]
    small = max((float(x["ms"]) for x in per_op), default=0.0) < 1.0   # microseconds read better below 1 ms
    unit, k = ("us", 1e3) if small else ("ms", 1.0)
    rows = [(x["op"], k * float(x["ms"]), {"data_op": x["op"], "data_ms": x["ms"]}) for x in per_op]
    notes = [f"{unit}, {pct_text(x['share'])}, {x['nodes']} node(s)" for x in per_op]
    batch = " x ".join(str(d) for d in (p.get("batch") or [[]])[0])
    intro = f"total {ms_text(p['total_ms'])} ms per call on an input of shape ({batch}), summed over the plan's steps"
    table = _table(("op", unit, "share", "nodes", "kernels"),
                   [(x["op"], f"{k * float(x['ms']):.{1 if small else 3}f}", pct_text(x["share"]), x["nodes"],
                     ", ".join(x["kernels"])) for x in per_op], {1, 2, 3}, class_="speed")
    return _section("speed", "Speed per op type", _tag("p", esc(intro), class_="note")
                    + hbar_chart(rows, unit, "time per op type", cls="bar op", notes=notes) + table)


def _nodes(r: dict) -> str:
    rows, classes = [], []
    for n in r["nodes"]:
        outs = ", ".join(f"{o['dtype']}({', '.join('?' if d is None else str(d) for d in o['shape'])})"
                         if o["shape"] is not None else f"{o['dtype']}(?)" for o in n["outputs"])
        us = n.get("ms")
        rows.append((esc(n["name"]), esc(n["op"]), _badge(n["precision"]), esc(n["fused"]), esc(n["kernel"]),
                     esc(n["rung"] or ""), esc("" if us is None else f"{1e3 * us:.1f}"), esc(outs),
                     esc(n.get("reason", ""))))
        classes.append(f"p-{n['precision']}")
    table = _table(("node", "op", "precision", "fuses", "kernel", "ISA rung", "us", "output", "note"), rows, {6},
                   row_classes=classes, raw=set(range(9)), nowrap={4, 5, 7}, class_="nodes")
    intro = (f"{len(r['nodes'])} nodes in execution order; us: microseconds in the profiling run" if r.get("profile")
             else f"{len(r['nodes'])} nodes in execution order")
    return _section("nodes", "Nodes", _tag("p", esc(intro), class_="note") + table)


def _section(id_: str, title: str, body: str) -> str:
    return _tag("section", _tag("h2", esc(title)) + body, id=id_)


#: (section id, title, whether the report has its data)
SECTIONS = (("summary", "Summary", lambda r: True), ("layers", "Per-layer error", lambda r: bool(r.get("layers"))),
            ("calibration", "Calibration", lambda r: bool(r.get("calibration", {}).get("tensors"))),
            ("speed", "Speed per op type", lambda r: bool(r.get("profile"))), ("nodes", "Nodes", lambda r: True))
_RENDER = {"summary": _summary, "layers": _layers, "calibration": _calibration, "speed": _speed, "nodes": _nodes}


def render_html(report: dict) -> str:
    """The page for a ``report_data.collect`` dict (see the module docstring)."""
    m = report["model"]
    present = [(i, t) for i, t, has in SECTIONS if has(report)]
    nav = _tag("nav", "".join(_tag("a", esc(t), href=f"#{i}") for i, t in present))
    kind = "int8" if m.get("quantized") else "fp32"
    sub = f"{kind} model, opt_level {m['opt_level']}, ISA rung {m['isa']} (host: {', '.join(m['available_isas'])})"
    body = (_tag("h1", esc(f"quantgraph report: {m['name']}")) + _tag("p", esc(sub), class_="sub") + nav
            + "".join(_RENDER[i](report) for i, _ in present)
            + _tag("footer", esc(f"{report.get('format', '')} v{report.get('version', '')}; inputs: "
                                 + ", ".join(f"{x['name']} {x['dtype']}" for x in report.get("inputs", [])))))
    head = ('<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            + _tag("title", esc(f"quantgraph report: {m['name']}")) + _tag("style", CSS))
    return "<!DOCTYPE html>\n" + _tag("html", _tag("head", head) + _tag("body", _tag("main", body)), lang="en") + "\n"


def write_html(report: dict, path: str | os.PathLike) -> str:
    """Write :func:`render_html` of ``report`` to ``path`` atomically (a temporary file beside it, then a rename);
    returns the path."""
    from quantgraph.fileio import atomic_write

    return atomic_write(path, render_html(report).encode("utf-8"))


__all__ = ["render_html", "write_html", "esc", "layer_chart", "histogram_chart", "hbar_chart", "SECTIONS"]
