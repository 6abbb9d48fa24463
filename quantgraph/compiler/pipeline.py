"""Pipelines: ordered passes (plain ``Graph -> Graph`` functions), instrumented, and the levels O0..O3.

    pipeline = Pipeline("mine", [infer_shapes, fold_constants, rewrite(rules.FUSIONS, name="fuse_epilogues")])
    graph, reports = optimize(graph, opt_level=2)          # or build(2).run(graph)

For each pass the pipeline measures the time, verifies the graph when ``config.get().verify`` (always in tests),
dumps it to ``{dump_dir}/{i:02d}_{name}.txt`` when ``config.get().dump_dir`` is set, and records a
:class:`PassReport` (what changed, per-rule/per-op counts). A failing pass is re-raised as ``PassError`` naming the
pass and the passes that ran before it, with the cause chained. Passes never time, verify or dump themselves.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from quantgraph import config
from quantgraph.compiler import rules
from quantgraph.compiler.passes.convert_layout import convert_layout
from quantgraph.compiler.passes.eliminate_dead_code import eliminate_dead_code
from quantgraph.compiler.passes.fold_constants import fold_constants
from quantgraph.compiler.rewrite import collect_counts, rewrite
from quantgraph.errors import PassError, QuantgraphError
from quantgraph.ir.graph import Graph
from quantgraph.ir.printer import format_graph
from quantgraph.ir.verify import verify

log = logging.getLogger(__name__)

Pass = Callable[[Graph], Graph]


@dataclass
class PassReport:
    """What one pass did: whether the graph changed, event counts (rule firings, folded ops, ...), wall time."""

    name: str
    changed: bool
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0

    def __str__(self) -> str:
        what = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())) or "-"
        return (f"{self.name:28s} {'changed' if self.changed else 'no-op':8s} {self.nodes_before:5d} -> "
                f"{self.nodes_after:5d} nodes  {self.seconds * 1e3:8.1f} ms  {what}")


@dataclass
class PassContext:
    """Options for running a pipeline: passes to skip, and overrides of the verify/dump knobs."""

    disabled: frozenset[str] = frozenset()
    verify: bool | None = None
    dump_dir: str | None = None


def pass_name(p: Pass) -> str:
    return getattr(p, "__name__", None) or type(p).__name__


def _fingerprint(graph: Graph) -> tuple:
    """Cheap structural identity: node names, ops, inputs and attributes' repr; outputs."""
    return (tuple((n.name, n.op, n.inputs, n.outputs, repr(sorted(n.attrs.items(), key=lambda kv: kv[0])))
                  for n in graph.topo()), tuple(graph.outputs), len(graph.tensors))


