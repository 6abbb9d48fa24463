"""Pictures of IR graphs: Graphviz DOT text, one box per node, coloured by the precision it runs in.

    dot = graph_to_dot(model.graph, title="after")      # one graph
    dot = model_to_dot(model)                            # before (export graph) and after (the graph that runs)
    write_picture(dot, "model.svg")                      # SVG through Graphviz when present, else model.dot

A box shows the node's name, its op, what a fused op holds (bias, residual add, activation, requantization, ...:
:func:`fused_parts`) and its output's dtype and shape. Constants are not drawn: a node's weights appear in its label
as their shape. Boxes are filled by :func:`precision_of`: blue for int8 (ops on integers, or reading or writing
8-bit tensors), orange for int16, white for fp32; fused ops have a thick border. Graph inputs and outputs are ovals.

Node ids are synthetic (``n0``, ``n1``, ... with a cluster prefix), so a name never has to be a DOT identifier;
every name shown goes through :func:`html_label_text` (labels are Graphviz HTML labels) or :func:`dot_quote`.
"""
from __future__ import annotations

import html
import logging
import os
import shutil
import subprocess
from typing import Any

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.activation import ACTIVATIONS
from quantgraph.ir.ops.registry import get_op
from quantgraph.ir.shapes import format_shape

log = logging.getLogger(__name__)

#: ops that compute on integers whatever their tensors' dtypes say (imported QOperator ops and our own int8 ops)
INTEGER_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                         "QLinearMatMul", "ConvInteger", "MatMulInteger", "QConv", "QMatMul", "QAdd",
                         "QAveragePool", "QConcat", "QuantizeClip"})
INT8_DTYPES = frozenset({"uint8", "int8"})
INT16_DTYPES = frozenset({"int16", "uint16"})
#: compiler-made ops whose label lists what they hold
FUSED_OPS = frozenset({"FusedConv", "FusedMatMul", "FusedAttention", "FusedPool", "QConv", "QMatMul", "QAdd",
                       "QAveragePool", "QConcat", "QuantizeClip"})

#: fill colour per precision (fp32 is plain)
COLORS = {"int8": "#bcdcff", "int16": "#ffd49a", "fp32": "#ffffff"}
BORDER = {"int8": "#1f5fa8", "int16": "#b36b00", "fp32": "#555555"}
#: labels longer than this are shortened in the middle (the tooltip keeps the full name)
MAX_LABEL = 56
#: seconds ``dot`` may take to lay a graph out
DOT_TIMEOUT = 120.0
#: formats write_picture renders through Graphviz (by the path's suffix)
RENDERED = ("svg", "png", "pdf")

# the epilogue input slots of the quantized ops (ir/ops/fused_quant.py): bias and residual
_Q_BIAS, _Q_RESIDUAL = 8, 9


def precision_of(graph: Graph, n: Node) -> str:
    """"int16", "int8" or "fp32": what node ``n`` computes in, from its op and its activation tensors' dtypes.

    int16 when an activation input or output is 16-bit (W8A16 groups, QuantizeClip); int8 for ops on integers
    (:data:`INTEGER_OPS`) and for nodes that read or write 8-bit activations (int8 data movement: MaxPool, Flatten,
    Transpose on uint8); everything else fp32. Constants (weights, scales) do not count.
    """
    dtypes = set()
    for t in list(n.inputs) + list(n.outputs):
        info = graph.tensors.get(t) if t else None
        if info is not None and info.const is None:
            dtypes.add(info.dtype)
    if dtypes & INT16_DTYPES:
        return "int16"
    if n.op in INTEGER_OPS or dtypes & INT8_DTYPES:
        return "int8"
    return "fp32"


def _activation(attrs: dict[str, Any]) -> str | None:
    """The activation an epilogue applies, named after the op it replaces (``Relu``, ``Clip(0, 6)``), or None."""
    name = attrs.get("activation", "none")
    if not name or name == "none":
        return None
    row = ACTIVATIONS.get(name)
    shown = row.op if row is not None and row.op else name
    if name == "clip":
        return f"{shown}({attrs.get('alpha', 0.0):g}, {attrs.get('beta', 0.0):g})"
    if name == "leaky_relu":
        return f"{shown}({attrs.get('alpha', 0.0):g})"
    if name == "hardsigmoid":
        return f"{shown}({attrs.get('alpha', 0.0):g}, {attrs.get('beta', 0.0):g})"
    return shown


def _has(n: Node, slot: int) -> bool:
    return len(n.inputs) > slot and bool(n.inputs[slot])


