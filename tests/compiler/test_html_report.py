"""Reports (compiler/report_data.py, compiler/html_report.py) of the bundled digits CNN in fp32 and int8: the JSON
data, the text table, the HTML page (parsed, self-contained, numbers matching the data) and, when Chromium is
installed, the page rendered headless."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest

import quantgraph
from quantgraph import models
from quantgraph.compiler import html_report
from quantgraph.compiler.report_data import (HIST_BINS, as_float, clipped_fraction, collect, downsample,
                                             format_text)
from quantgraph.compiler.quantize.observers import HistogramObserver

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on PATH "
                                                             "(apt-get install -y chromium)")
VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "col", "area", "base", "source", "track", "embed"}
SECTIONS = ("summary", "layers", "calibration", "speed", "nodes")


@pytest.fixture(scope="module")
def reports() -> dict:
    images, _, calib = models.load_digits_sample()
    path = models.path(models.DEFAULT_MODEL)
    fp32 = quantgraph.compile(path)
    int8 = quantgraph.compile(path, quantize="int8", calibration=[calib[:64], calib[64:128]])
    feeds = {"image": images[:1]}
    return {"int8": collect(int8, data=[images[:32]], feeds=feeds, repeats=2),
            "int8_bare": collect(int8), "fp32": collect(fp32, feeds=images[:1], repeats=2), "model": int8}


class Page(HTMLParser):
    """Checks that tags nest and close, and collects every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split())]


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    assert p.stack == [], f"unclosed tags {p.stack}"
    return p


def _plain_types(x) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            assert isinstance(k, str)
            _plain_types(v)
    elif isinstance(x, list):
        for v in x:
            _plain_types(v)
    else:
        assert x is None or type(x) in (bool, int, float, str), f"{type(x).__name__} in the report"


# -- the data ---------------------------------------------------------------------------------------------------
def test_report_is_plain_json(reports: dict) -> None:
    for key in ("int8", "int8_bare", "fp32"):
        _plain_types(reports[key])
        assert json.loads(json.dumps(reports[key], allow_nan=False)) == reports[key]


def test_sections_follow_what_was_given(reports: dict) -> None:
    full, bare, fp32 = reports["int8"], reports["int8_bare"], reports["fp32"]
    for key in ("quantization", "calibration", "layers", "output_sqnr", "profile", "comparison"):
        assert key in full, key
    assert "calibration" in bare and not {"layers", "profile", "comparison"} & set(bare)
    assert not {"quantization", "calibration", "layers", "comparison"} & set(fp32) and "profile" in fp32
    m = reports["model"]
    assert full["op_counts"] == {"before": m.optimized_from, "after": m.graph.op_counts()}
    assert full["precision_counts"] == {"int8": len(m.graph), "int16": 0, "fp32": 0}
    assert fp32["precision_counts"]["fp32"] == fp32["model"]["nodes_after"]
    assert full["fusions"]["qdq_conv_to_qconv"] == 3 and fp32["fusions"]["conv_bn_to_conv"] == 2


def test_nodes_have_kernel_and_rung(reports: dict) -> None:
    m, nodes = reports["model"], reports["int8"]["nodes"]
    assert [n["name"] for n in nodes] == [ln.node.name for ln in m.lowered]
    for n, ln in zip(nodes, m.lowered):
        assert n["kernel"] == ln.kernel.name and n["precision"] == "int8"
        assert n["rung"] == (None if ln.kernel.view else reports["int8"]["model"]["isa"])
        assert n["ms"] is not None and n["ms"] >= 0
    qconv = [n for n in nodes if n["op"] == "QConv"]
    assert len(qconv) == 3 and all("+ Relu" in n["fused"] for n in qconv)


def test_layers_and_comparison(reports: dict) -> None:
    r = reports["int8"]
    units = [x["unit"] for x in r["layers"]]
    assert units == ["conv_bn_to_conv/Conv", "conv_bn_to_conv/Conv_1", "head_conv/Conv", "gap/GlobalAveragePool",
                     "fc/Gemm"]
    assert sorted(x["harm_rank"] for x in r["layers"]) == list(range(1, len(units) + 1))
    assert sum("worst" in x["flags"] for x in r["layers"]) >= 1
    assert all(20 < as_float(x["local_sqnr"]) < 80 for x in r["layers"])
    cmp = r["comparison"]
    assert cmp["fp32_latency_ms"] > 0 and cmp["int8_latency_ms"] > 0 and cmp["batches"] == 1
    (out,) = cmp["outputs"]
    assert out["name"] == "logits" and 25 < out["sqnr_db"] < 70 and out["top1_agreement"] >= 0.9
    assert 0 < out["max_abs_error"] < 2


