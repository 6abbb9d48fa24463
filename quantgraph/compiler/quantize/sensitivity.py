"""The error each quantized unit adds: ``CompiledModel.quantization_report()``.

    report = model.quantization_report()          # over the calibration batches (or data=...)
    print(report)                                 # worst first: SQNR / cosine, scales, ranges
    report.worst(5)                               # the five most harmful units

A *unit* is what one int8 op computes (a Conv/MatMul/Gemm group with its fused epilogue, a QAdd, a pooling, a
Concat; see ``quantize.py``). Data-movement ops are exact on int8 and are not listed. For every unit the report
gives its output against the fp32 graph's, two ways:

* **local**: only this unit quantized. Its int8 inputs are the *fp32* values, quantized with the unit's parameters,
  its weights are the dequantized int8 weights, and its output is rounded when the unit writes int8. This is the
  error the unit adds by itself: the sensitivity order of the accuracy search (``search.py``).
* **cumulative**: everything up to it quantized (the QDQ graph, i.e. what the int8 kernels compute up to one
  rounding step): how much error has piled up by then.

* **alone at the output**: the model outputs' SQNR with only this unit quantized: the sensitivity order of the
  accuracy search (``search.py``): a final projection with a modest local error can matter more than an early
  conv whose error the layers after it attenuate.

Cost: one compile of a *switched graph* (``switched_graph``: every unit computed in fp32 and as its int8 twin, a
scalar input per unit choosing which one its readers get), then per batch a run with all switches off (fp32, and
every twin's local error), one with all on (the QDQ graph: cumulative errors), and, on the first few batches, one
per unit with only its switch on. No compile per unit; the twins' weights are dequantized constants, so the fp32
kernels run them at full speed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from quantgraph.compiler.quantize.quantize import QuantizeOptions, QuantPlan, insert_qdq
from quantgraph.compiler.quantize.stats import CalibrationStats
from quantgraph.compiler.rules.realize_qdq import MOVES
from quantgraph.errors import InputError
from quantgraph.ir.dtypes import is_float
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node


@dataclass
class QuantSource:
    """What a quantized CompiledModel was made from; kept for its report and for the accuracy search.

    ``graph`` is the fp32 graph the quantizer planned (the first half of the pipeline; never changed afterwards),
    ``data`` the calibration batches when they were given as a sequence (kept by reference, not copied),
    ``subgraphs`` the If branches and loop bodies quantized as graphs of their own (``subgraphs.py``;
    ``graph`` keeps them fp32).
    """

    graph: Graph
    stats: CalibrationStats
    options: QuantizeOptions
    opt_level: int
    data: Sequence[Any] | None = None
    subgraphs: list[Any] = field(default_factory=list)


@dataclass
class Unit:
    """One int8 op of the plan: its nodes (anchor first) and the fp32 tensor it writes."""

    name: str
    op: str
    nodes: list[str]
    out: str
    precision: str


def plan_units(graph: Graph, plan: QuantPlan) -> list[Unit]:
    """The quantized units of ``plan`` in topological order, data-movement ops left out (they are exact)."""
    groups: dict[str, list[str]] = {}
    for d in plan.decisions.values():  # topological order
        if d.precision != "fp32" and d.group:
            groups.setdefault(d.group, []).append(d.node)
    out = []
    for anchor, nodes in groups.items():
        n = graph.node(anchor)
        if n.op in MOVES:
            continue
        out.append(Unit(anchor, n.op, nodes, graph.node(nodes[-1]).outputs[0], plan.decisions[anchor].precision))
    return out


@dataclass
class _Energy:
    """Running sums for SQNR and cosine of ``q`` against reference ``f``."""

    ff: float = 0.0
    ee: float = 0.0
    qq: float = 0.0
    fq: float = 0.0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = np.asarray(f, np.float64).ravel()
        q = np.asarray(q, np.float64).ravel()
        ok = np.isfinite(f) & np.isfinite(q)
        if not ok.all():
            f, q = f[ok], q[ok]
        self.ff += float(f @ f)
        self.qq += float(q @ q)
        self.fq += float(f @ q)
        e = f - q
        self.ee += float(e @ e)

    @property
    def sqnr(self) -> float:
        return sqnr_db(self.ff, self.ee)

    @property
    def cosine(self) -> float:
        d = math.sqrt(self.ff * self.qq)
        return self.fq / d if d > 0 else (1.0 if self.ee == 0 else 0.0)


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise): +inf for no noise, -inf for a zero signal with noise."""
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class LayerError:
    """One unit's row of the report (see the module docstring)."""

    unit: str
    op: str
    nodes: list[str]
    precision: str
    local_sqnr: float
    local_cosine: float
    cumulative_sqnr: float
    cumulative_cosine: float
    input_scale: float | None
    input_zero_point: int | None
    weight_scale: tuple[float, float] | None      # (min, max) over channels
    output_scale: float | None
    calib_range: tuple[float, float] | None        # the range the calibration mode chose for the input
    seen_range: tuple[float, float] | None         # min / max the calibration saw on the input
    #: the lowest SQNR over the model outputs with only this unit quantized (None: not measured)
    output_sqnr: float | None = None
    flags: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class QuantizationReport:
    """Per-unit error of a quantized model, and its outputs' SQNR (simulated QDQ and the real int8 kernels)."""

    layers: list[LayerError]
    output_sqnr: dict[str, float]          # the int8 model's outputs vs fp32
    simulated_output_sqnr: dict[str, float]  # the QDQ graph's outputs vs fp32
    batches: int

    def ranked(self) -> list[LayerError]:
        """Most harmful first: by the model-output SQNR with only the unit quantized, else by local SQNR."""
        return sorted(self.layers, key=_harm)

    def worst(self, k: int = 5) -> list[LayerError]:
        """The ``k`` most harmful units (``ranked``)."""
        return self.ranked()[:k]

    def layer(self, unit: str) -> LayerError:
        for r in self.layers:
            if r.unit == unit or unit in r.nodes:
                return r
        raise KeyError(f"no quantized unit '{unit}' in this report ({len(self.layers)} units)")

    def to_json(self) -> dict:
        return {"layers": [r.to_json() for r in self.layers], "output_sqnr": self.output_sqnr,
                "simulated_output_sqnr": self.simulated_output_sqnr, "batches": self.batches}

    def __str__(self) -> str:
        def db(x: float) -> str:
            return "inf" if x == math.inf else f"{x:.1f}"

        outs = ", ".join(f"{t} {db(v)} dB" for t, v in self.output_sqnr.items())
        lines = [f"quantization report over {self.batches} batch(es): {len(self.layers)} quantized units; "
                 f"output SQNR {outs}", ""]
        header = ("unit", "op", "prec", "alone@out dB", "local dB", "cos", "cumul dB", "x scale", "w scale",
                  "range chosen", "range seen", "flags")
        rows = []
        for r in self.ranked():
            ws = "" if r.weight_scale is None else f"{r.weight_scale[0]:.2g}..{r.weight_scale[1]:.2g}"
            rng = "" if r.calib_range is None else f"{r.calib_range[0]:.3g}..{r.calib_range[1]:.3g}"
            seen = "" if r.seen_range is None else f"{r.seen_range[0]:.3g}..{r.seen_range[1]:.3g}"
            rows.append((r.unit, r.op, r.precision, "" if r.output_sqnr is None else db(r.output_sqnr),
                         db(r.local_sqnr), f"{r.local_cosine:.4f}",
                         db(r.cumulative_sqnr), "" if r.input_scale is None else f"{r.input_scale:.3g}", ws, rng,
                         seen, ",".join(r.flags)))
        from quantgraph.compiler.report import _table

        lines += ["  " + s for s in _table(rows, header)]
        return "\n".join(lines)


