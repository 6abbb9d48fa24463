"""The pattern language: declarative patterns over op types, attributes, constants and consumer counts.

    x, w, b = Var("x"), Const("w"), Const("b")
    conv = Op("Conv", x, w, name="conv")
    root = Op("Relu", Op("Add", conv, b, commute=True))

    @rule(root)
    def conv_bias_relu(m: Match):
        if len(m.consumers("conv")) > 1:
            return m.fail("conv output is also used outside the pattern")
        return m.emit("FusedConv", [m["x"], m["w"], m["b"]], activation="relu", **m.attrs("conv"))

A pattern is matched against a *tensor*: ``Op`` matches the tensor's producer (op type, ``where``/``attrs``
predicates, then its inputs in order, or in either order with ``commute=True``), ``Var`` any tensor (the same name
must bind the same tensor everywhere), ``Const`` a constant tensor (optionally of a given value), ``Any()`` anything.
``a | b`` tries alternatives in order, with backtracking. ``.dtype(...)`` and ``.rank(...)`` constrain the matched
tensor. A trailing ``...`` among an Op's inputs ignores the remaining inputs.

A rule never edits the graph: it returns its replacement (``m.emit`` builds new nodes, ``m.const`` new constants,
or it returns a matched tensor) or ``m.fail(reason)``. The engine in :mod:`quantgraph.compiler.rewrite` splices it in.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any as AnyType, Callable, Iterator, Sequence

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.shapes import num_elements
from quantgraph.ir.tensor import TensorInfo


# ----------------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class _Env:
    """Bindings of one partial match (immutable: each extension makes a new one, so backtracking is free)."""

    tensors: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    matched: tuple[Node, ...] = ()

    def bind_tensor(self, name: str, t: str) -> "_Env":
        return _Env({**self.tensors, name: t}, self.nodes, self.matched)

    def bind_node(self, name: str | None, n: Node, t: str) -> "_Env":
        tensors = {**self.tensors, name: t} if name else self.tensors
        nodes = {**self.nodes, name: n} if name else self.nodes
        matched = self.matched if any(m.name == n.name for m in self.matched) else self.matched + (n,)
        return _Env(tensors, nodes, matched)


class _Tracer:
    """Keeps the deepest structural miss (the 'nearest miss') for diagnostics."""

    def __init__(self) -> None:
        self.depth = -1
        self.reason = ""

    def miss(self, env: _Env, reason: str) -> None:
        if len(env.matched) > self.depth:
            self.depth, self.reason = len(env.matched), reason


class Pattern:
    """Base of all patterns; subclasses implement ``_match``."""

    _dtypes: frozenset[str] | None = None
    _ranks: frozenset[int] | None = None

    def __or__(self, other: "Pattern") -> "Pattern":
        return Alt(self, other)

    def dtype(self, *dtypes: str) -> "Pattern":
        """The matched tensor must have one of ``dtypes``."""
        p = copy.copy(self)
        p._dtypes = frozenset(dtypes)
        return p

    def rank(self, *ranks: int) -> "Pattern":
        """The matched tensor must have one of ``ranks`` (known rank)."""
        p = copy.copy(self)
        p._ranks = frozenset(ranks)
        return p

    def _types_ok(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> bool:
        info = g.tensors[t]
        if self._dtypes is not None and info.dtype not in self._dtypes:
            tr.miss(env, f"'{t}' is {info.dtype}; expected {'|'.join(sorted(self._dtypes))}")
            return False
        if self._ranks is not None and info.rank not in self._ranks:
            tr.miss(env, f"'{t}' has rank {info.rank}; expected {'|'.join(map(str, sorted(self._ranks)))}")
            return False
        return True

    def match(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        if self._types_ok(g, t, env, tr):
            yield from self._match(g, t, env, tr)

    def _match(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        raise NotImplementedError

    def root_ops(self) -> frozenset[str] | None:
        """Op types a match can be rooted at (None: any tensor; only Op/Alt-of-Op patterns can be rule roots)."""
        return None


class Var(Pattern):
    """Any tensor; binds ``name`` (a name seen twice must bind the same tensor)."""

    def __init__(self, name: str):
        self.name = name

    def _match(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        bound = env.tensors.get(self.name)
        if bound is None:
            yield env.bind_tensor(self.name, t)
        elif bound == t:
            yield env
        else:
            tr.miss(env, f"'{self.name}' is bound to '{bound}' but here it is '{t}'")

    def __repr__(self) -> str:
        return f"Var({self.name!r})"


class Any(Pattern):
    """Any tensor, unbound."""

    def _match(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        yield env

    def __repr__(self) -> str:
        return "Any()"


class Const(Pattern):
    """A constant tensor; ``value`` (a scalar) requires every element to equal it (to float32 rounding);
    ``where(array)`` is a further predicate."""

    def __init__(self, name: str | None = None, value: float | None = None,
                 where: Callable[[np.ndarray], bool] | None = None):
        self.name, self.value, self.where = name, value, where

    def _match(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        c = g.tensors[t].const
        if c is None:
            tr.miss(env, f"'{t}' is not a constant")
            return
        if self.value is not None:
            if c.size == 0 or c.dtype.kind not in "fiub" or not np.allclose(
                    c.astype(np.float64), self.value, rtol=1e-6, atol=0.0):
                tr.miss(env, f"constant '{t}' is not {self.value}")
                return
        if self.where is not None and not self.where(c):
            tr.miss(env, f"constant '{t}' fails the predicate")
            return
        if self.name is None:
            yield env
        elif env.tensors.get(self.name, t) == t:
            yield env.bind_tensor(self.name, t)

    def __repr__(self) -> str:
        return f"Const({self.name!r}" + (f", value={self.value}" if self.value is not None else "") + ")"


class Alt(Pattern):
    """Alternatives tried in order (each one's matches, then the next one's)."""

    def __init__(self, *options: Pattern):
        self.options: tuple[Pattern, ...] = tuple(
            o for p in options for o in (p.options if isinstance(p, Alt) and p._dtypes is None
                                         and p._ranks is None else (p,)))

    def _match(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        for o in self.options:
            yield from o.match(g, t, env, tr)

    def root_ops(self) -> frozenset[str] | None:
        ops = [o.root_ops() for o in self.options]
        return None if any(o is None for o in ops) else frozenset().union(*ops)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.options))


class Op(Pattern):
    """The output ``out`` of a node whose op is ``ops`` (a name or a set of names), with inputs matching ``inputs``.

    Args:
        ops: op type or set of op types.
        *inputs: one pattern per input slot; a trailing ``...`` ignores the remaining inputs.
        name: binds the node (``m.node(name)``, ``m.attrs(name)``) and its output tensor (``m[name]``).
        commute: for two-input ops, also try the inputs swapped.
        where: predicate on the node (e.g. ``lambda n: n.attrs["group"] == 1``).
        attrs: attribute values the node must have.
        out: which output of the node the tensor must be.
    """

    def __init__(self, ops: str | set[str] | frozenset[str], *inputs: AnyType, name: str | None = None,
                 commute: bool = False, where: Callable[[Node], bool] | None = None,
                 attrs: dict[str, AnyType] | None = None, out: int = 0):
        self.ops = frozenset([ops]) if isinstance(ops, str) else frozenset(ops)
        self.rest = bool(inputs) and inputs[-1] is Ellipsis
        self.inputs: tuple[Pattern, ...] = tuple(inputs[:-1] if self.rest else inputs)
        if commute and len(self.inputs) != 2:
            raise ValueError(f"commute=True needs exactly two input patterns, got {len(self.inputs)}")
        self.name, self.commute, self.where, self.attrs, self.out = name, commute, where, dict(attrs or {}), out

    def root_ops(self) -> frozenset[str] | None:
        return self.ops

    def _match(self, g: Graph, t: str, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        n = g.producer(t)
        want = "|".join(sorted(self.ops))
        if n is None:
            tr.miss(env, f"'{t}' is a graph input or constant; expected the output of {want}")
            return
        if self.name is not None and self.name in env.nodes:  # a shared sub-pattern seen before
            if env.nodes[self.name].name == n.name:
                yield env
            else:
                tr.miss(env, f"'{self.name}' is bound to node '{env.nodes[self.name].name}', here '{n.name}'")
            return
        if n.op not in self.ops:
            tr.miss(env, f"'{t}' comes from {n.op} node '{n.name}'; expected {want}")
            return
        if len(n.outputs) <= self.out or n.outputs[self.out] != t:
            tr.miss(env, f"'{t}' is not output {self.out} of '{n.name}'")
            return
        for k, v in self.attrs.items():
            if n.attrs.get(k) != v:
                tr.miss(env, f"node '{n.name}' ({n.op}) has {k}={n.attrs.get(k)!r}; expected {v!r}")
                return
        if self.where is not None and not self.where(n):
            tr.miss(env, f"node '{n.name}' ({n.op}) fails the where= predicate")
            return
        ins = list(n.inputs)
        while ins and ins[-1] == "":
            ins.pop()
        if (len(ins) < len(self.inputs)) if self.rest else (len(ins) != len(self.inputs)):
            tr.miss(env, f"node '{n.name}' ({n.op}) has {len(ins)} inputs; the pattern has {len(self.inputs)}")
            return
        env = env.bind_node(self.name, n, t)
        orders = [list(range(len(self.inputs)))]
        if self.commute:
            orders.append([1, 0])
        for order in orders:
            yield from self._inputs(g, [ins[i] for i in order], 0, env, tr)

    def _inputs(self, g: Graph, ins: list[str], i: int, env: _Env, tr: _Tracer) -> Iterator[_Env]:
        if i == len(self.inputs):
            yield env
            return
        if not ins[i]:
            tr.miss(env, f"input {i} is absent")
            return
        for e in self.inputs[i].match(g, ins[i], env, tr):
            yield from self._inputs(g, ins, i + 1, e, tr)

    def __repr__(self) -> str:
        ops = "|".join(sorted(self.ops))
        return f"Op({ops}" + "".join(f", {p!r}" for p in self.inputs) + (", ..." if self.rest else "") + ")"


# ------------------------------------------------------------------------------------------------ match results


class Value(str):
    """A tensor name as seen by a rule: a ``str`` (usable as an emit input) that also knows its TensorInfo."""

    info: TensorInfo | None

    def __new__(cls, name: str, info: TensorInfo | None = None) -> "Value":
        v = super().__new__(cls, name)
        v.info = info
        return v

    @property
    def shape(self) -> AnyType:
        return None if self.info is None else self.info.shape

    @property
    def dtype(self) -> str | None:
        return None if self.info is None else self.info.dtype

    @property
    def rank(self) -> int | None:
        return None if self.info is None else self.info.rank

    @property
    def value(self) -> np.ndarray | None:
        """The constant's array (None for a computed tensor)."""
        return None if self.info is None else self.info.const

    @property
    def size(self) -> int | None:
        return None if self.info is None else num_elements(self.info.shape)