def test_calibration_histograms(reports: dict) -> None:
    cal = reports["int8"]["calibration"]
    stats = reports["model"].quant_source.stats
    assert [t["name"] for t in cal["tensors"]] == list(stats.observers) and cal["batches"] == 2
    for t in cal["tensors"]:
        h = t["histogram"]
        assert 1 <= len(h["counts"]) <= HIST_BINS and len(h["edges"]) == len(h["counts"]) + 1
        assert sum(h["counts"]) == t["count"] == stats.observers[t["name"]].count
        lo, hi = t["range"]
        assert h["edges"][0] <= lo <= hi <= h["edges"][-1] and list(stats.range(t["name"])) == [lo, hi]
        assert t["dtype"] == "uint8" and t["scale"] > 0 and 0 <= t["clipped_fraction"] < 0.05
        assert t["chosen_by"].startswith("auto: ")


def test_downsample_keeps_counts() -> None:
    obs = HistogramObserver()
    obs.observe(np.random.default_rng(0).normal(size=10_000).astype(np.float32))
    h = downsample(obs.counts, obs.offset, obs.exp, 50)
    assert len(h["counts"]) <= 50 and sum(h["counts"]) == 10_000
    assert h["edges"][0] <= obs.min and h["edges"][-1] >= obs.max
    assert np.allclose(np.diff(h["edges"]), h["bin_width"])
    uniform = HistogramObserver()
    uniform.observe(np.linspace(0.0, 1.0, 100_001, dtype=np.float32))
    clip = clipped_fraction(uniform.counts, uniform.offset, uniform.exp, 0.0, 0.5, uniform.min, uniform.max)
    assert abs(clip - 0.5) < 1e-3
    assert clipped_fraction(uniform.counts, uniform.offset, uniform.exp, 0.0, 1.0, uniform.min, uniform.max) == 0.0


def test_format_text(reports: dict) -> None:
    text = format_text(reports["int8"])
    for x in reports["int8"]["layers"]:
        assert x["unit"] in text
    lines = text.splitlines()
    worst = next(x for x in reports["int8"]["layers"] if x["harm_rank"] == 1)
    table = lines[lines.index(next(s for s in lines if s.strip().startswith("unit"))) + 2]
    assert table.split()[0] == worst["unit"] and "worst" in table
    assert "latency: fp32" in text and "SQNR" in text
    assert "no quantized layers" in format_text(reports["fp32"])
    assert "not measured" in format_text(reports["int8_bare"])


# -- the page ---------------------------------------------------------------------------------------------------
def test_page_parses_and_is_self_contained(reports: dict) -> None:
    for key, present in (("int8", SECTIONS), ("fp32", ("summary", "speed", "nodes")),
                         ("int8_bare", ("summary", "calibration", "nodes"))):
        page = html_report.render_html(reports[key])
        assert page.startswith("<!DOCTYPE html>")
        p = parse(page)
        ids = [a["id"] for a in p.find("section")]
        assert ids == [s for s in SECTIONS if s in present], key
        for tag, a in p.tags:
            for attr in ("src", "href"):
                v = a.get(attr)
                assert v is None or v.startswith("#"), f"<{tag} {attr}={v!r}>"
        assert not p.find("script") and not p.find("link") and "http://" not in page and "https://" not in page


def test_layer_chart_has_one_bar_per_unit(reports: dict) -> None:
    r = reports["int8"]
    p = parse(html_report.render_html(r))
    bars = p.find("rect", "layer")
    assert [b["data-unit"] for b in bars] == [x["unit"] for x in r["layers"]]
    for b, x in zip(bars, r["layers"]):
        assert b["data-sqnr"] == str(x["local_sqnr"])
        assert (b["fill"] == html_report.BAD) == bool(x["flags"])
    dots = p.find("circle", "cumul")
    assert [d["data-sqnr"] for d in dots] == [str(x["cumulative_sqnr"]) for x in r["layers"]]
    rows = [a for a in p.find("table", "layers")]
    assert len(rows) == 1