def _harm(r: LayerError) -> tuple[float, float]:
    return (r.output_sqnr if r.output_sqnr is not None else r.local_sqnr, r.local_sqnr)


# -- the measuring graph ----------------------------------------------------------------------------
def _dequantized(gq: Graph, d: Node) -> np.ndarray:
    """The float value of ``DequantizeLinear(constant)`` (weights), per tensor or along its axis."""
    q = gq.tensors[d.inputs[0]].const.astype(np.float64)
    s = gq.tensors[d.inputs[1]].const.astype(np.float64)
    z = gq.tensors[d.inputs[2]].const.astype(np.float64) if len(d.inputs) > 2 and d.inputs[2] else 0.0
    if np.ndim(s) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[d.attrs.get("axis", 1) % q.ndim] = -1
        s = s.reshape(shape)
        z = np.reshape(z, shape) if np.ndim(z) == 1 else z
    return ((q - z) * s).astype(np.float32)


def _copy_const(dst: Graph, src: Graph, t: str) -> str:
    if t in dst.tensors and dst.tensors[t].const is not None:
        return t
    return dst.add_const(src.tensors[t].const, dst.unique_name(t))


def _fake_quant(dst: Graph, gq: Graph, q: Node, d: Node, x: str, tag: str) -> str:
    """``DQ(Q(x))`` in ``dst`` with the parameters of ``gq``'s pair ``q -> d`` (and the Clip before an int16 Q, which
    bounds a W8A16 group's input to +-int16_qmax levels)."""
    c = gq.producer(q.inputs[0])
    if c is not None and c.op == "Clip" and gq.tensors[q.outputs[0]].dtype == "int16":
        x = dst.add("Clip", [x] + [_copy_const(dst, gq, t) if t else "" for t in c.inputs[1:]], name=f"{tag}/clip")
    qi = [x] + [_copy_const(dst, gq, t) if t else "" for t in q.inputs[1:]]
    qt = dst.add("QuantizeLinear", qi, name=f"{tag}/quantize", **q.attrs)
    di = [qt] + [_copy_const(dst, gq, t) if t else "" for t in d.inputs[1:]]
    return dst.add("DequantizeLinear", di, name=f"{tag}/dequantize", **d.attrs)


