"""The quantize pass: decide per node int8 or fp32, then write the decisions as QDQ (Q -> DQ pairs, DQ'd weights).

    plan = plan_quantization(graph, QuantizeOptions(exclude=["fc"]))   # which nodes, which tensors to calibrate
    stats = calibrate_graph(graph, batches, tensors=plan.observe, mode="entropy")
    insert_qdq(graph, plan, stats)                                       # the QDQ graph: runs on the interpreter

The graph is the optimized fp32 graph before epilogue fusion (BatchNorm folded, patterns recognized), so the units
are primitive ops. A *group* is what one int8 kernel computes:

    Conv | MatMul(+ bias Add) | Gemm   [+ residual Add]   [+ Relu | Clip]        (the anchor and its epilogue)

Its activation input is quantized (u8, per tensor), its weights are s8 symmetric per output channel (``DQ`` of an
int8 constant), its float bias stays float (realization rounds it to int32 in units of ``x_scale * w_scale``). The
group's output gets a ``Q -> DQ`` pair when an int8 op reads it, so a tensor between two int8 ops stays int8;
otherwise (a LayerNorm, Softmax or Sigmoid reads it, or it is a graph output) the group writes float32 directly
and the realization makes it a float-output QConv/QMatMul (one rounding less than Q->DQ, and no extra pass over the
tensor). A standalone Add of two same-shape activations becomes QAdd, AveragePool / GlobalAveragePool QAveragePool,
Concat QConcat (each input requantized to the output's parameters; a group read only by the Concat writes in them
directly), and the data-movement ops (MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Slice, Pad, Resize
nearest, ...: ``realize_qdq.MOVES``) run on int8 with their input's parameters. Each of these runs int8 only when
an int8 op reads its output (otherwise it gains nothing). Everything else stays fp32, and so does every node that
``exclude`` names.

Two activations. A MatMul whose B is computed too (rank >= 2 both, batch dimensions broadcasting as ONNX MatMul;
attention's ``Q @ K^T`` and ``P @ V``) is a group as well: both inputs get a ``Q -> DQ`` pair with activation
parameters (B is an activation: asymmetric, per tensor, calibrated like A), there are no weights to quantize, and
its epilogue is the residual Add and Relu / Clip (no bias). It realizes as a QMatMul with a run-time B, which runs
on the batched int8 kernel (``kernels/bmm_int8.py``: B packed inside the call). A Gemm with a computed B, or a
rank-1 operand, stays fp32.

Where it pays: attention. The quantizer sees the graph before attention fusion, so attention's two products are
ordinary two-activation MatMuls, and the rule is to quantize them; only the attention cores that stay fp32 (all of
their nodes excluded, or refused) are fused into FusedAttention after quantization. Measured on the BERT-4 bench
encoder (hidden 384, 6 heads, seq 128; 2-core Zen 4, avx512vnni; ``CompiledModel.profile``), int8 attention
(Transposes on int8, Q @ K^T with the 1/sqrt(d) folded into its scale, fp32 Softmax, Q, P @ V writing int8 for
the output projection) against FusedAttention fp32 between int8 projections (``exclude=`` of the two MatMuls):

    attention per layer (profile)    b1: 218 us vs 386 us      b16: 3.9 ms vs 8.4 ms
    whole model (median)             b1: 4.8 ms vs 5.5 ms      b16: 74 ms vs 94 ms      SQNR vs fp32 32.2 vs 33.0 dB

(FusedAttention's BLAS products run on one thread, beside our parallel kernels; the int8 products run on both.
Of the int8 attention at b1: Q @ K^T 55 us, Softmax 65, P @ V 51, Transposes 37, Q of the probabilities 12.) On
MiniLM-L3 (seq 64, b1, static shapes) the two are even (2.0 vs 2.1 ms) and its dev-set metric moves 0.9964 ->
0.9962. So no attention MatMul is kept fp32 for being attention; ``exclude=`` still keeps any of them fp32.

Accuracy transforms (issue 11; bias correction and calib_mode "auto" on by default, the rest off: the dev-set
table is in the commit log): ``equalize``
(cross-layer equalization, ``equalize.py``) and ``smooth_quant`` (SmoothQuant, ``smooth.py``) rewrite the fp32
graph before planning, so calibration sees the rewritten graph; ``bias_correction`` (``bias_correction.py``) shifts
each group's float bias in ``insert_qdq`` by the mean error of its quantized weights, from per-channel means of the
group inputs that calibration keeps; ``calib_mode="mse"`` / ``"auto"`` choose ranges by expected squared error
(``observers.py``).

W8A16 (``precision={"conv": "int16"}``, or the accuracy search's first widening). A node asked int16 must be the
anchor of a group with constant weights (another op: InputError; a MatMul of two activations: fp32, with the
reason). Its group (the same epilogue as int8) reads its activation as int16, symmetric (zero point 0), over
+-max|x| of the calibration (min/max whatever ``calib_mode``: with thousands of levels clipping costs more than
rounding), with ``qmax = int16_qmax(K, bias bound)`` levels a side so the int32 sums cannot overflow on any rung;
the QDQ graph says so with ``Clip(x, -qmax*s, qmax*s) -> Q(int16) -> DQ`` (realized as QuantizeClip). Its weights
are s8 per channel as for int8 (bias correction too), and it writes float32: a reader quantizes its own input as
after an fp32 node (the realization may fold a sole reader's Q into the epilogue, as for any float core). A tensor
an int16 group reads stays float32 even when int8 ops read it too, so it reaches the group unrounded. Measured in
``tests/compiler/quantize/test_int16_precision.py``: +18.6 dB (MLP) and +27 dB (CNN) output SQNR with the one
layer whose input has a 1000x channel int16.

Activations are quantized with the calibrated range widened to hold 0: ``uint8`` (and ``auto``) asymmetric, zero
point 0 for non-negative tensors (after ReLU), ``int8`` asymmetric too (zero point in [-128, 127]); the int8
kernels take any activation zero point (its compensation is folded into the int32 bias), so a zero point costs
nothing and symmetric ranges would only waste levels on one side.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from quantgraph.compiler.quantize.bias_correction import correct_bias
from quantgraph.compiler.quantize.dynamic_rnn import DECISION as DYNAMIC_RNN_DECISION
from quantgraph.compiler.quantize.dynamic_rnn import DYNAMIC_RNN_OPS, dynamic_rnn_refusal, quantize_dynamic_rnn
from quantgraph.compiler.quantize.stats import CalibrationStats
from quantgraph.compiler.quantize.wide import int16_qmax, int16_range, insert_int16, int_bias_bound
from quantgraph.compiler.rules.realize_qdq import MOVES, POOLS, move_refusal
from quantgraph.errors import InputError
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.tensor import QuantParams

ACTIVATION_DTYPES = ("auto", "uint8", "int8")
PRECISIONS = ("int8", "int16", "fp32")
#: what ``precision=`` may ask of a node (int8 is the default of every node that has an int8 form)
CHOOSABLE = ("int8", "int16", "fp32")
ANCHORS = ("Conv", "MatMul", "Gemm")


_QMAX = {"uint8": (0, 255), "int8": (-128, 127)}
#: weights use [-127, 127]: symmetric, so no weight zero point and -w is representable
WEIGHT_QMAX = 127


@dataclass(frozen=True)
class QuantizeOptions:
    """What ``compile(quantize="int8", ...)`` was asked for (see ``compile``'s docstring)."""

    calib_mode: str = "auto"     # default by the dev set (see compile())
    percentile: float = 99.99
    activation_dtype: str = "auto"
    per_channel: bool = True
    exclude: tuple[str, ...] = ()
    #: (pattern, precision) pairs: node names, op types or regexes -> "int8" | "int16" | "fp32"; the first match
    #: wins, and ``exclude`` (fp32) wins over all
    precision: tuple[tuple[str, str], ...] = ()
    bias_correction: bool = True
    equalize: bool = False
    smooth_quant: float | None = None   # SmoothQuant's alpha, None: off
    #: the post-calibration range guards (``range_guard.py``: sentinel values, Concat of unlike ranges)
    range_guard: bool = True
    #: (node name, reason) pairs kept fp32 by the range guards; set by compile(), not by users
    kept_float: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.activation_dtype not in ACTIVATION_DTYPES:
            raise ValueError(f"activation_dtype must be one of {', '.join(ACTIVATION_DTYPES)}; "
                             f"got {self.activation_dtype!r}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"percentile must be in (50, 100]; got {self.percentile}")
        for p in self.exclude:
            if not isinstance(p, str):
                raise TypeError(f"exclude= takes node names, op types or regexes (strings); got {p!r}")
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"exclude= pattern {p!r} is not a valid regex: {exc}") from None

        for p, want in self.precision:
            if want not in CHOOSABLE:
                raise ValueError(f"precision= maps {p!r} to {want!r}; expected one of {', '.join(CHOOSABLE)}")
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"precision= pattern {p!r} is not a valid regex: {exc}") from None
        if self.smooth_quant is not None and not 0.0 <= float(self.smooth_quant) <= 1.0:
            raise ValueError(f"smooth_quant (SmoothQuant's alpha) must be in [0, 1] or None; got {self.smooth_quant}")

    def precision_of(self, n: Node) -> str | None:
        """The precision ``precision=`` asks for node ``n``, or None (the quantizer decides)."""
        for p, want in self.precision:
            if p == n.name or p == n.op or re.fullmatch(p, n.name):
                return want
        return None

    @property
    def storage(self) -> str:
        return "int8" if self.activation_dtype == "int8" else "uint8"

    def to_json(self) -> dict:
        return {"calib_mode": self.calib_mode, "percentile": self.percentile,
                "activation_dtype": self.activation_dtype, "per_channel": self.per_channel,
                "exclude": list(self.exclude), "precision": [list(kv) for kv in self.precision],
                "bias_correction": self.bias_correction, "equalize": self.equalize,
                "smooth_quant": self.smooth_quant, "range_guard": self.range_guard,
                "kept_float": [list(kv) for kv in self.kept_float]}


