"""Graph pictures (compiler/visualize.py): DOT of the bundled digits CNN in fp32 and int8, escaping, size, files."""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import quantgraph
from quantgraph import models
from quantgraph.compiler import visualize
from quantgraph.compiler.visualize import COLORS, graph_to_dot, model_to_dot, precision_of, write_picture
from quantgraph.ir.builder import GraphBuilder

DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz 'dot' is not installed (apt-get install graphviz)")


@pytest.fixture(scope="module")
def compiled() -> dict:
    _, _, calib = models.load_digits_sample()
    path = models.path(models.DEFAULT_MODEL)
    return {"fp32": quantgraph.compile(path),
            "int8": quantgraph.compile(path, quantize="int8", calibration=[calib[:64]])}


def check_dot(text: str) -> None:
    """A DOT lexer's view: braces and brackets balance outside strings, every quoted string and HTML label closes,
    and the text is one ``digraph { ... }``."""
    assert text.lstrip().startswith("digraph ") and text.rstrip().endswith("}")
    depth = {"{": 0, "[": 0}
    close = {"}": "{", "]": "["}
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                assert text[i] != "\n", f"raw newline inside a quoted string near {text[max(0, i - 40):i]!r}"
                i += 2 if text[i] == "\\" else 1
            assert i < n, "unterminated quoted string"
        elif c == "<":  # an HTML label: nested <...> to the matching >
            level = 0
            while i < n:
                level += {"<": 1, ">": -1}.get(text[i], 0)
                if level == 0:
                    break
                i += 1
            assert level == 0, "unterminated HTML label"
        elif c in depth:
            depth[c] += 1
        elif c in close:
            depth[close[c]] -= 1
            assert depth[close[c]] >= 0, f"unbalanced {c!r} at offset {i}"
        i += 1
    assert depth == {"{": 0, "[": 0}, f"unbalanced braces/brackets: {depth}"