def _pair_reading(gq: Graph, t: str) -> tuple[Node, Node] | None:
    """The activation ``Q -> DQ`` pair insert_qdq put on tensor ``t`` (original name), or None."""
    name = f"{t}/quantize"
    if name not in gq:
        return None
    q = gq.node(name)
    ds = [c for c in gq.consumers(q.outputs[0]) if c.op == "DequantizeLinear"]
    return (q, ds[0]) if ds else None


def switched_graph(g: Graph, gq: Graph,
                   units: Sequence[Unit]) -> tuple[Graph, dict[str, str], dict[str, str], dict[str, str]]:
    """``g`` with a switch per unit: unit ``u`` computes both its fp32 nodes and an int8 twin (fake-quantized inputs,
    dequantized weights, its output rounded when it writes int8), and delivers ``t + s_u * (twin - t)`` to its
    readers, where ``s_u`` is a scalar graph input. All switches 0: the fp32 graph, each twin fed fp32 values (its
    local error); all 1: the QDQ graph (the cumulative errors); one at 1: only that unit quantized (its effect on the
    model outputs). Returns the graph and, per unit, its switch input, its delivered tensor and its twin's output.
    """
    sw = g.copy()
    switches, delivered, twins = {}, {}, {}
    for u in units:
        renamed: dict[str, str] = {}
        for name in u.nodes:
            n, fp = gq.node(name), sw.node(name)
            ins = []
            for i, x in enumerate(n.inputs):
                p = gq.producer(x) if x else None
                if not x:
                    ins.append("")
                elif x in renamed:
                    ins.append(renamed[x])
                elif p is not None and p.op == "DequantizeLinear" and gq.tensors[p.inputs[0]].const is not None:
                    ins.append(sw.add_const(_dequantized(gq, p), sw.unique_name(f"{fp.inputs[i]}/int8")))
                elif p is not None and p.op == "DequantizeLinear":
                    ins.append(_fake_quant(sw, gq, gq.producer(p.inputs[0]), p, fp.inputs[i], f"{u.name}/int8/{i}"))
                elif gq.tensors[x].const is not None and (i >= len(fp.inputs) or fp.inputs[i] != x):
                    # a constant insert_qdq made (bias correction's shifted or added bias): the twin uses it
                    ins.append(sw.add_const(gq.tensors[x].const, sw.unique_name(f"{x}/int8")))
                else:
                    ins.append(fp.inputs[i])
            y = sw.add(n.op, ins, name=f"{name}/int8", **n.attrs)
            renamed[n.outputs[0]] = y if isinstance(y, str) else y[0]
        y = renamed[gq.node(u.nodes[-1]).outputs[0]]
        pair = _pair_reading(gq, u.out)
        if pair is not None:
            y = _fake_quant(sw, gq, pair[0], pair[1], y, f"{u.name}/int8/out")
        t = u.out
        readers = [c for c in sw.consumers(t)]
        s = sw.add_input(sw.unique_name(f"{u.name}/switch"), (), "float32")
        d = sw.add("Sub", [y, t], name=f"{u.name}/switch/sub")
        d = sw.add("Mul", [s, d], name=f"{u.name}/switch/mul")
        m = sw.add("Add", [t, d], name=f"{u.name}/switch/add")
        for c in readers:
            c = sw.node(c.name)
            sw.set_inputs_of(c, [m if x == t else x for x in c.inputs])
        if t in sw.outputs:
            sw.set_outputs([m if o == t else o for o in sw.outputs])
        switches[u.name], delivered[u.name], twins[u.name] = s, m, y
    extra = list(delivered.values()) + list(twins.values())
    sw.set_outputs(list(dict.fromkeys(list(sw.outputs) + extra)))
    return sw, switches, delivered, twins