@dataclass(frozen=True)
class Decision:
    """What the quantizer decided for one node of the fp32 graph.

    ``precision`` is "int8", "int16" (W8A16 groups) or "fp32"; ``reason`` says why a node stays fp32 (or, for
    int8 / int16, what it is fused into); ``group`` names the anchor of the group the node belongs to; ``output`` is
    the dtype the group writes (always float32 for int16 groups).
    """

    node: str
    op: str
    precision: str
    reason: str = ""
    group: str = ""
    output: str = ""


@dataclass
class _Unit:
    """An int8 candidate: a group (anchor + epilogue), a standalone Add, or a data-movement op."""

    kind: str                      # "group" | "add" | "move" | "pool" | "concat"
    nodes: list[Node]
    out: str                       # the tensor it writes
    int8_in: list[tuple[str, int]] = field(default_factory=list)   # (node, slot) reading int8 when it runs int8
    residual: tuple[str, int] | None = None                         # a group's residual (node, slot)
    int8_out: bool = False
    #: an int16 (W8A16) group: its activation is read as int16 (not through ``int8_in``) and it writes float32
    int16: bool = False

    @property
    def name(self) -> str:
        return self.nodes[0].name


@dataclass
class QuantPlan:
    """The decisions for a graph and what inserting them needs.

    ``observe``: tensors to calibrate. ``quantized``: tensor -> the tensor whose parameters it takes (itself, or a
    data-movement op's input). ``readers``: tensor -> (node, slot) pairs that read its DQ; ``all_readers``: tensors
    every reader (and the graph output) takes as DQ, because an int8 op writes them. ``weights``: anchor ->
    (slot, channel axis); ``biases``: anchor -> the float bias its int32 bias is made from.
    """

    options: QuantizeOptions
    decisions: dict[str, Decision]
    observe: list[str]
    quantized: dict[str, str]
    readers: dict[str, list[tuple[str, int]]]
    all_readers: set[str]
    weights: dict[str, tuple[int, int]]
    biases: dict[str, str] = field(default_factory=dict)   # anchor -> its float bias constant
    #: int16 groups: anchor -> the activation tensor it reads as int16 (symmetric, ``int16_qmax`` levels a side)
    int16: dict[str, str] = field(default_factory=dict)
    #: the plans of the If branches / Loop, Scan bodies quantized as graphs of their own ("If_3.then_branch" ->
    #: plan; subgraphs.py)
    subgraphs: dict[str, "QuantPlan"] = field(default_factory=dict)

    @property
    def int8_nodes(self) -> list[str]:
        return [d.node for d in self.decisions.values() if d.precision == "int8"]

    def counts(self) -> dict[str, dict[str, int]]:
        """precision -> op -> nodes, the nodes inside quantized subgraphs (If branches, loop bodies) included."""
        out: dict[str, dict[str, int]] = {p: {} for p in PRECISIONS}
        for d in self.decisions.values():
            out[d.precision][d.op] = out[d.precision].get(d.op, 0) + 1
        for sub in self.subgraphs.values():
            for p, ops in sub.counts().items():
                for op_, k in ops.items():
                    out[p][op_] = out[p].get(op_, 0) + k
        return out

    def fp32_reasons(self) -> dict[str, list[str]]:
        """reason -> nodes kept fp32 for it (nodes of ops that have no int8 form are not listed)."""
        out: dict[str, list[str]] = {}
        for d in self.decisions.values():
            if d.precision == "fp32" and d.reason and not d.reason.startswith("no int8"):
                out.setdefault(d.reason, []).append(d.node)
        return out

    def summary(self) -> str:
        c = self.counts()
        wide = f", {sum(c['int16'].values())} int16" if c["int16"] else ""
        lines = [f"quantization: {sum(c['int8'].values())} nodes int8{wide}, {sum(c['fp32'].values())} fp32 "
                 f"(activations {self.options.storage}, weights int8 "
                 f"{'per channel' if self.options.per_channel else 'per tensor'}, calibration "
                 f"{self.options.calib_mode})"]
        for p in PRECISIONS:
            if c[p]:
                lines.append(f"  {p}: " + ", ".join(f"{op} x{k}" for op, k in sorted(c[p].items())))
        reasons = self.fp32_reasons()
        if reasons:
            lines.append("  kept fp32:")
            for why, nodes in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
                shown = ", ".join(nodes[:4]) + (f", ... ({len(nodes)})" if len(nodes) > 4 else "")
                lines.append(f"    {why}: {shown}")
        for key, sub in self.subgraphs.items():
            c = sub.counts()
            lines.append(f"  {key}: {sum(c['int8'].values())} int8, {sum(c['fp32'].values())} fp32")
        return "\n".join(lines)