def test_numbers_in_the_page_match_the_report(reports: dict) -> None:
    r = reports["int8"]
    page = html_report.render_html(r)
    p = parse(page)
    cmp = r["comparison"]
    cards = {a.get("id"): a for a in p.find("div", "card")}
    assert float(cards["fp32-latency"]["data-value"]) == cmp["fp32_latency_ms"]
    assert float(cards["int8-latency"]["data-value"]) == cmp["int8_latency_ms"]
    text = " ".join(p.text)
    assert f"{cmp['fp32_latency_ms']:.3f}" in text and f"{cmp['int8_latency_ms']:.3f}" in text
    assert f"{cmp['outputs'][0]['sqnr_db']:.1f}" in text
    for x in r["layers"]:
        assert f"{as_float(x['local_sqnr']):.1f} dB" in text
    hists = p.find("svg", "histogram")
    assert [h["data-tensor"] for h in hists] == [t["name"] for t in r["calibration"]["tensors"]]
    lines = [float(a["data-value"]) for a in p.find("line", "threshold")]
    assert lines == [v for t in r["calibration"]["tensors"] for v in t["range"]]
    bins = p.find("rect", "hbin")
    assert sum(int(b["data-count"]) for b in bins) == sum(t["count"] for t in r["calibration"]["tensors"])
    ops = p.find("rect", "op")
    assert [(b["data-op"], float(b["data-ms"])) for b in ops] == [(x["op"], x["ms"]) for x in r["profile"]["per_op"]]
    node_rows = [a for a in p.find("tr") if (a.get("class") or "").startswith("p-")]
    assert len(node_rows) == len(r["nodes"]) and {a["class"] for a in node_rows} == {"p-int8"}


def test_text_is_escaped(reports: dict) -> None:
    r = json.loads(json.dumps(reports["int8"]))
    r["model"]["name"] = "<script>alert('x')</script>"
    r["layers"][0]["unit"] = 'a<b>&"c"'
    r["nodes"][0]["name"] = "</td></tr><tr><td>"
    r["layers"][1]["local_sqnr"] = "inf"  # an exact unit
    page = html_report.render_html(r)
    p = parse(page)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'a&lt;b&gt;&amp;&quot;c&quot;' in page
    assert any(b.get("data-unit") == 'a<b>&"c"' for b in p.find("rect", "layer"))
    exact = [b for b in p.find("rect", "layer") if b["data-sqnr"] == "inf"]
    assert len(exact) == 1 and exact[0]["opacity"] == "0.45"


def test_write_html(reports: dict, tmp_path) -> None:
    out = html_report.write_html(reports["int8"], tmp_path / "r.html")
    assert out == str(tmp_path / "r.html")
    assert open(out, encoding="utf-8").read() == html_report.render_html(reports["int8"])
    assert os.listdir(tmp_path) == ["r.html"]


# -- headless Chromium ------------------------------------------------------------------------------------------
def _chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           "--no-first-run", "--disable-dev-shm-usage", *args], capture_output=True, timeout=timeout)


def _png_rows(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, filtered rows, bytes per pixel) of an 8-bit RGB/RGBA PNG, with zlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat = 8, b""
    while i < len(data):
        n, kind = struct.unpack(">I", data[i:i + 4])[0], data[i + 4:i + 8]
        chunk = data[i + 8:i + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        i += 12 + n
    assert depth == 8 and color in (2, 6)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), w * bpp + 1
    return w, h, [raw[k * stride:(k + 1) * stride] for k in range(h)], bpp


@needs_chromium
def test_chromium_screenshot(reports: dict, tmp_path) -> None:
    page = html_report.write_html(reports["int8"], tmp_path / "report.html")
    shot = tmp_path / "report.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1200,2000", page])
    assert res.returncode == 0 and shot.exists(), res.stderr.decode()[-2000:]
    data = shot.read_bytes()
    assert len(data) > 30_000
    w, h, rows, bpp = _png_rows(data)
    assert (w, h) == (1200, 2000)
    # a row holds something when its filtered bytes past the first two pixels are not all one value (any PNG
    # filter turns a one-colour row into one repeated byte there); text and charts fill many rows
    busy = sum(len(set(r[1 + 2 * bpp:])) > 1 for r in rows)
    assert busy > 0.2 * h, f"only {busy} of {h} rows hold anything"


@needs_chromium
def test_chromium_dump_dom(reports: dict, tmp_path) -> None:
    page = html_report.write_html(reports["int8"], tmp_path / "report.html")
    res = _chromium(["--dump-dom", page])
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    dom = res.stdout.decode()
    for s in SECTIONS:
        assert re.search(rf'<section id="{s}"', dom), s
    assert dom.count('class="bar layer"') == len(reports["int8"]["layers"])
    assert not math.isnan(float(reports["int8"]["comparison"]["int8_latency_ms"]))
