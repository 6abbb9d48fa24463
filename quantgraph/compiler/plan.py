"""Execution plan: buffers planned once per input-shape signature, then a flat loop of prebound steps.

Planning (``build_plan``):
1. resolve every tensor's shape for the concrete input shapes (``infer_shapes`` on a copy);
2. give each non-constant tensor a *storage*; view kernels (Reshape, Flatten, ...) share their input's storage and
   in-place kernels reuse input 0's storage when that input dies at the node;
3. place storages in one arena by greedy first-fit over liveness intervals (largest first), so tensors whose
   lifetimes do not overlap share memory; im2col scratch is a storage live for one node only;
4. bind each node's kernel to views of the arena; nodes without a kernel (or whose shapes stay unknown) run the
   registry reference and copy into their planned buffer (or a cell when the shape is data-dependent).

``Plan.run`` copies the inputs into their buffers, runs ``for fn, args in steps: fn(*args)`` and returns copies
of the outputs, so no returned array aliases memory the next call overwrites.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from quantgraph.compiler.lower import Kernel, LoweredNode, Step
from quantgraph.compiler.passes.infer_shapes import infer_shapes
from quantgraph.ir.dtypes import to_numpy
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import get_op
from quantgraph.ir.tensor import NON_TENSOR_VALUES

ALIGN = 64
INF = 1 << 60


class Cell:
    """Holds a tensor whose shape is only known at run time (data-dependent ops)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: np.ndarray | None = None


@dataclass
class _Storage:
    nbytes: int
    start: int
    end: int
    offset: int = -1


@dataclass
class Plan:
    """A bound execution plan for one input-shape signature."""

    steps: list[Step]
    owners: list[int]                      # step -> index into ``nodes``
    nodes: list[LoweredNode]
    kernels: list[str]                     # per node: kernel name or "reference"
    inputs: list[np.ndarray | Cell]
    outputs: list[Any]                     # ndarray, Cell or constant
    arena_bytes: int
    naive_bytes: int                       # sum of all planned buffers without reuse
    arena: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    buffers: dict[str, Any] = field(repr=False, default_factory=dict)  # non-constant tensor -> ndarray or Cell

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        for buf, x in zip(self.inputs, feeds):
            if isinstance(buf, Cell):
                buf.value = x
            else:
                np.copyto(buf, x)
        for fn, args in self.steps:
            fn(*args)
        return [_copy(o.value if isinstance(o, Cell) else o) for o in self.outputs]

    def with_observers(self, observe: Mapping[str, Callable[[np.ndarray], None]]) -> "Plan":
        """A plan on the same arena whose steps also call ``observe[t](value)`` for each named tensor right after
        the node computing it (graph inputs: before the first step), while its buffer still holds it.

        The values passed are views of the arena: an observer must read them before returning, not keep them.
        Calibration uses this to see every intermediate at compiled speed.
        """
        produced: dict[str, int] = {}
        for i, ln in enumerate(self.nodes):
            for t in ln.node.outputs:
                if t:
                    produced[t] = i
        missing = [t for t in observe if t not in self.buffers]
        if missing:
            raise KeyError(f"the plan holds no buffer for {', '.join(map(repr, missing))} (constants are not "
                           f"computed; unknown names are not in the graph)")
        after: dict[int, list[Step]] = {}
        for t, fn in observe.items():
            after.setdefault(produced.get(t, -1), []).append((_observe, (fn, self.buffers[t])))
        steps: list[Step] = list(after.get(-1, []))
        owners: list[int] = [0] * len(steps)
        at = 0
        for i in range(len(self.nodes)):
            while at < len(self.steps) and self.owners[at] == i:
                steps.append(self.steps[at])
                owners.append(i)
                at += 1
            extra = after.get(i, [])
            steps += extra
            owners += [i] * len(extra)
        return replace(self, steps=steps, owners=owners)

    def profile(self, feeds: Sequence[np.ndarray], repeats: int = 3) -> list[float]:
        """Seconds per node (summed over its steps, best of ``repeats`` runs)."""
        best = [float("inf")] * len(self.nodes)
        for _ in range(max(1, repeats)):
            for buf, x in zip(self.inputs, feeds):
                if isinstance(buf, Cell):
                    buf.value = x
                else:
                    np.copyto(buf, x)
            acc = [0.0] * len(self.nodes)
            perf = time.perf_counter
            for (fn, args), owner in zip(self.steps, self.owners):
                t0 = perf()
                fn(*args)
                acc[owner] += perf() - t0
            best = [min(a, b) for a, b in zip(best, acc)]
        return [0.0 if b == float("inf") else b for b in best]