def fused_parts(n: Node) -> list[str]:
    """What a compiler-made node holds, in order: e.g. ``["+ bias", "+ residual add", "+ Relu", "-> uint8"]`` for a
    QConv with bias, residual and ReLU that requantizes to uint8; ``[]`` for an op that fuses nothing. Epilogue
    parts start with "+", the output conversion with "->"; :func:`fused_text` joins them."""
    a, parts = n.attrs, []
    if n.op in ("FusedConv", "FusedMatMul"):
        if _has(n, 2):
            parts.append("+ bias")
        if _has(n, 3):
            parts.append("+ residual add")
    elif n.op in ("QConv", "QMatMul"):
        if _has(n, _Q_BIAS):
            parts.append("+ bias")
        if _has(n, _Q_RESIDUAL):
            parts.append("+ residual add")
    elif n.op == "FusedAttention":
        parts.append(f"{a.get('num_heads')} heads, scale {float(a.get('scale', 0.0)):.4g}")
        if _has(n, 3):
            parts.append("+ mask")
    elif n.op in ("FusedPool", "QAveragePool"):
        kernel = a.get("kernel_shape") or ()
        parts.append(str(a.get("kind", "")) + (f" {'x'.join(map(str, kernel))}" if kernel else ""))
    elif n.op == "QConcat":
        parts.append(f"axis {a.get('axis')}, {len(n.inputs)} inputs requantized")
    elif n.op == "QuantizeClip":
        parts.append(f"clip [{a.get('qmin')}, {a.get('qmax')}]")
    act = _activation(a) if n.op in ("FusedConv", "FusedMatMul", "QConv", "QMatMul", "QAdd") else None
    if act:
        parts.append(f"+ {act}")
    out = a.get("out_dtype")
    if n.op in ("QConv", "QMatMul") and out:
        parts.append(f"-> {out}" + (" (requantize)" if out in INT8_DTYPES else ""))
    if a.get("layout") == "NHWC":
        parts.append("[NHWC]")
    return parts


def fused_text(n: Node) -> str:
    """:func:`fused_parts` as one line (``"+ bias + Relu -> uint8 (requantize) [NHWC]"``); "" when none."""
    return " ".join(fused_parts(n))


def is_fused(n: Node) -> bool:
    """Whether ``n`` is a compiler-made op that holds more than its core (an epilogue, a kind, ...)."""
    return n.op in FUSED_OPS and bool(fused_parts(n))


# -- DOT text ---------------------------------------------------------------------------------------------------
def dot_quote(s: str) -> str:
    """``s`` as a DOT double-quoted string: backslashes and quotes escaped, line breaks as ``\\n``."""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + s.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def _shorten(s: str, limit: int = MAX_LABEL) -> str:
    if len(s) <= limit:
        return s
    keep = (limit - 3) // 2
    return s[:keep] + "..." + s[-(limit - 3 - keep):]


def html_label_text(s: str, limit: int = MAX_LABEL) -> str:
    """Text for a Graphviz HTML label: shortened, XML-escaped, with no line breaks or control characters."""
    s = "".join(c if c.isprintable() else " " for c in str(s))
    return html.escape(_shorten(s, limit), quote=True)


def _type_text(graph: Graph, t: str) -> str:
    info = graph.tensors.get(t)
    if info is None:
        return ""
    return f"{info.dtype}{format_shape(info.shape)}"


def _weights_text(graph: Graph, n: Node) -> str:
    """The weight constants of ``n`` by port name (the op's weight slots, else its constant inputs of rank >= 2)."""
    try:
        d = get_op(n.op)
        slots, ports = d.weights, [p.name for p in d.inputs]
    except Exception:  # an op unknown to this registry (a graph loaded from elsewhere): no port names
        slots, ports = (), []
    consts = []
    for i, t in enumerate(n.inputs):
        info = graph.tensors.get(t) if t else None
        if info is None or info.const is None:
            continue
        if i in slots or (not slots and info.const.ndim >= 2):
            port = ports[i] if i < len(ports) else (ports[-1] if ports else f"in{i}")
            consts.append(f"{port} {info.dtype}{format_shape(info.shape)}")
    return ", ".join(consts)