# -- deciding -----------------------------------------------------------------------------------------------------
def _excluded_by(n: Node, patterns: Sequence[str]) -> str | None:
    for p in patterns:
        if p == n.name or p == n.op or re.fullmatch(p, n.name):
            return p
    return None


def _const(g: Graph, t: str) -> np.ndarray | None:
    return g.tensors[t].const if t else None


def _float_activation(g: Graph, t: str) -> bool:
    info = g.tensors[t]
    return info.const is None and info.dtype == "float32"


def _anchor_refusal(g: Graph, n: Node) -> str | None:
    """Why anchor ``n`` cannot be an int8 group, or None."""
    x = g.tensors[n.inputs[0]]
    if not _float_activation(g, n.inputs[0]):
        return "the input is a constant or not float32"
    w = _const(g, n.inputs[1])
    if w is None:
        return _two_activation_refusal(g, n)
    if w.dtype != np.float32:
        return f"the weights are {w.dtype}; expected float32"
    if n.op == "Conv":
        if x.rank != 4 or w.ndim != 4:
            return f"a {(x.rank or 2) - 2}-D convolution; the int8 conv kernels are 2-D"
        if len(n.inputs) > 2 and n.inputs[2] and _const(g, n.inputs[2]) is None:
            return "the bias is computed, not a constant"
        return None
    if w.ndim != 2:
        return f"the weights have rank {w.ndim}; expected 2"
    if (x.rank or 0) < 2:
        return f"the input has rank {x.rank}; expected 2 or more"
    if n.op == "Gemm":
        if n.attrs["transA"]:
            return "Gemm with transA=1"
        if n.attrs["alpha"] != 1.0 or (len(n.inputs) > 2 and n.inputs[2] and n.attrs["beta"] != 1.0):
            return f"Gemm with alpha={n.attrs['alpha']}, beta={n.attrs['beta']}"
        if len(n.inputs) > 2 and n.inputs[2] and _const(g, n.inputs[2]) is None:
            return "the bias C is computed, not a constant"
    return None