class Pipeline:
    """Passes run in order; ``pipeline(graph)`` returns the graph, ``run`` also the reports."""

    def __init__(self, name: str, passes: Sequence[Pass]):
        self.name = name
        self.passes = list(passes)

    def __iter__(self) -> Iterator[Pass]:
        return iter(self.passes)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, [{', '.join(pass_name(p) for p in self.passes)}])"

    def __call__(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        return self.run(graph, ctx)[0]

    def run(self, graph: Graph, ctx: PassContext | None = None) -> tuple[Graph, list[PassReport]]:
        ctx = ctx or PassContext()
        cfg = config.get()
        do_verify = cfg.verify if ctx.verify is None else ctx.verify
        dump_dir = ctx.dump_dir or cfg.dump_dir
        reports: list[PassReport] = []
        done: list[str] = []
        for i, p in enumerate(self.passes):
            name = pass_name(p)
            if name in ctx.disabled:
                continue
            before = _fingerprint(graph)
            n_before = len(graph)
            t0 = time.perf_counter()
            try:
                with collect_counts() as counts:
                    out = p(graph)
                if out is None:
                    raise PassError(f"pass '{name}' returned None; a pass must return the graph")
                graph = out
                if do_verify:
                    verify(graph)
            except QuantgraphError as exc:
                raise PassError(f"pass '{name}' failed after [{', '.join(done)}]: {exc.message}", exc.node,
                                exc.op) from exc
            except Exception as exc:
                raise PassError(f"pass '{name}' failed after [{', '.join(done)}]: {type(exc).__name__}: "
                                f"{exc}") from exc
            seconds = time.perf_counter() - t0
            report = PassReport(name, _fingerprint(graph) != before, dict(counts), seconds, n_before, len(graph))
            reports.append(report)
            done.append(name)
            log.debug("%s: %s", self.name, report)
            if dump_dir:
                os.makedirs(dump_dir, exist_ok=True)
                with open(os.path.join(dump_dir, f"{i:02d}_{name}.txt"), "w") as f:
                    f.write(format_graph(graph))
        return graph, reports


# -- the named pipelines ----------------------------------------------------------------------------------------
def _realize() -> list[Pass]:
    # NOTE: realization sees the QDQ graph first: folding would turn the weights' DequantizeLinear into float
    # constants and lose their int8 values. The float-output rules run once every Q-rooted group is realized.
    return [rewrite(rules.REALIZE, name="realize_quantized"), rewrite(rules.REALIZE_FLOAT, name="realize_float_out"),
            fold_constants]


def _cleanup() -> list[Pass]:
    return [rewrite(rules.ELIMINATE, name="eliminate_identity"), rewrite(rules.CANCEL, name="cancel_transposes"),
            eliminate_dead_code]


def _fuse_attention() -> Pass:
    return rewrite(rules.ATTENTION, name="fuse_attention")


def _canonicalize(attention: bool = True) -> list[Pass]:
    return [rewrite(rules.BN_FOLDING, name="fold_batch_norm"), rewrite(rules.RECOGNIZE, name="recognize_patterns"),
            *([_fuse_attention()] if attention else []), fold_constants]


def _fuse() -> list[Pass]:
    return [rewrite(rules.FUSIONS, name="fuse_epilogues"), *_cleanup()]


def _layout() -> list[Pass]:
    return [convert_layout("NHWC"), rewrite(rules.CANCEL, name="cancel_transposes"), eliminate_dead_code]


def build(opt_level: int) -> Pipeline:
    """A fresh pipeline for ``opt_level`` (rewrite passes keep per-run stats, so each build has its own).

    No pass re-infers the whole graph: graphs are typed as they are built, rewrites infer the nodes they emit and
    constant folding re-infers what reads a folded value (``verify`` checks the types after every pass in tests).
    Constant folding runs once for the imported graph and once after BatchNorm folding and pattern recognition, which
    leave foldable weight arithmetic behind.
    """
    if opt_level == 0:
        return Pipeline("O0", [])
    passes = _realize() + _cleanup()
    if opt_level >= 2:
        passes += _canonicalize() + _fuse()
    if opt_level >= 3:
        passes += _layout()
    return Pipeline(f"O{opt_level}", passes)


def build_quantized(opt_level: int) -> tuple[Pipeline, Pipeline]:
    """``build(opt_level)`` split where the quantize pass goes: (before, after).

    Before: cleanup, BatchNorm folding and pattern recognition, so the quantizer sees primitive Conv / MatMul / Add /
    Relu with folded weights (the graph calibration observes). Attention is not fused yet: the quantizer decides
    whether its two MatMuls run int8. After: realization of the QDQ graph the quantizer wrote, attention fusion of
    the attention cores that stayed fp32, epilogue fusion of what else stayed fp32, and the layout pass.
    """
    if opt_level not in (1, 2, 3):
        raise ValueError(f"quantization needs opt_level 1..3, got {opt_level}")
    before = _realize() + _cleanup() + (_canonicalize(attention=False) if opt_level >= 2 else [])
    after = (_realize() + ([_fuse_attention()] + _fuse() if opt_level >= 2 else _cleanup())
             + (_layout() if opt_level >= 3 else []))
    return Pipeline(f"O{opt_level}-before-quantize", before), Pipeline(f"O{opt_level}-after-quantize", after)


def build_fusion(opt_level: int) -> Pipeline:
    """Epilogue fusion (O2+) and the layout pass (O3) alone, for a graph that went through the first half of
    ``build_quantized`` already (the sensitivity report's switched graph: fp32 units beside their QDQ twins)."""
    passes = (_fuse() if opt_level >= 2 else []) + (_layout() if opt_level >= 3 else [])
    return Pipeline(f"O{opt_level}-fusion", passes)


def optimize(graph: Graph, opt_level: int = 2, ctx: PassContext | None = None) -> tuple[Graph, list[PassReport]]:
    """Run the O<opt_level> pipeline on ``graph`` (mutated and returned) and return the per-pass reports."""
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0..3, got {opt_level}")
    return build(opt_level).run(graph, ctx)


def fusions_applied(reports: Sequence[PassReport]) -> dict[str, int]:
    """Total firings per rule across a pipeline run (for summaries)."""
    total: dict[str, int] = {}
    for r in reports:
        for k, v in r.counts.items():
            total[k] = total.get(k, 0) + v
    return total


__all__ = ["Pipeline", "PassContext", "PassReport", "optimize", "build", "build_quantized", "build_fusion",
           "fusions_applied"]
