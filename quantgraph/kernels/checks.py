"""Small predicates the kernel records' ``accepts`` functions share: each returns a refusal reason or None."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node

Check = Callable[[Node, Graph], "str | None"]


def dtype_of(g: Graph, t: str) -> str | None:
    return g.tensors[t].dtype if t else None


def rank_of(g: Graph, t: str) -> int | None:
    s = g.tensors[t].shape
    return None if s is None else len(s)


def const_of(g: Graph, t: str) -> np.ndarray | None:
    return g.tensors[t].const if t else None


def float32_only(n: Node, g: Graph, inputs: int | None = None) -> str | None:
    """Every input (or the first ``inputs``) and output 0 are float32."""
    ts = [t for t in (n.inputs if inputs is None else n.inputs[:inputs]) if t] + [t for t in n.outputs[:1] if t]
    bad = [t for t in ts if dtype_of(g, t) != "float32"]
    return f"tensor '{bad[0]}' is {dtype_of(g, bad[0])}, kernel is float32 only" if bad else None


def single_output(n: Node, g: Graph | None = None) -> str | None:
    """Only output 0 is used (extra outputs nobody reads are fine: the kernel just does not write them)."""
    extra = [t for t in n.outputs[1:] if t]
    if g is not None:
        extra = [t for t in extra if g.consumers(t) or t in g.outputs]
    return None if n.outputs and n.outputs[0] and not extra else f"optional extra output '{extra[0]}' is used"


def all_of(*checks: Check) -> Check:
    """The first refusal of ``checks``, in order."""
    def run(n: Node, g: Graph) -> str | None:
        for c in checks:
            r = c(n, g)
            if r:
                return r
        return None
    return run


def layout_of(n: Node) -> str:
    """The ``layout`` attribute of compiler-made ops; ONNX ops are channels-first."""
    return n.attrs.get("layout", "NCHW")


def always(n: Node, g: Graph) -> str | None:
    return None


def step(fn: Callable[..., Any], *args: Any) -> tuple[Callable[..., Any], tuple]:
    """A prebound plan step."""
    return (fn, args)


def no_steps(*_: Any) -> list:
    return []