def _two_activation(g: Graph, n: Node) -> bool:
    return n.op == "MatMul" and _const(g, n.inputs[1]) is None


def _two_activation_refusal(g: Graph, n: Node) -> str | None:
    """Why a MatMul|Gemm whose B is computed cannot be an int8 group, or None (see the module docstring)."""
    if n.op != "MatMul":
        return f"the weights of the {n.op} are computed, not constants"
    if not _float_activation(g, n.inputs[1]):
        return "B is not a float32 activation"
    ranks = (g.tensors[n.inputs[0]].rank, g.tensors[n.inputs[1]].rank)
    if any(r is None or r < 2 for r in ranks):
        return f"A and B have ranks {ranks[0]} and {ranks[1]}; the int8 batched matmul takes rank >= 2"
    return None


def _channels(g: Graph, n: Node) -> tuple[int, int]:
    """(weight slot, output-channel axis) of anchor ``n``."""
    if n.op == "Conv":
        return 1, 0
    if n.op == "Gemm" and n.attrs["transB"]:
        return 1, 0
    return 1, 1


def _sole_reader(g: Graph, t: str) -> Node | None:
    readers = g.consumers(t)
    return readers[0] if len(readers) == 1 and t not in g.outputs else None


def _const_scalar_bounds(g: Graph, n: Node) -> bool:
    return all(not t or (_const(g, t) is not None and _const(g, t).size == 1) for t in n.inputs[1:])


