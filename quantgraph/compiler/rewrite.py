"""The rewrite engine: apply a RuleSet to a graph until nothing fires (with a round limit).

For every node (topological order) and every rule whose root can match the node's op, the engine matches the
pattern, checks that interior values are used only inside the match (unless the rule declares them ``shared``), and
calls the rule. A rule returns a tensor (a matched one or one it emitted) that replaces the root's output, or a
:class:`Refusal`. The engine then creates the emitted constants and nodes (named ``<rule>/<Op>``), redirects the
readers of the root, keeps graph output names stable, erases what became dead and counts the firing per rule.

A rule that raises (or returns something that is not a tensor, or emits a node the IR rejects) has a bug: a rule
must refuse what it cannot handle with ``m.fail(reason)``. With ``config.strict`` (``QUANTGRAPH_STRICT=1``, always
on in tests) that is a :class:`PassError` naming the rule and the node; otherwise (users) that one rewrite is
skipped with a logged warning naming the rule, the node and the exception, and the model still compiles.

Passes report counts through :func:`record`; the pipeline collects them into its ``PassReport``.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass, field
from typing import Iterator

from quantgraph import config
from quantgraph.compiler.pattern import PLACEHOLDER, Emit, Match, Refusal, Rule, RuleSet, Value, _Tracer
from quantgraph.errors import PassError, QuantgraphError
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.shapes import shapes_compatible

log = logging.getLogger(__name__)

# -- counters shared by all passes ----------------------------------------------------------------------------
_counts: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("quantgraph_pass_counts", default=None)


def record(key: str, n: int = 1) -> None:
    """Count ``n`` events named ``key`` (e.g. a rule firing) for the pass that is running."""
    d = _counts.get()
    if d is not None and n:
        d[key] = d.get(key, 0) + n


@contextlib.contextmanager
def collect_counts() -> Iterator[dict[str, int]]:
    """Collect :func:`record` calls made inside the block into the yielded dict."""
    d: dict[str, int] = {}
    token = _counts.set(d)
    try:
        yield d
    finally:
        _counts.reset(token)


# -- the engine -----------------------------------------------------------------------------------------------
@dataclass
class Miss:
    """The nearest miss of a rule: where, and why (a rule's own refusal beats any structural miss)."""

    node: str
    reason: str
    depth: int


@dataclass
class RewriteStats:
    counts: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # rule -> [(node, reason)]
    nearest: dict[str, Miss] = field(default_factory=dict)
    rounds: int = 0


def _is_live(graph: Graph, t: str) -> bool:
    return t in graph.outputs or bool(graph.consumers(t))


def _interior_leak(graph: Graph, rule: Rule, m: Match) -> str | None:
    """Why an interior node's output escapes the match, or None. The root's producer is exempt."""
    names = {n.name for n in m.matched}
    shared = {m.node(k).name for k in rule.shared if k in m._env.nodes}
    for n in m.matched[1:]:
        if n.name in shared:
            continue
        for t in n.outputs:
            if not t:
                continue
            if t in graph.outputs:
                return f"interior value '{t}' ({n.op}) is a graph output"
            outside = [c.name for c in graph.consumers(t) if c.name not in names]
            if outside:
                return f"interior value '{t}' ({n.op}) is also used by {', '.join(outside[:3])}"
    return None


def _splice(graph: Graph, rule: Rule, m: Match, result: str) -> None:
    """Create the emitted constants/nodes, make the root's readers read ``result``, erase the dead match."""
    real: dict[str, str] = {}

    def resolve(t: str) -> str:
        if t.startswith(PLACEHOLDER):
            if t not in real:
                raise PassError(f"rule '{rule.name}' used '{t}' before emitting it")
            return real[t]
        return t

    try:
        for e in m.emits:
            if isinstance(e, Emit):
                try:
                    out = graph.add(e.op, [resolve(i) for i in e.inputs], name=f"{rule.name}/{e.op}",
                                    outputs=[graph.unique_name(f"{rule.name}/{e.op}")], **e.attrs)
                    real[e.out] = out[0] if isinstance(out, tuple) else out
                except Exception as exc:  # the op's own checks rejected what the rule built
                    why = str(exc) if isinstance(exc, QuantgraphError) else f"{type(exc).__name__}: {exc}"
                    raise PassError(f"rule '{rule.name}' emitted an invalid {e.op} at '{m.root}': {why}") from exc
            else:
                real[e.out] = graph.add_const(e.value, name=graph.unique_name(f"{rule.name}/{e.name}"))
        new = resolve(result)
        old_info, new_info = graph.tensors[m.root], graph.tensors[new]
        if old_info.dtype != new_info.dtype or not shapes_compatible(old_info.shape, new_info.shape):
            raise PassError(f"rule '{rule.name}' replaced '{m.root}' ({old_info.describe()}) with '{new}' "
                            f"({new_info.describe()}); the type must not change")
    except PassError:
        # NOTE: nothing reads the emitted nodes yet, so erasing them (readers first) restores the graph
        for t in reversed(list(real.values())):
            p = graph.producer(t)
            if p is not None and p.name in graph:
                graph.erase(p)
        raise
    was_output = m.root in graph.outputs
    graph.replace_uses(m.root, new)
    pending = list(m.matched)
    while pending:  # erase dead matched nodes, readers before producers
        dead = [n for n in pending if n.name in graph and not any(t and _is_live(graph, t) for t in n.outputs)]
        for n in dead:
            graph.erase(n)
        if not dead:
            break
        pending = [n for n in pending if n.name in graph]
    # NOTE: graph outputs keep their names: the replacement takes over the old name once the old one is free.
    if was_output and m.root not in graph.tensors and graph.producer(new) is not None and new not in graph.inputs:
        graph.rename_tensor(new, m.root)
    for t in real.values():  # emitted values nobody reads (a rule emitted more than it used)
        p = graph.producer(t)
        if p is not None and p.name in graph and not any(o and _is_live(graph, o) for o in p.outputs):
            graph.erase(p)


def _try(graph: Graph, rule: Rule, node: Node, stats: RewriteStats) -> bool:
    """Match ``rule`` at ``node``'s first output and apply it; True when it fired."""
    root = node.outputs[0]
    tracer = _Tracer()
    matches = rule.matches(graph, root, tracer)
    while True:
        try:  # NOTE: matching runs the rule's own `where` predicates, so it can raise too
            env = next(matches, None)
        except Exception as exc:
            _rule_bug(stats, rule, node, f"rule '{rule.name}' raised {type(exc).__name__} while matching: {exc}", exc)
            return False
        if env is None:
            break
        m = Match(graph, rule, root, env)
        leak = _interior_leak(graph, rule, m)
        if leak is not None:
            _refuse(stats, rule, node, leak, depth=len(env.matched))
            continue
        try:
            result = rule.fn(m)
        except Exception as exc:
            _rule_bug(stats, rule, node, f"rule '{rule.name}' raised {type(exc).__name__}: {exc}", exc)
            continue
        if result is None or isinstance(result, Refusal):
            reason = result.reason if isinstance(result, Refusal) else "the rule returned nothing"
            _refuse(stats, rule, node, reason, depth=10 ** 6)
            continue
        if not isinstance(result, str):
            _rule_bug(stats, rule, node,
                      f"rule '{rule.name}' returned {type(result).__name__}; expected a tensor or m.fail()")
            continue
        if result == root:
            continue
        if root in graph.outputs and not result.startswith(PLACEHOLDER) and (
                result in graph.inputs or result in graph.outputs or graph.producer(result) is None):
            _refuse(stats, rule, node, f"'{root}' is a graph output and '{result}' cannot take its name",
                    depth=10 ** 6)
            continue
        try:
            _splice(graph, rule, m, str(result))
        except PassError as exc:
            _rule_bug(stats, rule, node, exc.message, exc)
            continue
        stats.counts[rule.name] = stats.counts.get(rule.name, 0) + 1
        return True
    if tracer.depth >= 0:
        near = stats.nearest.get(rule.name)
        if near is None or tracer.depth > near.depth:
            stats.nearest[rule.name] = Miss(node.name, tracer.reason, tracer.depth)
    return False


def _rule_bug(stats: RewriteStats, rule: Rule, node: Node, message: str, exc: BaseException | None = None) -> None:
    """A rule misbehaved at ``node``: a PassError under ``config.strict``, else a warning and a skipped rewrite."""
    if config.get().strict:
        raise PassError(message, node.name, node.op) from exc
    log.warning("node '%s' (%s): %s; this rewrite is skipped (a rule must refuse with m.fail(reason))",
                node.name, node.op, message)
    _refuse(stats, rule, node, message, depth=10 ** 6)


def _refuse(stats: RewriteStats, rule: Rule, node: Node, reason: str, depth: int) -> None:
    stats.refusals.setdefault(rule.name, []).append((node.name, reason))
    near = stats.nearest.get(rule.name)
    if near is None or depth >= near.depth:
        stats.nearest[rule.name] = Miss(node.name, reason, depth)


def apply_rules(graph: Graph, rules: RuleSet, max_rounds: int = 16, name: str = "rewrite") -> RewriteStats:
    """Rewrite ``graph`` in place to a fixed point; raises PassError naming the rules still firing after
    ``max_rounds`` rounds."""
    stats = RewriteStats()
    fired: dict[str, int] = {}
    for rnd in range(max_rounds):
        previous, fired = fired, {}
        for node in graph.topo():
            if node.name not in graph or not node.outputs or not node.outputs[0]:
                continue
            node = graph.node(node.name)
            if not _is_live(graph, node.outputs[0]):
                continue
            for r in rules.by_op.get(node.op, ()):
                before = stats.counts.get(r.name, 0)
                if _try(graph, r, node, stats):
                    fired[r.name] = fired.get(r.name, 0) + stats.counts[r.name] - before
                    break
        stats.rounds = rnd + 1
        if not fired:
            break
    else:
        # NOTE: the last two rounds, so both halves of a rule cycle (A ==> B, B ==> A) are named
        last = {k: fired.get(k, 0) + previous.get(k, 0) for k in fired.keys() | previous.keys()}
        still = ", ".join(f"{k} ({v}x)" for k, v in sorted(last.items()))
        raise PassError(f"rewrite '{name}' did not reach a fixed point in {max_rounds} rounds; still firing: {still}")
    graph.remove_unused_constants()
    for k, v in stats.counts.items():
        record(k, v)
    if config.get().debug >= 2:
        for r in rules:
            near = stats.nearest.get(r.name)
            fired_n = stats.counts.get(r.name, 0)
            if near is not None:
                log.info("rule %s: fired %d; nearest miss at '%s': %s", r.name, fired_n, near.node, near.reason)
            else:
                log.info("rule %s: fired %d; no candidate root", r.name, fired_n)
    return stats


class RewritePass:
    """A pass (``Graph -> Graph``) applying a RuleSet; keeps the stats of its last run (``counts``, ``refusals``)."""

    def __init__(self, rules: RuleSet, max_rounds: int, name: str):
        self.rules, self.max_rounds, self.__name__ = rules, max_rounds, name
        self.stats = RewriteStats()

    def __call__(self, graph: Graph) -> Graph:
        self.stats = apply_rules(graph, self.rules, self.max_rounds, self.__name__)
        return graph

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.stats.counts)

    @property
    def refusals(self) -> dict[str, list[tuple[str, str]]]:
        return self.stats.refusals

    def reasons(self, rule_name: str) -> list[str]:
        """Every refusal reason ``rule_name`` gave in the last run."""
        return [r for _, r in self.stats.refusals.get(rule_name, [])]

    def __repr__(self) -> str:
        return f"rewrite({self.rules.name})"


def rewrite(rules: RuleSet, max_rounds: int = 16, name: str | None = None) -> RewritePass:
    """Pass factory: a pass applying ``rules`` to a fixed point (at most ``max_rounds`` rounds)."""
    return RewritePass(rules, max_rounds, name or f"rewrite_{rules.name}")


__all__ = ["rewrite", "apply_rules", "RewritePass", "RewriteStats", "record", "collect_counts", "Value", "Match"]