def _node_label(graph: Graph, n: Node) -> str:
    rows = [f"<b>{html_label_text(n.name)}</b>", html_label_text(n.op)]
    parts = fused_parts(n)
    if parts:
        rows.append(f'<font point-size="9">{html_label_text(" ".join(parts), 2 * MAX_LABEL)}</font>')
    w = _weights_text(graph, n)
    if w:
        rows.append(f'<font point-size="8" color="#444444">{html_label_text(w, 2 * MAX_LABEL)}</font>')
    outs = [_type_text(graph, t) for t in n.outputs if t]
    if outs:
        rows.append(f'<font point-size="8">{html_label_text(", ".join(outs), 2 * MAX_LABEL)}</font>')
    return "<" + "<br/>".join(rows) + ">"


def _attrs(**kv: Any) -> str:
    """DOT attribute list; values starting with ``<`` are HTML labels, everything else is quoted."""
    items = []
    for k, v in kv.items():
        if v is None:
            continue
        v = str(v)
        items.append(f"{k}={v}" if v.startswith("<") and v.endswith(">") else f"{k}={dot_quote(v)}")
    return "[" + ", ".join(items) + "]"


def _io_attrs(label: str, tensor: str) -> str:
    return _attrs(label=label, shape="ellipse", style="filled", fillcolor="#eeeeee", tooltip=tensor)


def _body(graph: Graph, prefix: str, indent: str) -> list[str]:
    """The node and edge statements of ``graph``; node ids are ``<prefix>n<i>``, inputs ``<prefix>in<i>``."""
    lines: list[str] = []
    ids: dict[str, str] = {}              # tensor -> id of the box (node or input oval) that produces it
    for i, t in enumerate(graph.inputs):
        ids[t] = f"{prefix}in{i}"
        label = f"<<b>{html_label_text(t)}</b><br/>{html_label_text(_type_text(graph, t), 2 * MAX_LABEL)}>"
        lines.append(f"{indent}{ids[t]} {_io_attrs(label, t)};")
    nodes = graph.topo()
    for i, n in enumerate(nodes):
        prec = precision_of(graph, n)
        nid = f"{prefix}n{i}"
        for t in n.outputs:
            if t:
                ids[t] = nid
        attrs = _attrs(label=_node_label(graph, n), fillcolor=COLORS[prec], color=BORDER[prec],
                       penwidth="2.5" if is_fused(n) else "1", tooltip=f"{n.name} ({n.op}, {prec})")
        lines.append(f"{indent}{nid} {attrs};")
    for i, n in enumerate(nodes):
        seen = set()
        for t in n.inputs:
            src = ids.get(t) if t else None
            if src is None or (src, t) in seen:
                continue
            seen.add((src, t))
            info = graph.tensors.get(t)
            int8 = info is not None and info.dtype in INT8_DTYPES | INT16_DTYPES
            attrs = _attrs(tooltip=f"{t}: {_type_text(graph, t)}", color=BORDER["int8"] if int8 else None)
            lines.append(f"{indent}{src} -> {prefix}n{i} {attrs};")
    for i, t in enumerate(graph.outputs):
        oid = f"{prefix}out{i}"
        label = f"<<b>{html_label_text(t)}</b><br/>{html_label_text(_type_text(graph, t), 2 * MAX_LABEL)}>"
        lines.append(f"{indent}{oid} {_io_attrs(label, t)};")
        if t in ids:
            lines.append(f"{indent}{ids[t]} -> {oid};")
    return lines


def _header(title: str) -> list[str]:
    lines = ["digraph quantgraph {",
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=12, nodesep=0.25, ranksep=0.3, labelloc=t];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, margin="0.12,0.04"];',
             '  edge [arrowsize=0.6, color="#777777"];']
    if title:
        lines.append(f"  label={dot_quote(title)};")
    return lines


def _legend(indent: str = "  ") -> list[str]:
    cells = "".join(f'<td bgcolor="{COLORS[p]}" border="1">{p}</td>' for p in ("int8", "int16", "fp32"))
    label = (f'<<table border="0" cellspacing="2" cellpadding="3"><tr>{cells}'
             '<td border="1">thick border: fused</td></tr></table>>')
    return [f"{indent}legend [shape=plaintext, style=solid, label={label}];"]


def _cluster(graph: Graph, name: str, title: str, prefix: str) -> list[str]:
    lines = [f"  subgraph {dot_quote('cluster_' + name)} {{",
             f"    label={dot_quote(title or name)};",
             '    style="rounded"; color="#999999";']
    lines += _body(graph, prefix, "    ")
    lines.append("  }")
    return lines