def _same_shape(g: Graph, a: str, b: str) -> bool:
    sa, sb = g.tensors[a].shape, g.tensors[b].shape
    return sa is not None and sa == sb and None not in sa  # symbolic dims (a batch "N") bind alike


def _grow(g: Graph, anchor: Node, claimed: set[str], excluded: set[str]) -> _Unit:
    """The anchor's group: bias Add (MatMul), residual Add, Relu / Clip, as far as the graph allows."""
    nodes, cur = [anchor], anchor.outputs[0]
    residual = None
    two = _two_activation(g, anchor)

    def take(r: Node | None, ops: Iterable[str]) -> bool:
        return r is not None and r.op in ops and r.name not in claimed and r.name not in excluded

    r = _sole_reader(g, cur)
    if anchor.op == "MatMul" and not two and take(r, ("Add",)):
        n_out = g.tensors[anchor.inputs[1]].const.shape[_channels(g, anchor)[1]]
        other = [t for t in r.inputs if t != cur]
        b = _const(g, other[0]) if len(other) == 1 else None
        if b is not None and b.size == n_out and b.shape[-1:] == (n_out,) and b.dtype == np.float32:
            nodes.append(r)
            cur = r.outputs[0]
            r = _sole_reader(g, cur)
    if take(r, ("Add",)):
        other = [(i, t) for i, t in enumerate(r.inputs) if t != cur]
        if len(other) == 1 and _float_activation(g, other[0][1]) and _same_shape(g, cur, other[0][1]):
            nodes.append(r)
            residual = (r.name, other[0][0])
            cur = r.outputs[0]
            r = _sole_reader(g, cur)
    if take(r, ("Relu",)) or (take(r, ("Clip",)) and _const_scalar_bounds(g, r)):
        nodes.append(r)
        cur = r.outputs[0]
    ins = [(anchor.name, 0), (anchor.name, 1)] if two else [(anchor.name, 0)]
    return _Unit("group", nodes, cur, ins, residual)


def _group_bias(g: Graph, u: _Unit) -> str | None:
    """The float bias constant of group ``u``: Conv's B, Gemm's C, or the constant of MatMul's bias Add."""
    anchor = u.nodes[0]
    if anchor.op in ("Conv", "Gemm"):
        return anchor.inputs[2] if len(anchor.inputs) > 2 and anchor.inputs[2] else None
    if len(u.nodes) > 1 and u.nodes[1].op == "Add":
        other = [t for t in u.nodes[1].inputs if t != anchor.outputs[0]]
        if len(other) == 1 and g.tensors[other[0]].const is not None:
            return other[0]
    return None


def _read_as_int8(g: Graph, u: _Unit, by_node: dict[str, _Unit]) -> bool:
    for r in g.consumers(u.out):
        v = by_node.get(r.name)
        if v is None or v is u:
            continue
        reads = [(r.name, i) for i, t in enumerate(r.inputs) if t == u.out]
        if any(s in v.int8_in and (v.kind == "group" or v.int8_out) for s in reads):
            return True
        if v.residual in reads and v.int8_out:
            return True
    return False