#: batches the one-unit-at-a-time runs use (each costs a run of the switched graph per unit)
SENSITIVITY_BATCHES = 4


# -- measuring ----------------------------------------------------------------------------------------------------
def _runner(graph: Graph, opt_level: int):
    """The switched graph compiled with the fp32 fusions (and at O3 the NHWC layout) the real model gets: unfused
    it ran 4-8x slower (pplcnet: 0.84 s a run unfused, 0.20 s fused, 0.12 s NHWC), and the report runs it once per
    unit per batch. Its twins' Q/DQ stay simulated (no realization pass); the switch and twin tensors are graph
    outputs, which no fusion swallows."""
    from quantgraph.compiler.executable import CompiledModel
    from quantgraph.compiler.lower import lower
    from quantgraph.compiler.pipeline import build_fusion

    graph, _ = build_fusion(opt_level).run(graph)
    return CompiledModel(graph, lower(graph))


def _batches(data: Any) -> Iterable[Any]:
    if isinstance(data, (np.ndarray, dict)):
        return [data]
    return data


def quantization_report(model: Any, data: Any = None, sensitivity: bool = True,
                        max_batches: int | None = None) -> QuantizationReport:
    """The per-unit report of a CompiledModel quantized by ``compile(quantize="int8")`` (see the module docstring).

    ``data``: batches like ``calibration=``; default: the calibration batches (when they were a sequence).
    ``sensitivity``: also measure each unit's effect on the model outputs with only it quantized (one run of the
    switched graph per unit on the first ``SENSITIVITY_BATCHES`` batches). ``max_batches``: use only the first ones.
    """
    from quantgraph.compiler.quantize.calibrate import batch_feeds

    src: QuantSource | None = getattr(model, "quant_source", None)
    if src is None or model.quantization is None:
        raise InputError("quantization_report() needs a model compiled with quantize='int8' from an fp32 model "
                         "(this one is fp32, or was quantized elsewhere)")
    data = src.data if data is None else data
    if data is None:
        raise InputError("quantization_report() needs data=: the calibration batches were an iterator (consumed); "
                         "pass a list of batches")
    g, plan = src.graph, model.quantization
    gq = insert_qdq(g.copy(), plan, src.stats)
    units = plan_units(g, plan)
    sw, switch, delivered, twin = switched_graph(g, gq, units)
    outs = dict(zip(g.outputs, sw.outputs[:len(g.outputs)]))
    run = _runner(sw, src.opt_level)
    local = {u.name: _Energy() for u in units}
    cumul = {u.name: _Energy() for u in units}
    alone = {u.name: {t: _Energy() for t in g.outputs} for u in units}
    outs_real = {t: _Energy() for t in g.outputs}
    outs_sim = {t: _Energy() for t in g.outputs}
    inputs = [g.tensors[t] for t in g.inputs]
    off = {s: np.float32(0.0) for s in switch.values()}
    on = {s: np.float32(1.0) for s in switch.values()}
    floats = [t for t in g.outputs if is_float(g.tensors[t].dtype)]
    n = 0
    for i, batch in enumerate(_batches(data)):
        if max_batches is not None and i >= max_batches:
            break
        feeds = batch_feeds(inputs, batch, i)
        a = run.run({**feeds, **off})
        b = run.run({**feeds, **on})
        real = model.run(feeds)
        for u in units:
            local[u.name].add(a[delivered[u.name]], a[twin[u.name]])
            cumul[u.name].add(a[delivered[u.name]], b[delivered[u.name]])
        for t in floats:
            outs_sim[t].add(a[outs[t]], b[outs[t]])
            outs_real[t].add(a[outs[t]], real[t])
        if sensitivity and i < SENSITIVITY_BATCHES:
            for u in units:
                c = run.run({**feeds, **off, switch[u.name]: np.float32(1.0)})
                for t in floats:
                    alone[u.name][t].add(a[outs[t]], c[outs[t]])
        n += 1
    if n == 0:
        raise InputError("quantization_report(): data yielded no batch")
    layers = [_row(g, gq, plan, src.stats, u, local[u.name], cumul[u.name]) for u in units]
    if sensitivity:
        for r in layers:
            r.output_sqnr = min((alone[r.unit][t].sqnr for t in floats), default=math.inf)
    _flag(layers)
    return QuantizationReport(layers, {t: outs_real[t].sqnr for t in floats}, {t: outs_sim[t].sqnr for t in floats},
                              n)


