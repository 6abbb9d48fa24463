"""The pattern language and rewrite engine: alternatives, commutative matching, constants, consumer-count
refusal, naming, graph-output names, round limit and nearest-miss logging. Also the helpers the rule tests use."""
from __future__ import annotations

import logging
from typing import Any as AnyType

import numpy as np
import pytest

from quantgraph import config
from quantgraph.compiler.pattern import Any, Const, Match, Op, RuleSet, Var, rule
from quantgraph.compiler.rewrite import RewritePass, rewrite
from quantgraph.errors import PassError
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.graph import Graph
from quantgraph.ir.interpreter import run
from quantgraph.ir.verify import verify


# -- helpers shared by the rule tests -----------------------------------------------------------------------------
def feeds_for(graph: Graph, seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input (symbolic dims become ``batch``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in graph.inputs:
        info = graph.tensors[name]
        shape = tuple(d if isinstance(d, int) else batch for d in info.shape)
        if info.dtype == "bool":
            out[name] = rng.random(shape) > 0.5
        elif info.dtype.startswith("int"):
            out[name] = rng.integers(-3, 4, shape).astype(info.dtype)
        else:
            out[name] = rng.standard_normal(shape).astype(info.dtype)
    return out


def apply(graph: Graph, rules: RuleSet, **kw: AnyType) -> tuple[Graph, Graph, RewritePass]:
    """(before, after, pass): ``rules`` applied to a copy-preserved graph, then verified."""
    before = graph.copy()
    p = rewrite(rules, **kw)
    after = p(graph)
    verify(after)
    return before, after, p


def assert_same_outputs(before: Graph, after: Graph, seed: int = 0, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    feeds = feeds_for(before, seed)
    want, got = run(before, feeds), run(after, feeds)
    assert before.outputs == after.outputs
    for k in before.outputs:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol)


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.topo()]


# -- a tiny rule set for engine tests ------------------------------------------------------------------------------
@rule(Op("Relu", Op("Relu", Var("x"), name="inner")))
def relu_relu(m: Match):
    """Relu(Relu(x)) ==> Relu(x)."""
    return m.emit("Relu", [m["x"]])


@rule(Op("Add", Var("x"), Const("c", value=0.0), commute=True))
def add_zero(m: Match):
    """Add(x, 0) ==> x (either operand order)."""
    return m["x"]


@rule(Op("Neg", Op({"Sigmoid", "Tanh"}, Var("x"), name="act") | Op("Abs", Var("x"), name="act")))
def neg_of_act(m: Match):
    """Neg(Sigmoid|Tanh|Abs(x)) ==> Sigmoid/Tanh/Abs kept, Neg becomes Mul(-1)."""
    return m.emit("Mul", [m["act"], m.const(np.float32(-1.0), "minus_one")])


def _chain(*op_names: str, shape: tuple = (2, 3)) -> tuple[GraphBuilder, str]:
    gb = GraphBuilder("t")
    y = gb.input("x", shape)
    for o in op_names:
        y = gb.op(o, y)
    return gb, y


def test_rule_fires_and_names_new_nodes_after_the_rule() -> None:
    gb, y = _chain("Relu", "Relu", "Neg")
    g = gb.output(y).build()
    before, after, p = apply(g, RuleSet([relu_relu]))
    assert ops(after) == ["Relu", "Neg"]
    assert p.counts == {"relu_relu": 1}
    assert after.topo()[0].name.startswith("relu_relu/Relu")
    assert_same_outputs(before, after)


def test_fixed_point_collapses_a_long_chain() -> None:
    gb, y = _chain(*["Relu"] * 6)
    g = gb.output(y).build()
    _, after, p = apply(g, RuleSet([relu_relu]))
    assert ops(after) == ["Relu"]
    assert p.counts == {"relu_relu": 5}


def test_commutative_matching_and_constants() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3))
    zero, one = gb.const(np.zeros((), np.float32)), gb.const(np.ones((), np.float32))
    a = gb.op("Add", zero, x)           # constant first: needs commute
    b = gb.op("Add", a, one)            # not zero: Const(value=0) refuses
    g = gb.output(gb.op("Relu", b)).build()
    before, after, p = apply(g, RuleSet([add_zero]))
    assert ops(after) == ["Add", "Relu"]
    assert p.counts == {"add_zero": 1}
    assert_same_outputs(before, after)


def test_alternatives_and_op_sets() -> None:
    for act in ("Sigmoid", "Tanh", "Abs"):
        gb, y = _chain(act, "Neg")
        g = gb.output(y).build()
        before, after, p = apply(g, RuleSet([neg_of_act]))
        assert ops(after) == [act, "Mul"], act
        assert_same_outputs(before, after)
    gb, y = _chain("Relu", "Neg")
    _, after, p = apply(gb.output(y).build(), RuleSet([neg_of_act]))
    assert ops(after) == ["Relu", "Neg"] and p.counts == {}