def plan_quantization(graph: Graph, options: QuantizeOptions | None = None) -> QuantPlan:
    """Decide, per node of ``graph``, int8 or fp32 (see the module docstring); nothing in the graph changes."""
    options = options or QuantizeOptions()
    g = graph
    topo = g.topo()
    decisions: dict[str, Decision] = {}
    excluded: set[str] = set()
    wide: set[str] = set()   # anchors asked int16
    guarded = dict(options.kept_float)
    for n in topo:
        p = _excluded_by(n, options.exclude)
        if n.name in guarded:
            excluded.add(n.name)
            decisions[n.name] = Decision(n.name, n.op, "fp32", f"range guard: {guarded[n.name]}")
        elif p is not None:
            excluded.add(n.name)
            decisions[n.name] = Decision(n.name, n.op, "fp32", f"excluded by exclude={p!r}")
        elif options.precision_of(n) == "fp32":
            excluded.add(n.name)
            decisions[n.name] = Decision(n.name, n.op, "fp32", "precision= asks fp32")
        elif options.precision_of(n) == "int16":
            # NOTE: an error, not a silent fp32: int16 is a property of a whole group, named by its anchor, and a
            # pattern that catches other ops too is most likely a mistake the user wants to hear about
            if n.op not in ANCHORS:
                raise InputError(f"precision= asks int16 for node '{n.name}' ({n.op}); int16 applies to "
                                 f"Conv/MatMul/Gemm groups: name the anchor ({', '.join(ANCHORS)}), its bias Add "
                                 "and activation follow it")
            wide.add(n.name)
    units: list[_Unit] = []
    claimed: set[str] = set()
    for n in topo:
        if n.name in excluded or n.name in claimed:
            continue
        if n.op in ANCHORS:
            why = _anchor_refusal(g, n)
            if why:
                decisions[n.name] = Decision(n.name, n.op, "fp32", why)
                continue
            if n.name in wide and _two_activation(g, n):
                # NOTE: int16 needs constant s8 weights (W8A16); two activations have no such form: keep it wider
                decisions[n.name] = Decision(n.name, n.op, "fp32", "precision= asks int16, which a MatMul of two "
                                             "activations does not have (B computed): kept fp32")
                continue
            u = _grow(g, n, claimed, excluded)
            if n.name in wide:
                u.int16, u.int8_in = True, []
        elif n.op == "Add":
            a, b = n.inputs[0], n.inputs[1]
            if not (_float_activation(g, a) and _float_activation(g, b) and _same_shape(g, a, b)):
                decisions[n.name] = Decision(n.name, n.op, "fp32", "no int8 form: an Add with a constant or "
                                             "broadcasting operands")
                continue
            u = _Unit("add", [n], n.outputs[0], [(n.name, 0), (n.name, 1)])
            r = _sole_reader(g, u.out)
            if r is not None and r.op == "Relu" and r.name not in excluded:
                u.nodes.append(r)
                u.out = r.outputs[0]
        elif n.op in MOVES and _float_activation(g, n.inputs[0]) and not any(
                t and g.consumers(t) for t in n.outputs[1:]):
            why = move_refusal(g, n)
            if why:
                decisions[n.name] = Decision(n.name, n.op, "fp32", f"no int8 form: {why}")
                continue
            u = _Unit("move", [n], n.outputs[0], [(n.name, 0)])
        elif n.op in POOLS and _float_activation(g, n.inputs[0]):
            u = _Unit("pool", [n], n.outputs[0], [(n.name, 0)])
        elif n.op == "Concat" and n.inputs and all(_float_activation(g, t) for t in n.inputs):
            u = _Unit("concat", [n], n.outputs[0], [(n.name, i) for i in range(len(n.inputs))])
        else:
            continue
        claimed.update(m.name for m in u.nodes)
        units.append(u)

    # A unit writes int8 when an int8 op reads its output. Readers usually come later in topological order, but a
    # group's residual Add can read a unit that comes after the group's anchor: iterate to the fixed point (a unit
    # only ever turns int8, so this ends).
    # A tensor an int16 group reads stays float32 even when int8 ops read it too (they quantize it themselves):
    # written as u8 it would reach the int16 group with u8's levels, and the group would gain nothing.
    by_node = {m.name: u for u in units for m in u.nodes}
    read16 = {u.nodes[0].inputs[0] for u in units if u.int16}
    changed = True
    while changed:
        changed = False
        for u in reversed(units):
            if not u.int8_out and not u.int16 and u.out not in read16 and _read_as_int8(g, u, by_node):
                u.int8_out = changed = True
    active = [u for u in units if u.kind == "group" or u.int8_out]

    quantized: dict[str, str] = {}
    readers: dict[str, list[tuple[str, int]]] = {}
    all_readers: set[str] = set()
    weights: dict[str, tuple[int, int]] = {}
    biases: dict[str, str] = {}
    int16: dict[str, str] = {}
    for u in active:
        ins = list(u.int8_in) + ([u.residual] if u.residual is not None and u.int8_out else [])
        for node, slot in ins:
            t = g.node(node).inputs[slot]
            quantized.setdefault(t, t)
            readers.setdefault(t, []).append((node, slot))
        if u.int8_out:
            all_readers.add(u.out)
            src = g.node(u.nodes[0].name).inputs[0] if u.kind == "move" else u.out
            quantized[u.out] = src
        if u.kind == "group" and not _two_activation(g, u.nodes[0]):
            weights[u.name] = _channels(g, u.nodes[0])
            b = _group_bias(g, u)
            if b:
                biases[u.name] = b
        if u.int16:
            int16[u.name] = u.nodes[0].inputs[0]
        out = options.storage if u.int8_out else "float32"
        for m in u.nodes:
            what = "" if m is u.nodes[0] else f"fused into {u.name}"
            decisions[m.name] = Decision(m.name, m.op, "int16" if u.int16 else "int8", what, u.name, out)
    for u in units:
        if u not in active:
            for m in u.nodes:
                decisions[m.name] = Decision(m.name, m.op, "fp32", "no int8 op reads its output")
    # A group whose only reader is an int8 Concat writes straight in the Concat's parameters: the Concat would
    # requantize it to them anyway, so this saves a rounding and turns the Concat's part for it into a copy.
    for u in active:
        if u.kind != "concat" or not u.int8_out:
            continue
        for t in u.nodes[0].inputs:
            w = by_node.get(g.producer(t).name) if g.producer(t) is not None else None
            if (w is not None and w.kind == "group" and w.out == t and w.int8_out and t not in g.outputs
                    and len(g.consumers(t)) == 1 and u.nodes[0].inputs.count(t) == 1):
                quantized[t] = u.out
    # A move takes its input's parameters; chase chains of moves to a tensor that is calibrated.
    for t in list(quantized):
        src = quantized[t]
        while quantized.get(src, src) != src:
            src = quantized[src]
        quantized[t] = src
    # LSTM/GRU with constant weights: dynamic int8, nothing to calibrate (dynamic_rnn.py; realized in insert_qdq)
    for n in topo:
        if n.op in DYNAMIC_RNN_OPS and n.name not in decisions:
            why = dynamic_rnn_refusal(g, n)
            decisions[n.name] = (Decision(n.name, n.op, "fp32", why) if why else
                                 Decision(n.name, n.op, "int8", DYNAMIC_RNN_DECISION, n.name, "float32"))
    for n in topo:
        decisions.setdefault(n.name, Decision(n.name, n.op, "fp32", f"no int8 form for {n.op}"))
    observe = list(dict.fromkeys(list(quantized.values()) + list(int16.values())))
    return QuantPlan(options, {n.name: decisions[n.name] for n in topo}, observe, quantized, readers, all_readers,
                     weights, biases, int16)