def _row(g: Graph, gq: Graph, plan: QuantPlan, stats: CalibrationStats, u: Unit, loc: _Energy,
         cum: _Energy) -> LayerError:
    anchor = gq.node(u.name)
    x_scale = x_zp = w_scale = None
    p = gq.producer(anchor.inputs[0])
    if p is not None and p.op == "DequantizeLinear":
        x_scale = float(np.asarray(gq.tensors[p.inputs[1]].const).ravel()[0])
        x_zp = int(np.asarray(gq.tensors[p.inputs[2]].const).ravel()[0]) if len(p.inputs) > 2 else 0
    if len(anchor.inputs) > 1 and anchor.inputs[1]:
        w = gq.producer(anchor.inputs[1])
        if w is not None and w.op == "DequantizeLinear" and gq.tensors[w.inputs[0]].const is not None:
            s = np.asarray(gq.tensors[w.inputs[1]].const, np.float64)
            w_scale = (float(s.min()), float(s.max()))
    pair = _pair_reading(gq, u.out)
    out_scale = float(np.asarray(gq.tensors[pair[0].inputs[1]].const).ravel()[0]) if pair else None
    x = g.node(u.name).inputs[0]
    src = plan.quantized.get(x)
    chosen = seen = None
    if src is not None and src in stats:
        chosen = stats.range(src)
        seen = stats.range(src, "minmax")
    return LayerError(u.name, u.op, list(u.nodes), u.precision, loc.sqnr, loc.cosine, cum.sqnr, cum.cosine, x_scale,
                      x_zp, w_scale, out_scale, None if chosen is None else tuple(map(float, chosen)),
                      None if seen is None else tuple(map(float, seen)))


def _flag(layers: list[LayerError]) -> None:
    """Mark the worst units: the three lowest local SQNRs, those 10 dB below the median, and heavy clipping."""
    if not layers:
        return
    finite = sorted(r.local_sqnr for r in layers if math.isfinite(r.local_sqnr))
    median = finite[len(finite) // 2] if finite else math.inf
    worst = {id(r) for r in sorted(layers, key=_harm)[:max(1, min(3, len(layers) // 10))]}
    for r in layers:
        if id(r) in worst:
            r.flags.append("worst")
        if r.local_sqnr < median - 10.0:
            r.flags.append("outlier")
        if r.calib_range and r.seen_range:
            span = r.calib_range[1] - r.calib_range[0]
            seen = r.seen_range[1] - r.seen_range[0]
            if span > 0 and seen > 4 * span:
                r.flags.append("clipped")
            if span > 0 and max(abs(r.seen_range[0]), abs(r.seen_range[1])) > 1e4 * max(
                    abs(r.calib_range[0]), abs(r.calib_range[1])):
                r.flags.append("huge-values")