def test_var_must_bind_the_same_tensor_twice() -> None:
    @rule(Op("Mul", Var("x"), Var("x")))
    def square(m: Match):
        return m.emit("Pow", [m["x"], m.const(np.float32(2.0), "two")])

    gb = GraphBuilder("t")
    x, z = gb.input("x", (3,)), gb.input("z", (3,))
    g = gb.output(gb.op("Mul", x, x), gb.op("Mul", x, z)).build()
    before, after, p = apply(g, RuleSet([square]))
    assert sorted(ops(after)) == ["Mul", "Pow"] and p.counts == {"square": 1}
    assert_same_outputs(before, after)


def test_dtype_and_rank_constraints() -> None:
    @rule(Op("Relu", Var("x").rank(2).dtype("float32")))
    def relu2d(m: Match):
        return m.emit("Abs", [m["x"]])

    gb = GraphBuilder("t")
    a, b = gb.input("a", (2, 3)), gb.input("b", (2, 3, 4))
    g = gb.output(gb.op("Relu", a), gb.op("Relu", b)).build()
    _, after, p = apply(g, RuleSet([relu2d]))
    assert sorted(ops(after)) == ["Abs", "Relu"]
    assert "rank 3" in p.stats.nearest["relu2d"].reason or p.counts == {"relu2d": 1}


def test_trailing_ellipsis_ignores_remaining_inputs() -> None:
    @rule(Op("Clip", Var("x"), ...))
    def clip_any(m: Match):
        return m.emit("Relu", [m["x"]])

    gb = GraphBuilder("t")
    x = gb.input("x", (4,))
    lo, hi = gb.const(np.float32(0)), gb.const(np.float32(1e30))
    g = gb.output(gb.op("Clip", x, lo, hi)).build()
    _, after, p = apply(g, RuleSet([clip_any]))
    assert ops(after) == ["Relu"]


def test_interior_value_used_outside_is_refused() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3))
    inner = gb.op("Relu", x)
    g = gb.output(gb.op("Relu", inner), gb.op("Neg", inner)).build()
    _, after, p = apply(g, RuleSet([relu_relu]))
    assert ops(after).count("Relu") == 2 and p.counts == {}
    assert any("also used by" in r for r in p.reasons("relu_relu"))


def test_interior_value_that_is_a_graph_output_is_refused() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3))
    inner = gb.op("Relu", x)
    g = gb.output(gb.op("Relu", inner), inner).build()
    _, _, p = apply(g, RuleSet([relu_relu]))
    assert any("is a graph output" in r for r in p.reasons("relu_relu"))


def test_shared_interior_is_allowed_when_declared() -> None:
    @rule(Op("Relu", Op("Relu", Var("x"), name="inner")), shared=["inner"])
    def relu_relu_shared(m: Match):
        return m.emit("Relu", [m["x"]])

    gb = GraphBuilder("t")
    x = gb.input("x", (2, 3))
    inner = gb.op("Relu", x)
    g = gb.output(gb.op("Relu", inner), gb.op("Neg", inner)).build()
    before, after, p = apply(g, RuleSet([relu_relu_shared]))
    assert p.counts == {"relu_relu_shared": 1}
    assert sorted(ops(after)) == ["Neg", "Relu", "Relu"]
    assert_same_outputs(before, after)


def test_graph_output_keeps_its_name() -> None:
    gb, y = _chain("Relu", "Relu")
    g = gb.output(y).build()
    _, after, _ = apply(g, RuleSet([relu_relu]))
    assert after.outputs == [y] and after.producer(y) is not None


def test_refusal_reasons_are_recorded() -> None:
    @rule(Op("Relu", Var("x")))
    def picky(m: Match):
        return m.fail(f"x has shape {m['x'].shape}")

    gb, y = _chain("Relu")
    _, after, p = apply(gb.output(y).build(), RuleSet([picky]))
    assert p.reasons("picky") == ["x has shape (2, 3)"]
    assert ops(after) == ["Relu"]


def test_round_limit_names_the_rules_still_firing() -> None:
    @rule(Op("Relu", Var("x")))
    def flip_to_abs(m: Match):
        return m.emit("Abs", [m["x"]])

    @rule(Op("Abs", Var("x")))
    def flip_to_relu(m: Match):
        return m.emit("Relu", [m["x"]])

    gb, y = _chain("Relu")
    with pytest.raises(PassError, match="flip_to_abs.*flip_to_relu|flip_to_relu.*flip_to_abs"):
        rewrite(RuleSet([flip_to_abs, flip_to_relu]), max_rounds=3)(gb.output(y).build())