# -- parameters ---------------------------------------------------------------------------------------------------
def activation_params(lo: float, hi: float, dtype: str) -> tuple[np.float32, int]:
    """(scale, zero point) mapping [lo, hi] (widened to hold 0) onto ``dtype``'s 256 levels; 0 is exact."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qlo, qhi = _QMAX[dtype]
    span = hi - lo
    if not span > 0.0:
        span = 1.0  # a tensor that was always 0: any scale represents it
    scale = np.float32(span / (qhi - qlo))
    zp = int(np.clip(np.rint(qlo - lo / float(scale)), qlo, qhi))
    return scale, zp


def weight_params(w: np.ndarray, axis: int | None,
                  min_scale: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scales) symmetric in [-127, 127], per slice along ``axis`` (None: per tensor);
    no scale below ``min_scale`` (per slice or one value)."""
    w = np.asarray(w, np.float32)
    if axis is None:
        amax = np.asarray(np.abs(w).max() if w.size else 0.0, np.float64)
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=other).astype(np.float64) if w.size else np.zeros(w.shape[axis])
    scale = np.where(amax > 0, amax / WEIGHT_QMAX, 1.0)
    if min_scale is not None:
        floor = np.asarray(min_scale, np.float64)
        scale = np.maximum(scale, floor.max() if axis is None else floor)
    scale = scale.astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return q, scale


