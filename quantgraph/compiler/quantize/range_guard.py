"""Range guards: after calibration, the two patterns one shared activation scale cannot hold, kept fp32.

    extra = guarded_tensors(graph, plan)                 # also calibrate these (each int8 Concat's inputs)
    kept = range_conflicts(graph, plan, stats)           # node -> why it must stay fp32
    plan = plan_quantization(graph, replace(options, kept_float=tuple(kept.items())))

* **Sentinels.** A tensor that holds a few huge values next to ordinary ones: attention masks of -1e4 .. -3.4e38,
  padding or "invalid" markers written by ``Where``. One scale for both leaves the ordinary values no level at all
  (a -1e9 mask gives a step of 4e6), while clipping the range to the ordinary values would silently change what
  the sentinel means downstream (a mask of -3 no longer masks). So every int8 reader of such a tensor stays fp32.
  Detected on the calibration histogram: the largest magnitude is at least ``SENTINEL_ABS`` and no value lies
  between ``1 / SENTINEL_GAP`` of it and half of it (the huge values form a cluster far above everything else).
  Needs histogram observers (every ``calib_mode`` but "minmax").
* **Concat of unlike ranges.** Box coordinates in pixels next to class scores in 0..1: under the output's one
  scale the small input keeps ``256 / spread`` levels. A Concat whose output range spans ``CONCAT_SPREAD`` times
  one of its inputs' stays fp32, and so do the int8 ops that read it (they would quantize it with that one scale
  again). Its inputs then keep their own scales (their producers write them, or float).

Most transformer masks never reach an int8 op (the mask Add broadcasts and feeds Softmax, both fp32 by design);
the guards are for the graphs where they do.
"""
from __future__ import annotations

from quantgraph.compiler.quantize.stats import CalibrationStats
from quantgraph.ir.graph import Graph

#: magnitudes from which a value may be a sentinel rather than data
SENTINEL_ABS = 1e4
#: the empty gap (as a ratio of magnitudes) between the sentinels and the largest ordinary value
SENTINEL_GAP = 1e3
#: output span / input span of a Concat from which the input is too coarse under the output's scale (4 levels)
CONCAT_SPREAD = 64.0


def guarded_tensors(graph: Graph, plan) -> list[str]:
    """Tensors the guards need calibrated beyond ``plan.observe``: the inputs of every int8 Concat (a group
    writing straight into a Concat's parameters has no range of its own in the plan)."""
    want = set(plan.observe)
    extra: list[str] = []
    for n in _int8_concats(graph, plan):
        for t in n.inputs:
            if t not in want:
                want.add(t)
                extra.append(t)
    return extra


def range_conflicts(graph: Graph, plan, stats: CalibrationStats) -> dict[str, str]:
    """Node -> reason, for the int8 nodes of ``plan`` that must stay fp32 because of what ``stats`` saw."""
    kept: dict[str, str] = {}
    for t in plan.observe:
        big = _sentinel(stats, t)
        if big is not None:
            why = (f"its input '{t}' holds sentinel values (|x| up to {big:.3g}, nothing between "
                   f"{big / SENTINEL_GAP:.3g} and {big / 2:.3g}): one int8 scale cannot hold them and the data")
            for node in _readers_of(plan, t):
                kept.setdefault(node, why)
    for n in _int8_concats(graph, plan):
        out = _span(stats, plan.quantized.get(n.outputs[0], n.outputs[0]))
        if not out:
            continue
        spans = [(s, t) for t, s in ((t, _span(stats, t)) for t in n.inputs) if s]
        small = min(spans) if spans else None
        if small is None or out / small[0] < CONCAT_SPREAD:
            continue
        why = (f"Concat '{n.name}' joins ranges {out / small[0]:.0f}x apart ('{small[1]}' spans {small[0]:.3g}, "
               f"the output {out:.3g}): one int8 scale would leave the small input a few levels")
        kept.setdefault(n.name, why)
        for node in _readers_of(plan, n.outputs[0]):
            if node != n.name:
                kept.setdefault(node, why)
    return kept


def _int8_concats(graph: Graph, plan) -> list:
    return [graph.node(d.node) for d in plan.decisions.values()
            if d.op == "Concat" and d.precision == "int8" and d.group == d.node]


def _readers_of(plan, t: str) -> list[str]:
    """The int8 nodes that read ``t`` quantized: readers of every tensor that takes ``t``'s parameters."""
    src = plan.quantized.get(t, t)
    out: list[str] = []
    for name, s in plan.quantized.items():
        if s == src:
            out.extend(node for node, _ in plan.readers.get(name, []) if node not in out)
    return out


def _span(stats: CalibrationStats, t: str) -> float:
    """Width of ``t``'s chosen range widened to hold 0 (as the quantizer's scale sees it); 0 if unknown."""
    if t not in stats:
        return 0.0
    r = stats.range(t)
    return 0.0 if r is None else max(r[1], 0.0) - min(r[0], 0.0)


def _sentinel(stats: CalibrationStats, t: str) -> float | None:
    """The largest magnitude of ``t`` if it looks like a sentinel cluster above ordinary data, else None."""
    if t not in stats:
        return None
    obs = stats.observers[t]
    if obs.min is None or obs.kind != "histogram":
        return None
    big = max(abs(obs.min), abs(obs.max))
    if big < SENTINEL_ABS:
        return None
    mags = obs.magnitudes()
    w = 2.0 ** obs.exp
    # bin k of ``mags`` holds |x| in [k*w, (k+1)*w]
    k_small = int(big / SENTINEL_GAP / w)        # bins below this hold ordinary values
    k_half = int(big / 2 / w)                     # bins from this hold the cluster
    if k_small < 1 or mags[:k_small].sum() == 0:
        return None                               # no ordinary values at all: the huge values are the data
    if mags[k_small:k_half].sum() != 0:
        return None                               # values all along the way: a heavy tail, not sentinels
    return big