def test_type_changing_replacement_is_an_error() -> None:
    @rule(Op("Relu", Var("x")))
    def bad(m: Match):
        return m.emit("Cast", [m["x"]], to="int64")

    gb, y = _chain("Relu")
    with pytest.raises(PassError, match="type must not change"):
        rewrite(RuleSet([bad]))(gb.output(y).build())


def test_root_must_be_an_op_pattern() -> None:
    with pytest.raises(ValueError, match="root pattern"):
        rule(Var("x"))(lambda m: m["x"])
    with pytest.raises(ValueError, match="root pattern"):
        rule(Any())(lambda m: m["x"])


def test_debug_2_logs_the_nearest_miss(caplog: pytest.LogCaptureFixture) -> None:
    gb, y = _chain("Relu", "Neg")
    g = gb.output(y).build()
    with config.override(debug=2), caplog.at_level(logging.INFO, logger="quantgraph.compiler.rewrite"):
        rewrite(RuleSet([neg_of_act]))(g)
    assert any("neg_of_act" in r.message and "nearest miss" in r.message and "Relu" in r.message
               for r in caplog.records)


def test_ruleset_rejects_duplicate_names_and_selects_subsets() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        RuleSet([relu_relu, relu_relu])
    rs = RuleSet([relu_relu, add_zero])
    assert [r.name for r in rs.only("add_zero")] == ["add_zero"]
    assert set(rs.by_op) == {"Relu", "Add"}


# -- a rule that raises: PassError under config.strict (tests), a skipped rewrite with a warning otherwise -----------
@rule(Op("Relu", Var("x"), name="r"))
def crashing(m: Match):
    """Relu(x) ==> ... but it trips over its input's shape (the class of bug an unknown dim triggers)."""
    return m.emit("Relu", [m["x"]]) if m["x"].shape[0] < 0 else None


@rule(Op("Relu", Var("x"), where=lambda n: n.inputs[5] is None, name="r"))
def crashing_predicate(m: Match):
    return m["x"]


@rule(Op("Relu", Var("x")))
def invalid_emit(m: Match):
    y = m.emit("Neg", [m["x"]])
    return m.emit("Transpose", [y], perm=(0, 1, 2))  # perm longer than the rank: the IR rejects the node


def _unknown_batch_relu_neg() -> Graph:
    gb = GraphBuilder("t")
    return gb.output(gb.op("Neg", gb.op("Relu", gb.input("x", (None, 3)), name="relu"))).build()


_BUGS = [(crashing, "raised TypeError"), (crashing_predicate, "raised IndexError while matching"),
         (invalid_emit, "emitted an invalid Transpose")]


@pytest.mark.parametrize("bad, what", _BUGS, ids=[b.name for b, _ in _BUGS])
def test_rule_that_raises_is_a_pass_error_naming_rule_and_node_in_strict_mode(bad, what: str) -> None:
    assert config.get().strict  # tests/conftest.py turns it on for the whole suite
    with pytest.raises(PassError, match=rf"node 'relu' \(Relu\): rule '{bad.name}' {what}") as info:
        rewrite(RuleSet([bad]))(_unknown_batch_relu_neg())
    assert info.value.node == "relu" and info.value.op == "Relu"
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("bad, what", _BUGS, ids=[b.name for b, _ in _BUGS])
def test_rule_that_raises_is_skipped_with_a_warning_outside_strict_mode(bad, what, caplog) -> None:
    g = _unknown_batch_relu_neg()
    before = g.copy()
    with config.override(strict=False), caplog.at_level(logging.WARNING, logger="quantgraph.compiler.rewrite"):
        _, after, p = apply(g, RuleSet([bad, add_zero]))
    assert after.same_as(before)  # the rewrite was skipped, nothing half-done is left (apply() also verified)
    warned = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "node 'relu' (Relu)" in warned[0] and f"rule '{bad.name}' {what}" in warned[0]
    assert any(what in r for r in p.reasons(bad.name))
    assert_same_outputs(before, after)


def test_rule_that_raises_does_not_stop_the_other_rewrites() -> None:
    gb = GraphBuilder("t")
    y = gb.op("Relu", gb.op("Add", gb.input("x", (None, 3)), gb.const(np.zeros(3, np.float32))), name="relu")
    with config.override(strict=False):
        _, after, p = apply(gb.output(y).build(), RuleSet([crashing, add_zero]))
    assert ops(after) == ["Relu"] and p.counts == {"add_zero": 1}