# -- inserting ----------------------------------------------------------------------------------------------------
def insert_qdq(graph: Graph, plan: QuantPlan, stats: CalibrationStats | None) -> Graph:
    """Write ``plan`` into ``graph`` as QDQ: a Q -> DQ pair per quantized tensor (ranges from ``stats``), and
    ``DequantizeLinear(int8 weights, scales)`` for each group's weights. Returns the graph (changed in place)."""
    g = graph
    storage = plan.options.storage
    params: dict[str, tuple[np.float32, int]] = {}
    for t in plan.observe:
        rng = stats.range(t) if stats is not None and t in stats else None
        if rng is None:
            raise InputError(f"calibration saw no finite value of tensor '{t}' (read by "
                             f"{', '.join(n for n, _ in plan.readers.get(t, [])) or 'int8 ops'}); "
                             "it cannot be quantized: check the calibration data, or exclude= its readers")
        params[t] = activation_params(rng[0], rng[1], storage)
    wide = {a: int16_range(g, plan.weights[a], stats, a, t) for a, t in plan.int16.items()}   # anchor -> (amax, K, s0)
    w_scales: dict[str, np.ndarray] = {}
    for anchor, (slot, axis) in plan.weights.items():
        n = g.node(anchor)
        w = g.tensors[n.inputs[slot]].const
        x = n.inputs[0]
        x_scale = wide[anchor][2] if anchor in wide else (
            params[plan.quantized[x]][0] if plan.quantized.get(x) in params else None)
        q, scale = weight_params(w, axis if plan.options.per_channel else None,
                                 _bias_floor(g, plan, anchor, x_scale, w.shape[axis]))
        w_scales[anchor] = scale
        mean = stats.means.get(n.inputs[0]) if plan.options.bias_correction and stats is not None else None
        if mean is not None and mean.mean is not None:
            shape = [1] * w.ndim
            if plan.options.per_channel:
                shape[axis] = -1
            w_dq = q.astype(np.float32) * scale.reshape(shape)
            correct_bias(g, plan, anchor, w, w_dq, mean.mean, axis)
            n = g.node(anchor)
        qn = g.add_const(q, f"{n.inputs[slot]}/int8")
        sn = g.add_const(scale if plan.options.per_channel else scale.reshape(()), f"{n.inputs[slot]}/scale")
        dq = g.add("DequantizeLinear", [qn, sn], name=f"{anchor}/weights", axis=axis)
        ins = list(n.inputs)
        ins[slot] = dq
        g.set_inputs_of(n, ins)
    for t, src in plan.quantized.items():  # NOTE: after the weights, whose bias floor reads the anchors' inputs
        scale, zp = params[src]
        _insert_pair(g, t, scale, zp, storage, plan.readers.get(t, []), t in plan.all_readers)
    # NOTE: after the int8 pairs: an int16 group reading a tensor that an int8 op writes reads its DQ
    for anchor, (amax, k, s0) in wide.items():
        bound = int_bias_bound(g, anchor, s0, w_scales[anchor])
        qmax = int16_qmax(k, bound)
        insert_int16(g, anchor, np.float32(amax / qmax), qmax)
    quantize_dynamic_rnn(g, [d.node for d in plan.decisions.values()
                             if d.precision == "int8" and d.op in DYNAMIC_RNN_OPS])
    return g


#: the int32 bias (bias / (x_scale * w_scale)) is kept within 2^30, half of int32, so the accumulator has headroom
BIAS_LIMIT = float(2 ** 30)


def _bias_floor(g: Graph, plan: QuantPlan, anchor: str, x_scale: float | None, n_out: int) -> np.ndarray | None:
    """Per output channel, the smallest weight scale that keeps the bias representable in int32.

    A channel whose weights are all near zero (BatchNorm folding with a tiny gamma does this) but whose bias is not
    would get a tiny weight scale, and its bias in units of ``x_scale * w_scale`` would overflow int32: such
    channels get a coarser weight scale instead (their weights contribute little anyway)."""
    b = plan.biases.get(anchor)
    if b is None or x_scale is None:
        return None
    bias = np.abs(np.broadcast_to(g.tensors[b].const.astype(np.float64).reshape(-1), (n_out,)))
    return bias / (float(x_scale) * BIAS_LIMIT)


def _insert_pair(g: Graph, t: str, scale: np.float32, zp: int, dtype: str, readers: list[tuple[str, int]],
                 every_reader: bool) -> None:
    """Q(t) -> DQ; the given (node, slot) readers, or every reader and graph output, read the DQ."""
    s = g.add_const(np.asarray(scale, np.float32), f"{t}/scale")
    z = g.add_const(np.asarray(zp, dtype), f"{t}/zero_point")
    qp = QuantParams((float(scale),), (int(zp),), dtype)
    if every_reader:
        was_output = t in g.outputs
        targets = [(c.name, i) for c in g.consumers(t) for i, x in enumerate(c.inputs) if x == t]
    else:
        was_output, targets = False, list(readers)
    src = t
    if was_output:  # the graph output keeps its name: it becomes the DQ's output
        src = g.unique_name(f"{t}/float")
        g.rename_tensor(t, src)
    q = g.add("QuantizeLinear", [src, s, z], name=f"{t}/quantize")
    g.set_tensor(g.tensors[q].with_(qparams=qp))
    dq = g.add("DequantizeLinear", [q, s, z], name=f"{t}/dequantize",
               outputs=[t] if was_output else None)
    for node, slot in targets:
        n = g.node(node)
        if n.inputs[slot] != src:
            continue
        ins = list(n.inputs)
        ins[slot] = dq
        g.set_inputs_of(n, ins)
    if was_output:
        g.set_outputs([dq if o == src else o for o in g.outputs])