def _prefix(cluster: str) -> str:
    """An id prefix made of the cluster name's letters and digits (ids stay plain DOT identifiers)."""
    return "c" + "".join(c if c.isascii() and c.isalnum() else "_" for c in cluster) + "_"


def graph_to_dot(graph: Graph, title: str = "", cluster: str | None = None) -> str:
    """Graphviz DOT text of ``graph``: one box per node (name, op, what it fuses, output type), coloured by precision.

    With ``cluster``, the nodes sit in a subgraph ``cluster_<cluster>`` (titled ``title``) and their ids carry the
    cluster's prefix, so two such bodies can share one picture (:func:`model_to_dot`).
    """
    title = title or graph.name
    lines = _header("" if cluster else title)
    if cluster:
        lines += _cluster(graph, cluster, title, _prefix(cluster))
    else:
        lines += _body(graph, "", "  ")
    lines += _legend()
    lines.append("}")
    return "\n".join(lines) + "\n"


def model_to_dot(model: Any) -> str:
    """Before and after compilation side by side: ``model.export_graph`` (the imported fp32 graph, or the QDQ graph
    the quantizer wrote; left out when None) and ``model.graph`` (the optimized graph that runs)."""
    after: Graph = model.graph
    before: Graph | None = getattr(model, "export_graph", None)
    quantized = getattr(model, "quantization", None) is not None
    title = f"{after.name}: opt_level {getattr(model, 'opt_level', '?')}" + (", int8" if quantized else "")
    lines = _header(title)
    if before is not None and before is not after:
        what = "QDQ graph" if quantized else "imported graph"
        lines += _cluster(before, "before", f"before: {what}, {len(before)} nodes", _prefix("before"))
    lines += _cluster(after, "after", f"after: compiled graph, {len(after)} nodes", _prefix("after"))
    lines += _legend()
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- files ------------------------------------------------------------------------------------------------------
def _write_atomic(path: str, data: bytes) -> None:
    from quantgraph.fileio import atomic_write

    atomic_write(path, data)


def render(dot: str, fmt: str = "svg") -> tuple[bytes | None, str]:
    """``dot`` laid out by Graphviz as ``fmt`` bytes, and why not (None and a reason when it cannot be)."""
    try:
        import graphviz  # type: ignore[import-not-found]
    except ImportError:
        graphviz = None
    if graphviz is not None:
        try:
            return graphviz.Source(dot).pipe(format=fmt, timeout=DOT_TIMEOUT), ""
        except Exception as exc:  # the package is there but its backend failed: try the program ourselves
            why = f"the graphviz package failed ({type(exc).__name__}: {exc})"
    else:
        why = "the graphviz Python package is not installed"
    exe = shutil.which("dot")
    if exe is None:
        return None, f"{why} and no 'dot' program is on PATH (install Graphviz)"
    try:
        res = subprocess.run([exe, f"-T{fmt}"], input=dot.encode("utf-8"), capture_output=True,
                             timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"'{exe} -T{fmt}' did not finish in {DOT_TIMEOUT:g} s"
    except OSError as exc:
        return None, f"'{exe}' could not run: {exc}"
    if res.returncode != 0 or not res.stdout:
        err = res.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, f"'{exe} -T{fmt}' exited with code {res.returncode}" + (f": {err[-1]}" if err else "")
    return res.stdout, ""


def write_picture(dot: str, path: str | os.PathLike) -> str:
    """Write ``dot`` as a picture when ``path`` ends with .svg (or .png / .pdf) and Graphviz (the ``graphviz``
    package or the ``dot`` program) renders it; otherwise write the DOT text, to ``path`` itself when it ends with
    .dot / .gv, else to ``path`` with its suffix changed to .dot, logging a warning that says why. Returns the path
    written. Files are replaced atomically."""
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    fmt = ext[1:].lower()
    if fmt in ("dot", "gv"):
        _write_atomic(path, dot.encode("utf-8"))
        return path
    if fmt in RENDERED:
        data, why = render(dot, fmt)
        if data is not None:
            _write_atomic(path, data)
            return path
    else:
        why = f"'{ext or '(no suffix)'}' is not a picture format Graphviz is asked for ({', '.join(RENDERED)})"
    out = stem + ".dot"
    log.warning("cannot write %s: %s; wrote the DOT text to %s instead", path, why, out)
    _write_atomic(out, dot.encode("utf-8"))
    return out


__all__ = ["graph_to_dot", "model_to_dot", "write_picture", "render", "precision_of", "fused_parts", "fused_text",
           "is_fused", "dot_quote", "html_label_text", "COLORS"]