@dataclass(frozen=True)
class Refusal:
    """What a rule returns when it declines: ``return m.fail("why")``."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass
class Emit:
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, AnyType]
    out: str            # placeholder name of the (first) output


@dataclass
class NewConst:
    value: np.ndarray
    name: str
    out: str


PLACEHOLDER = "%new"


class Match:
    """One match of a rule's pattern: the bound tensors/nodes and the replacement being built."""

    def __init__(self, graph: Graph, rule: "Rule", root: str, env: _Env):
        self.graph, self.rule, self.root, self._env = graph, rule, root, env
        self.emits: list[Emit | NewConst] = []
        self._ids = itertools.count()

    # -- bindings -------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Value:
        t = self._env.tensors.get(name)
        if t is None:
            raise KeyError(f"rule '{self.rule.name}': pattern binds no '{name}' (bound: {sorted(self._env.tensors)})")
        return Value(t, self.graph.tensors[t])

    def __contains__(self, name: str) -> bool:
        return name in self._env.tensors

    def get(self, name: str) -> Value | None:
        return self[name] if name in self._env.tensors else None

    def node(self, name: str) -> Node:
        return self._env.nodes[name]

    def attrs(self, name: str) -> dict[str, AnyType]:
        return dict(self._env.nodes[name].attrs)

    def consumers(self, name: str) -> list[Node]:
        """Nodes reading the tensor bound to ``name`` (for an Op name: its matched output)."""
        return self.graph.consumers(self[name])

    @property
    def matched(self) -> tuple[Node, ...]:
        """Every node the pattern matched (the root's producer first)."""
        return self._env.matched

    # -- outcome --------------------------------------------------------------------------------------------
    def fail(self, reason: str) -> Refusal:
        """Decline this match; the engine keeps the reason (QUANTGRAPH_DEBUG=2 logs the nearest miss)."""
        return Refusal(reason)

    def emit(self, op: str, inputs: Sequence[str | None], **attrs: AnyType) -> Value:
        """A new ``op`` node reading ``inputs`` (matched tensors, constants from :meth:`const`, earlier emits);
        returns its output, which the rule may feed to a later emit or return as the replacement."""
        out = f"{PLACEHOLDER}{next(self._ids)}"
        self.emits.append(Emit(op, tuple("" if i is None else str(i) for i in inputs), attrs, out))
        return Value(out)

    def const(self, value: AnyType, name: str = "const") -> Value:
        """A new constant tensor (named after ``name`` and the rule)."""
        out = f"{PLACEHOLDER}{next(self._ids)}"
        arr = np.asarray(value)
        self.emits.append(NewConst(arr, name, out))
        return Value(out, TensorInfo.constant(out, arr))