def run_dot(text: str) -> str:
    res = subprocess.run([DOT, "-Tsvg"], input=text.encode(), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert b"<svg" in res.stdout
    return res.stdout.decode()


def node_lines(dot: str, op: str) -> list[str]:
    """The node statements whose label names op ``op`` (the second label row)."""
    return [s for s in dot.splitlines() if re.search(rf"</b><br/>{re.escape(op)}(<br/>|>)", s) and " -> " not in s]


# -- the digits CNN ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_dot_of_digits_parses(compiled: dict, kind: str) -> None:
    m = compiled[kind]
    for text in (graph_to_dot(m.graph, "after"), graph_to_dot(m.graph, cluster="after"), model_to_dot(m)):
        check_dot(text)
        if DOT:
            run_dot(text)
    g = graph_to_dot(m.graph)
    assert g.count(" -> ") >= len(m.graph) and "label=\"digits_cnn\"" in g
    for n in m.graph.topo():  # every node is drawn (names are in the labels)
        assert visualize.html_label_text(n.name) in g
    # one statement per node, graph input and output, and the legend: constants are not drawn
    stmts = [s for s in re.findall(r"^\s*(\w+) \[", g, re.M) if s not in ("graph", "node", "edge")]
    assert len(stmts) == len(m.graph) + len(m.graph.inputs) + len(m.graph.outputs) + 1


def test_int8_nodes_are_coloured(compiled: dict) -> None:
    q, f = graph_to_dot(compiled["int8"].graph), graph_to_dot(compiled["fp32"].graph)
    qconv = node_lines(q, "QConv")
    assert len(qconv) == 3 and all(f'fillcolor="{COLORS["int8"]}"' in s for s in qconv)
    for op in ("QuantizeLinear", "QMatMul", "QAveragePool", "Flatten"):  # Flatten moves uint8: int8 too
        assert all(f'fillcolor="{COLORS["int8"]}"' in s for s in node_lines(q, op)), op
    fconv = node_lines(f, "FusedConv")
    assert len(fconv) == 3 and all(f'fillcolor="{COLORS["fp32"]}"' in s for s in fconv)
    assert f'fillcolor="{COLORS["int8"]}"' not in "\n".join(s for s in f.splitlines() if "legend" not in s)
    m = compiled["int8"]
    assert {precision_of(m.graph, n) for n in m.graph} == {"int8"}
    before = m.export_graph  # the QDQ graph: Q/DQ int8, the float ops between them fp32
    kinds = {n.op: precision_of(before, n) for n in before}
    assert kinds["QuantizeLinear"] == kinds["DequantizeLinear"] == "int8" and kinds["Conv"] == "fp32"


def test_fused_labels_say_what_they_hold(compiled: dict) -> None:
    f = node_lines(graph_to_dot(compiled["fp32"].graph), "FusedConv")
    assert all("+ bias" in s and "+ Relu" in s and 'penwidth="2.5"' in s for s in f)
    assert sum("+ residual add" in s for s in f) == 1
    q = node_lines(graph_to_dot(compiled["int8"].graph), "QConv")
    assert all("+ Relu" in s and "-&gt; uint8 (requantize)" in s for s in q)
    assert sum("+ residual add" in s for s in q) == 1
    mm = node_lines(graph_to_dot(compiled["int8"].graph), "QMatMul")
    assert len(mm) == 1 and "-&gt; float32" in mm[0] and "B int8(32, 10)" in mm[0]


def test_model_to_dot_has_before_and_after(compiled: dict) -> None:
    m = compiled["int8"]
    text = model_to_dot(m)
    assert 'subgraph "cluster_before"' in text and 'subgraph "cluster_after"' in text
    assert "before: QDQ graph" in text and f"after: compiled graph, {len(m.graph)} nodes" in text
    ids = re.findall(r"^\s*(c\w+?_n\d+) \[", text, re.M)
    assert len(ids) == len(set(ids)) == len(m.graph) + len(m.export_graph)

    class Bare:  # a CompiledModel built by hand: no export graph
        graph, export_graph, quantization, opt_level = m.graph, None, None, 3

    only = model_to_dot(Bare())
    check_dot(only)
    assert "cluster_before" not in only and "cluster_after" in only


# -- escaping, precision, size ----------------------------------------------------------------------------------
def test_names_are_escaped() -> None:
    gb = GraphBuilder('g "quoted" \\ name')
    x = gb.input('x"<in>&\\', (1, 4), "float32")
    y = gb.op("Relu", x, name='relu "1"\n<b>bold</b> & \\l')
    z = gb.op("Sigmoid", y, name="a{b}[c];d->e")
    graph = gb.output(z).build()
    text = graph_to_dot(graph)
    check_dot(text)
    labels = re.findall(r"label=(<.*?>)(?:, \w+=|\];)", text)
    assert len(labels) >= 4 and not any("<b>bold</b>" in lab for lab in labels)
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; \\l" in text and "a{b}[c];d-&gt;e" in text
    assert 'label="g \\"quoted\\" \\\\ name"' in text
    if DOT:
        svg = run_dot(text)
        assert "&lt;b&gt;bold&lt;/b&gt;" in svg or "&amp;lt;b&amp;gt;" in svg
    assert visualize.dot_quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_int16_has_its_own_colour() -> None:
    gb = GraphBuilder("w8a16")
    x = gb.input("x", ("N", 8), "float32")
    s = gb.const(np.float32(0.01), "s")
    zp = gb.const(np.int16(0), "zp")
    q = gb.op("QuantizeLinear", x, s, zp, name="q16")
    d = gb.op("DequantizeLinear", q, s, zp, name="dq16")
    graph = gb.output(gb.op("Relu", d, name="relu")).build()
    assert [precision_of(graph, n) for n in graph] == ["int16", "int16", "fp32"]
    text = graph_to_dot(graph)
    assert all(f'fillcolor="{COLORS["int16"]}"' in s for s in node_lines(text, "QuantizeLinear"))


def test_large_graph_is_valid_dot() -> None:
    """A ResNet-sized graph (300 nodes, skip connections): valid DOT, and Graphviz lays it out."""
    gb = GraphBuilder("big")
    x = gb.input("x", ("N", 16), "float32")
    h = x
    for i in range(150):
        y = gb.op("Relu", h, name=f"block{i}/relu")
        h = gb.op("Add", y, h, name=f"block{i}/add")
    graph = gb.output(h).build()
    text = graph_to_dot(graph, title="big")
    check_dot(text)
    assert len(node_lines(text, "Add")) == 150 and text.count(" -> ") == 150 * 3 + 1
    if DOT:
        run_dot(text)


# -- files ------------------------------------------------------------------------------------------------------
@needs_dot
def test_write_picture_svg(compiled: dict, tmp_path) -> None:
    out = write_picture(model_to_dot(compiled["int8"]), tmp_path / "model.svg")
    assert out == str(tmp_path / "model.svg")
    svg = open(out).read()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "QConv" in svg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.svg"]


def test_write_picture_falls_back_to_dot(compiled: dict, tmp_path, monkeypatch, caplog) -> None:
    text = graph_to_dot(compiled["fp32"].graph)
    monkeypatch.setattr(visualize, "render", lambda dot, fmt="svg": (None, "no Graphviz here (test)"))
    with caplog.at_level(logging.WARNING, logger="quantgraph.compiler.visualize"):
        out = write_picture(text, str(tmp_path / "g.svg"))
    assert out == str(tmp_path / "g.dot") and open(out).read() == text
    assert "no Graphviz here (test)" in caplog.text and "g.dot" in caplog.text
    assert write_picture(text, str(tmp_path / "plain.dot")) == str(tmp_path / "plain.dot")


def test_render_reports_why(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # as if the package were not installed
    monkeypatch.setattr(visualize.shutil, "which", lambda name: None)
    data, why = visualize.render("digraph { a }")
    assert data is None and "graphviz Python package is not installed" in why and "no 'dot' program" in why
    failing = shutil.which("false")
    if failing:  # a 'dot' that fails: its exit code is the reason
        monkeypatch.setattr(visualize.shutil, "which", lambda name: failing)
        data, why = visualize.render("digraph { a }")
        assert data is None and "exited with code 1" in why