def resolve_shapes(graph: Graph, shapes: dict[str, tuple[int, ...] | None]) -> Graph:
    """A copy of ``graph`` with the given concrete input shapes and every other shape re-inferred."""
    g = graph.copy()
    for name, shp in shapes.items():
        g.set_tensor(g.tensors[name].with_(shape=None if shp is None else tuple(shp)))  # None: a sequence
    return infer_shapes(g)


def _static(g: Graph, t: str) -> tuple[int, ...] | None:
    s = g.tensors[t].shape
    if s is None or not all(isinstance(d, int) for d in s):
        return None
    return tuple(s)  # type: ignore[arg-type]


def _nbytes(g: Graph, t: str, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(to_numpy(g.tensors[t].dtype)).itemsize


def _place(storages: list[_Storage]) -> int:
    """Greedy first-fit of storages into one arena by liveness; returns the arena size in bytes."""
    placed: list[_Storage] = []
    for s in sorted(storages, key=lambda s: (-s.nbytes, s.start)):
        size = -(-max(s.nbytes, 1) // ALIGN) * ALIGN
        busy = sorted((p.offset, p.offset + -(-max(p.nbytes, 1) // ALIGN) * ALIGN) for p in placed
                      if p.start <= s.end and s.start <= p.end)
        off = 0
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, hi)
        s.offset = off
        placed.append(s)
    return max((p.offset + -(-max(p.nbytes, 1) // ALIGN) * ALIGN for p in placed), default=0)


def build_plan(graph: Graph, lowered: list[LoweredNode], shapes: dict[str, tuple[int, ...] | None],
               reuse: bool = True) -> Plan:
    """Plan buffers and bind kernels of ``lowered`` (from ``lower(graph)``) for concrete input ``shapes``.

    ``reuse=False`` gives every tensor its own memory (for tests and debugging).
    """
    g = resolve_shapes(graph, shapes)
    order = [ln.node for ln in lowered]
    index = {n.name: i for i, n in enumerate(order)}
    last: dict[str, int] = {}
    for i, n in enumerate(order):
        for t in n.inputs:
            if t:
                last[t] = i
    for t in g.outputs:
        last[t] = INF
    is_const = {t for t, info in g.tensors.items() if info.const is not None}

    storage_of: dict[str, _Storage] = {}
    shape_of: dict[str, tuple[int, ...]] = {}
    storages: list[_Storage] = []

    def new_storage(t: str, start: int) -> None:
        shp = _static(g, t)
        if shp is None or g.tensors[t].dtype == "string":  # strings are object arrays: they live in Cells
            return
        s = _Storage(_nbytes(g, t, shp), start, max(start, last.get(t, start)))
        storages.append(s)
        storage_of[t], shape_of[t] = s, shp

    def join(t: str, s: _Storage) -> None:
        storage_of[t] = s
        shape_of[t] = _static(g, t)  # type: ignore[assignment]
        s.end = max(s.end, last.get(t, index.get(g.producer(t).name, 0) if g.producer(t) else 0))

    for t in g.inputs:
        new_storage(t, -1)
    chosen: list[Kernel | None] = []
    scratch: dict[int, _Storage] = {}
    for i, ln in enumerate(lowered):
        n, k = ln.node, ln.kernel
        ins = [t for t in n.inputs if t]
        outs = [t for t in n.outputs if t]
        dynamic = any(t not in is_const and _static(g, t) is None for t in ins + outs)
        if k is not None and dynamic and not k.dynamic:
            k = None
        nsc = 0
        if k is not None and k.scratch is not None:
            in_shapes = [(_static(g, t) if t else None) for t in n.inputs]
            got = k.scratch(n, ln.packed, in_shapes, [_static(g, t) for t in n.outputs])
            if got is None:
                k = None
            else:
                nsc = got
        src = n.inputs[0] if n.inputs else ""
        shareable = (k is not None and reuse and src and src not in is_const and src in storage_of
                     and storage_of[src].end <= i and g.tensors[src].dtype == g.tensors[outs[0]].dtype)
        if k is not None and k.view and not (src in storage_of and src not in is_const):
            k = None
        if k is not None and k.view:
            join(outs[0], storage_of[src])
        elif (k is not None and k.inplace and shareable and _static(g, src) == _static(g, outs[0])
              and sum(1 for t in ins if storage_of.get(t) is storage_of[src]) == 1):
            join(outs[0], storage_of[src])
        else:
            for t in outs:
                new_storage(t, i)
        if nsc:
            s = _Storage(nsc, i, i)  # bytes
            storages.append(s)
            scratch[i] = s
        chosen.append(k)

    if reuse:
        arena_bytes = _place(storages)
    else:
        off = 0
        for s in storages:
            s.offset = off
            off += -(-max(s.nbytes, 1) // ALIGN) * ALIGN
        arena_bytes = off
    naive = sum(-(-max(s.nbytes, 1) // ALIGN) * ALIGN for s in storages)
    raw = np.empty(arena_bytes + ALIGN, np.uint8)
    base = (-raw.ctypes.data) % ALIGN
    arena = raw[base:base + arena_bytes]

    cells: dict[str, Cell] = {}

    def buf(t: str) -> Any:
        if not t:
            return None
        info = g.tensors[t]
        if info.const is not None:
            return info.const
        if t in storage_of:
            s = storage_of[t]
            nb = _nbytes(g, t, shape_of[t])
            return arena[s.offset:s.offset + nb].view(to_numpy(info.dtype)).reshape(shape_of[t])
        return cells.setdefault(t, Cell())

    steps: list[Step] = []
    owners: list[int] = []
    names: list[str] = []
    for i, (ln, k) in enumerate(zip(lowered, chosen)):
        n = ln.node
        if k is None:
            new = [(_reference_step(n), ([buf(t) for t in n.inputs], [buf(t) for t in n.outputs]))]
            names.append("reference")
        else:
            sc = None
            if i in scratch:
                s = scratch[i]
                sc = arena[s.offset:s.offset + s.nbytes]  # uint8: the kernel views it as its dtype
            new = k.bind(n, ln.packed, [buf(t) for t in n.inputs], [buf(t) for t in n.outputs], sc)
            names.append(k.name)
        steps += new
        owners += [i] * len(new)
    buffers = {t: buf(t) for t in list(g.inputs) + [t for ln in lowered for t in ln.node.outputs]
               if t and g.tensors[t].const is None}
    return Plan(steps, owners, lowered, names, [buf(t) for t in g.inputs], [buf(t) for t in g.outputs],
                arena_bytes, naive, arena, buffers)


def _copy(value: Any) -> Any:
    return value if isinstance(value, NON_TENSOR_VALUES) else value.copy()  # (immutable, and own their items)


def _observe(fn: Callable[[np.ndarray], None], b: Any) -> None:
    fn(b.value if isinstance(b, Cell) else b)


def _reference_step(n: Any) -> Any:
    """A step running ``n``'s registry reference on planned buffers, cells or constants."""
    op = get_op(n.op)

    def run(ins: list, outs: list) -> None:
        args = [x.value if isinstance(x, Cell) else x for x in ins]
        results = op.run_reference(n, args)
        for dst, val in zip(outs, results):
            if dst is None:
                continue
            if isinstance(dst, Cell):
                dst.value = val if isinstance(val, NON_TENSOR_VALUES) else np.array(val, copy=True)
            else:
                np.copyto(dst, val, casting="unsafe")
    return run
