"""Graph: the IR container. The only module that touches networkx.

Nodes are ops keyed by unique names; values are named tensors in ``graph.tensors`` (``TensorInfo``). An edge
``producer -> consumer`` carries the tensor name and the consumer's input slot. Graph inputs and constants have no
producer. Passes use the verbs: ``topo``, ``producer``, ``consumers``, ``add``, ``replace_uses``, ``erase``,
``copy``.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, Sequence

import networkx as nx
import numpy as np

from quantgraph.errors import GraphError
from quantgraph.ir.dtypes import DTYPES, dtype_name
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import get_op
from quantgraph.ir.shapes import Shape, normalize_shape, shapes_compatible
from quantgraph.ir.tensor import QuantParams, TensorInfo, TensorType


class Graph:
    """A dataflow graph of registered ops over typed tensors."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self._g = nx.MultiDiGraph()
        self.tensors: dict[str, TensorInfo] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._producer: dict[str, str] = {}
        self._order: dict[str, int] = {}      # node -> insertion index, for a stable topological order
        self._seq = itertools.count()
        self._topo_cache: list[Node] | None = None
        self.reserved: set[str] = set()       # names unique_name must not hand out (e.g. a model's own names)
        #: outer-scope values this graph reads (a branch or loop body): named here as in the enclosing graph, with
        #: their TensorInfo in ``tensors``, and bound to the owning node's trailing inputs (``ir/subgraph.py``)
        self.captures: list[str] = []

    # -- queries ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __contains__(self, node_name: str) -> bool:
        return node_name in self._g

    @property
    def nodes(self) -> list[Node]:
        """All nodes in topological order."""
        return self.topo()

    def node(self, name: str) -> Node:
        try:
            return self._g.nodes[name]["node"]
        except KeyError:
            raise GraphError(f"no node named '{name}' in graph '{self.name}'") from None

    def info(self, tensor: str) -> TensorInfo:
        try:
            return self.tensors[tensor]
        except KeyError:
            raise GraphError(f"no tensor named '{tensor}' in graph '{self.name}'") from None

    def producer(self, tensor: str) -> Node | None:
        """The node computing ``tensor``; None for graph inputs and constants."""
        n = self._producer.get(tensor)
        return None if n is None else self.node(n)

    def consumers(self, tensor: str) -> list[Node]:
        """Nodes reading ``tensor`` (each once, in topological order)."""
        p = self._producer.get(tensor)
        if p is not None:  # follow the edges rather than scanning every node
            names = {v for _, v, d in self._g.out_edges(p, data=True) if d["tensor"] == tensor}
            return sorted((self.node(v) for v in names), key=lambda n: self._order[n.name])
        return [n for n in self.topo() if tensor in n.inputs]

    def uses(self, tensor: str) -> int:
        """How many input slots and graph outputs read ``tensor``."""
        return sum(n.inputs.count(tensor) for n in self.topo()) + self.outputs.count(tensor)

    def topo(self) -> list[Node]:
        """Nodes in a stable topological order (ties broken by insertion order)."""
        if self._topo_cache is None:
            try:
                order = nx.lexicographical_topological_sort(self._g, key=lambda n: self._order[n])
                self._topo_cache = [self._g.nodes[n]["node"] for n in order]
            except nx.NetworkXUnfeasible:
                cycle = nx.find_cycle(self._g)
                raise GraphError(f"graph '{self.name}' has a cycle through nodes "
                                 f"{[e[0] for e in cycle]}") from None
        return list(self._topo_cache)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.topo())

    def constants(self) -> dict[str, np.ndarray]:
        return {k: v.const for k, v in self.tensors.items() if v.const is not None}

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.topo():
            counts[n.op] = counts.get(n.op, 0) + 1
        return dict(sorted(counts.items()))

    # -- naming -----------------------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """A name not yet used by any node or tensor (``base``, ``base_1``, ...)."""
        base = base or "t"
        taken = self.tensors.keys() | self.reserved
        if base not in taken and base not in self._g:
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in taken and cand not in self._g:
                return cand
        raise AssertionError("unreachable")

    # -- building ---------------------------------------------------------------------------------------------
    def add_input(self, name: str, shape: Iterable[Any] | None, dtype: Any) -> str:
        """Declare a graph input; ``shape`` may hold symbolic dims ("N") or None (unknown)."""
        if name in self.tensors:
            raise GraphError(f"input '{name}' is already defined in graph '{self.name}'")
        self.tensors[name] = TensorInfo(name, normalize_shape(shape), dtype_name(dtype))
        self.inputs.append(name)
        return name

    def add_capture(self, name: str, info: TensorInfo) -> str:
        """Declare an outer-scope value this (sub)graph reads by ``name`` (its type is the outer tensor's)."""
        if name in self.tensors:
            raise GraphError(f"capture '{name}' is already defined in graph '{self.name}'")
        self.tensors[name] = TensorInfo(name, info.shape, info.dtype, qparams=info.qparams)
        self.captures.append(name)
        return name

    def add_const(self, value: Any, name: str | None = None, dtype: Any = None) -> str:
        """Add a constant tensor (initializer) and return its name."""
        name = name if name and name not in self.tensors else self.unique_name(name or "const")
        self.tensors[name] = TensorInfo.constant(name, value, None if dtype is None else dtype_name(dtype))
        return name

    def set_tensor(self, info: TensorInfo) -> None:
        """Replace a tensor's recorded info (shape/dtype refinement, quantization params)."""
        if info.name not in self.tensors:
            raise GraphError(f"no tensor named '{info.name}' in graph '{self.name}'")
        self.tensors[info.name] = info

    def set_outputs(self, names: Sequence[str]) -> None:
        for t in names:
            if t not in self.tensors:
                raise GraphError(f"graph output '{t}' is not a tensor of graph '{self.name}'")
        self.outputs = list(names)

    def add(self, op: str, inputs: Sequence[str | None], name: str | None = None,
            outputs: Sequence[str] | int | None = None, **attrs: Any) -> Any:
        """Append a node of ``op`` and infer its output types.

        ``outputs`` is a list of output names, or a count (for variadic-output ops); by default the node has as
        many outputs as the op declares, named after the node. Returns the output name, or a tuple of names for
        multi-output ops.
        """
        d = get_op(op)
        name = self.unique_name(name or op)
        ins = tuple("" if t is None else t for t in inputs)
        while ins and ins[-1] == "" and len(ins) > d.min_inputs:
            ins = ins[:-1]  # trailing omitted optional inputs are simply absent
        if outputs is None:
            n_out = len(d.outputs) if not d.variadic_outputs else 1
            outs = tuple(name if n_out == 1 else f"{name}:{i}" for i in range(n_out))
        elif isinstance(outputs, int):
            outs = tuple(name if outputs == 1 else f"{name}:{i}" for i in range(outputs))
        else:
            outs = tuple(outputs)
        d.check_arity(name, len(ins), len(outs))
        d.check_inputs_present(name, ins)
        for i, t in enumerate(ins):
            if t and t not in self.tensors:
                raise GraphError(f"input {i} '{t}' is not defined (no graph input, constant or earlier node "
                                 f"produces it)", name, op)
        for t in outs:
            if t and (t in self.tensors):
                raise GraphError(f"output '{t}' is already defined", name, op)
        node = Node(name, op, ins, outs, d.complete_attrs(name, attrs))
        types = d.run_infer(node, [self.tensors[t] if t else None for t in ins])
        if len(types) < sum(1 for t in outs if t) or len(types) < len(outs) and outs[len(types):] != ("",) * (
                len(outs) - len(types)):
            raise GraphError(f"inference produced {len(types)} types for {len(outs)} outputs", name, op)
        self._insert(node, types)
        real = tuple(outs)
        return real[0] if len(real) == 1 and not d.variadic_outputs and len(d.outputs) == 1 else real

    def _insert(self, node: Node, types: Sequence[TensorType]) -> None:
        for t, ty in zip(node.outputs, types):
            if t:
                self.tensors[t] = TensorInfo(t, normalize_shape(ty.shape), ty.dtype)
                self._producer[t] = node.name
        self._link(node)

    def _link(self, node: Node) -> None:
        """Add ``node`` to the networkx graph with an edge from the producer of each input."""
        self._g.add_node(node.name, node=node)
        self._order[node.name] = next(self._seq)
        for slot, t in enumerate(node.inputs):
            p = self._producer.get(t) if t else None
            if p is not None:
                self._g.add_edge(p, node.name, tensor=t, slot=slot)
        self._topo_cache = None

    def insert_node(self, node: Node, infos: Sequence[TensorInfo | None]) -> None:
        """Insert a fully formed node with given output infos (deserialization, rewrites)."""
        d = get_op(node.op)
        d.check_arity(node.name, len(node.inputs), len(node.outputs))
        if node.name in self._g:
            raise GraphError(f"a node named '{node.name}' already exists", node.name, node.op)
        for t in node.inputs:
            if t and t not in self.tensors:
                raise GraphError(f"input '{t}' is not defined", node.name, node.op)
        for t, info in zip(node.outputs, infos):
            if t:
                if t in self.tensors:
                    raise GraphError(f"output '{t}' is already defined", node.name, node.op)
                assert info is not None and info.name == t
                self.tensors[t] = info
                self._producer[t] = node.name
        self._link(node)

    # -- editing ----------------------------------------------------------------------------------------------
    def _replace_node(self, old: Node, new: Node) -> None:
        """Swap a node object in place (same name and outputs, different inputs or attrs)."""
        assert old.name == new.name and old.outputs == new.outputs
        self._g.remove_edges_from([(u, v, k) for u, v, k in self._g.in_edges(old.name, keys=True)])
        self._g.nodes[old.name]["node"] = new
        for slot, t in enumerate(new.inputs):
            p = self._producer.get(t) if t else None
            if p is not None:
                self._g.add_edge(p, new.name, tensor=t, slot=slot)
        self._topo_cache = None

    def set_inputs_of(self, node: Node, inputs: Sequence[str]) -> Node:
        """Rewire ``node`` to read ``inputs``; returns the new node object."""
        new = Node(node.name, node.op, tuple(inputs), node.outputs, node.attrs)
        self._replace_node(self.node(node.name), new)
        return new

    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of tensor ``old`` (nodes and graph outputs) read ``new`` instead.

        ``new`` stands for the same values, so it inherits ``old``'s quantization parameters when it has none: this is
        how ``qparams`` survive every rewrite, fold and elimination.
        """
        if new not in self.tensors:
            raise GraphError(f"replacement tensor '{new}' is not defined")
        qp = self.tensors[old].qparams if old in self.tensors else None
        if qp is not None and self.tensors[new].qparams is None:
            self.tensors[new] = self.tensors[new].with_(qparams=qp)
        for n in self.consumers(old):
            self.set_inputs_of(n, [new if t == old else t for t in n.inputs])
        self.outputs = [new if t == old else t for t in self.outputs]

    def erase(self, node: Node | str) -> None:
        """Remove a node; refuses while any of its outputs is still read."""
        n = self.node(node if isinstance(node, str) else node.name)
        for t in n.outputs:
            if t and (self.consumers(t) or t in self.outputs):
                raise GraphError(f"cannot erase: output '{t}' is still used", n.name, n.op)
        for t in n.outputs:
            if t:
                del self.tensors[t]
                del self._producer[t]
        self._g.remove_node(n.name)
        del self._order[n.name]
        self._topo_cache = None

    def rename_tensor(self, old: str, new: str) -> None:
        """Rename a tensor everywhere (producer, readers, graph inputs/outputs)."""
        if old == new:
            return
        if new in self.tensors:
            raise GraphError(f"cannot rename '{old}' to '{new}': a tensor of that name exists")
        info = self.info(old)
        self.tensors = {(new if k == old else k): (info.with_(name=new) if k == old else v)
                        for k, v in self.tensors.items()}
        p = self._producer.pop(old, None)
        if p is not None:
            pn = self.node(p)
            outs = tuple(new if t == old else t for t in pn.outputs)
            self._g.nodes[p]["node"] = Node(pn.name, pn.op, pn.inputs, outs, pn.attrs)
            self._producer[new] = p
        for n in self.consumers(old):
            self.set_inputs_of(n, [new if t == old else t for t in n.inputs])
        self.inputs = [new if t == old else t for t in self.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]
        self._topo_cache = None

    def remove_unused_constants(self) -> int:
        """Drop constants nothing reads; returns how many."""
        used = {t for n in self.topo() for t in n.inputs} | set(self.outputs) | set(self.captures)
        dead = [k for k, v in self.tensors.items() if v.const is not None and k not in used and k not in self.inputs]
        for k in dead:
            del self.tensors[k]
        return len(dead)

    def copy(self) -> "Graph":
        """A deep copy of the structure (constant arrays are read-only and shared)."""
        g = Graph(self.name)
        g.tensors = dict(self.tensors)
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.captures = list(self.captures)
        g._producer = dict(self._producer)
        g._g = self._g.copy()
        g._order = dict(self._order)
        g._seq = itertools.count(max(self._order.values(), default=-1) + 1)
        return g

    # -- comparisons ------------------------------------------------------------------------------------------
    def same_as(self, other: "Graph") -> bool:
        """Structural identity: same nodes (in order), attributes, tensors (with constant values) and I/O."""
        if (self.name, self.inputs, self.outputs, self.captures) != (other.name, other.inputs, other.outputs,
                                                                     other.captures):
            return False
        if set(self.tensors) != set(other.tensors):
            return False
        if not all(self.tensors[k].same_as(other.tensors[k]) for k in self.tensors):
            return False
        a, b = self.topo(), other.topo()
        if len(a) != len(b):
            return False
        for x, y in zip(a, b):
            if (x.name, x.op, x.inputs, x.outputs) != (y.name, y.op, y.inputs, y.outputs):
                return False
            if set(x.attrs) != set(y.attrs):
                return False
            for k in x.attrs:
                u, v = x.attrs[k], y.attrs[k]
                if isinstance(u, Graph) or isinstance(v, Graph):
                    if not (isinstance(u, Graph) and isinstance(v, Graph) and u.same_as(v)):
                        return False
                elif isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
                    if not (isinstance(u, np.ndarray) and isinstance(v, np.ndarray) and u.dtype == v.dtype
                            and np.array_equal(u, v)):
                        return False
                elif u != v and not (u != u and v != v):  # NaN attrs compare equal
                    return False
        return True

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self)} nodes, inputs={self.inputs}, outputs={self.outputs})"


__all__ = ["Graph", "TensorInfo", "TensorType", "QuantParams", "Shape", "DTYPES", "shapes_compatible"]
