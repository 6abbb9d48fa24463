"""GraphBuilder: terse construction of test and frontend graphs.

    gb = GraphBuilder("tiny")
    x = gb.input("x", ("N", 3, 8, 8), "float32")
    w = gb.const(np.ones((4, 3, 3, 3), np.float32), "w")
    y = gb.op("Relu", gb.op("Conv", x, w, pads=(1, 1, 1, 1)))
    graph = gb.output(y).build()
"""
from __future__ import annotations

from typing import Any, Iterable

from quantgraph.ir.graph import Graph


class GraphBuilder:
    def __init__(self, name: str = "graph"):
        self.graph = Graph(name)

    def input(self, name: str, shape: Iterable[Any] | None, dtype: Any = "float32") -> str:
        return self.graph.add_input(name, shape, dtype)

    def const(self, value: Any, name: str | None = None, dtype: Any = None) -> str:
        return self.graph.add_const(value, name=name, dtype=dtype)

    def op(self, op: str, *inputs: str | None, name: str | None = None, outputs: Any = None, **attrs: Any) -> Any:
        return self.graph.add(op, list(inputs), name=name, outputs=outputs, **attrs)

    def output(self, *names: str) -> "GraphBuilder":
        self.graph.set_outputs(list(self.graph.outputs) + list(names))
        return self

    def build(self) -> Graph:
        return self.graph