# ---------------------------------------------------------------------------------------------------- rules


@dataclass
class Rule:
    """A named pattern plus the function that builds its replacement.

    ``shared`` names matched Op nodes whose outputs may have users outside the pattern (they are kept alive and
    their computation is duplicated by the replacement); every other interior value must be used only inside the
    match, which the engine checks before calling the rule.
    """

    name: str
    pattern: Pattern
    fn: Callable[[Match], AnyType]
    shared: frozenset[str] = frozenset()
    doc: str = ""

    def __post_init__(self) -> None:
        if self.pattern.root_ops() is None:
            raise ValueError(f"rule '{self.name}': the root pattern must be an Op (or alternatives of Ops)")

    def matches(self, graph: Graph, tensor: str, tracer: _Tracer) -> Iterator[_Env]:
        return self.pattern.match(graph, tensor, _Env(), tracer)


def rule(pattern: Pattern, shared: Sequence[str] = ()) -> Callable[[Callable[[Match], AnyType]], Rule]:
    """Decorator: ``@rule(pattern)`` turns ``def name(m: Match)`` into a :class:`Rule` named after the function."""
    def wrap(fn: Callable[[Match], AnyType]) -> Rule:
        return Rule(fn.__name__, pattern, fn, frozenset(shared), (fn.__doc__ or "").strip())
    return wrap


class RuleSet:
    """An ordered collection of rules, indexed by the op types their roots can match."""

    def __init__(self, rules: Sequence[Rule], name: str = "rules"):
        self.name = name
        self.rules = list(rules)
        names = [r.name for r in self.rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"RuleSet '{name}': duplicate rule names {sorted(dup)}")
        self.by_op: dict[str, list[Rule]] = {}
        for r in self.rules:
            for o in sorted(r.pattern.root_ops() or ()):
                self.by_op.setdefault(o, []).append(r)

    def __add__(self, other: "RuleSet") -> "RuleSet":
        return RuleSet(self.rules + other.rules, f"{self.name}+{other.name}")

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def only(self, *names: str) -> "RuleSet":
        """The subset of rules with these names (tests run one rule at a time)."""
        return RuleSet([self[n] for n in names], f"{self.name}[{','.join(names)}]")


__all__ = ["Pattern", "Op", "Var", "Const", "Any", "Alt", "Match", "Value", "Refusal", "Rule", "rule", "RuleSet"]
