"""THE kernel table, fp32 and int8: one record per kernel, looked up by ``compiler/lower.py`` only.

A :class:`Kernel` names the ops it serves, the dtypes of their activation input, the ISA rungs it may run on and
the host features it needs, and four functions:

* ``accepts(node, graph) -> reason | None``: why it cannot run this node (a refusal is a reason, never an exception);
* ``prepack(node, graph) -> packed``: once per compiled model (weights packed into the kernel's layout);
* ``scratch(node, packed, in_shapes, out_shapes) -> bytes | None``: planned scratch for these shapes, in bytes
  (the plan hands ``bind`` a 64-byte aligned uint8 buffer; the kernel views it as the dtype it needs); None
  refuses these shapes (the node then runs its registry reference);
* ``bind(node, packed, ins, outs, scratch) -> [(fn, args), ...]``: prebound steps on planned buffers (``ins`` and
  ``outs`` are arrays, None for an omitted optional input).

``view`` kernels produce no step (the output is the input buffer reshaped); ``inplace`` kernels may be given the
same buffer for input 0 and output 0. Each family's records live beside its kernels (``kernels/fp32/bind_*.py``,
``kernels/bind_int8.py``) and register themselves when imported; :data:`FAMILIES` lists those modules.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.kernels import target

Step = tuple[Callable[..., Any], tuple]
Shapes = Sequence["tuple[int, ...] | None"]
ALL_RUNGS = tuple(isa.name for isa in target.LADDER)
AVX512_RUNGS = ("amx", "avx512vnni", "avx512bw")

#: modules whose import registers kernels (one per family, beside the kernels they bind)
FAMILIES = (
    "quantgraph.kernels.fp32.bind_gemm",
    "quantgraph.kernels.fp32.bind_eltwise",
    "quantgraph.kernels.fp32.bind_norm",
    "quantgraph.kernels.fp32.bind_pool",
    "quantgraph.kernels.fp32.bind_data",
    "quantgraph.kernels.fp32.attention_f32",
    "quantgraph.kernels.fp32.bind_rnn",
    "quantgraph.kernels.bind_int8",
)


@dataclass(frozen=True)
class Kernel:
    """One kernel record (see the module docstring)."""

    name: str
    ops: tuple[str, ...]
    accepts: Callable[[Node, Graph], "str | None"]
    bind: Callable[..., "list[Step]"]
    dtypes: tuple[str, ...] | None = None    # allowed dtypes of input 0 (None: any; ``accepts`` checks the rest)
    rungs: tuple[str, ...] = ALL_RUNGS       # ISA rungs it may run on (``QUANTGRAPH_ISA`` forces one)
    requires: tuple[str, ...] = ()           # LLVM host features it needs besides the rung's
    prepack: Callable[[Node, Graph], Any] | None = None
    scratch: Callable[[Node, Any, Shapes, Shapes], "int | None"] | None = None
    view: bool = False
    inplace: bool = False
    priority: int = 0
    dynamic: bool = False                    # also binds values of run-time shape (``plan.Cell`` ins and outs)

    def refusal(self, n: Node, g: Graph) -> str | None:
        """Why this kernel cannot run ``n`` here (dtype, rung, host), else its own ``accepts``."""
        if self.dtypes is not None and n.inputs and n.inputs[0]:
            dt = g.tensors[n.inputs[0]].dtype
            if dt not in self.dtypes:
                return f"input '{n.inputs[0]}' is {dt}; {self.name} takes {' or '.join(self.dtypes)}"
        rung = target.select_isa(self.name)
        if rung not in self.rungs:
            return f"ISA rung '{rung}' is selected; {self.name} runs on {', '.join(self.rungs)}"
        missing = [f for f in self.requires if not target.has(f)]
        if missing:
            return f"host lacks {', '.join(missing)}"
        return self.accepts(n, g)


_TABLE: dict[str, list[Kernel]] = {}
_loaded = False


def register(kernel: Kernel) -> Kernel:
    """Add ``kernel`` to the table (a name registered twice is an error: one kernel, one record)."""
    for ks in _TABLE.values():
        if any(k.name == kernel.name for k in ks):
            raise ValueError(f"kernel {kernel.name} is already registered")
    for op in kernel.ops:
        _TABLE.setdefault(op, []).append(kernel)
        _TABLE[op].sort(key=lambda k: -k.priority)
    return kernel


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in FAMILIES:
            importlib.import_module(module)


def candidates(op: str) -> list[Kernel]:
    """The kernels registered for ``op``, highest priority first."""
    _load()
    return list(_TABLE.get(op, ()))


def table() -> dict[str, list[Kernel]]:
    """op -> its kernels, highest priority first (a copy)."""
    _load()
    return {op: list(ks) for op, ks in _TABLE.items()}


def select(n: Node, g: Graph) -> tuple[Kernel | None, str]:
    """The highest-priority kernel that accepts ``n`` (None: the registry reference runs it) and why the best one
    refused."""
    reason = "no kernel for this op"
    for k in candidates(n.op):
        why = k.refusal(n, g)
        if why is None:
            return k, ""
        reason = why
    return None, reason
