"""Which kernel serves which quantized op: one table, looked up by ``compiler/lower.py``.

ISA dispatch happens *inside* each entry point (``target.select_isa``), so an entry lists the rungs it has
rather than one entry per rung; ``select`` returns the entry and the rung it will run on this host.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from quantgraph.errors import UnsupportedOpError
from quantgraph.kernels import target

_X86 = ("amx", "avx512vnni", "avxvnni", "avx512bw", "avx2", "portable")


@dataclass(frozen=True)
class KernelEntry:
    """A kernel entry point: the op it implements, its (input, weight, accumulator) dtypes and its rungs."""

    op: str
    dtypes: tuple[str, ...]
    entry: str  # "module:function" (imported lazily)
    isas: tuple[str, ...] = _X86
    priority: int = 0

    def load(self) -> Callable:
        module, func = self.entry.split(":")
        return getattr(importlib.import_module(module), func)


KERNELS: tuple[KernelEntry, ...] = (
    KernelEntry("QGemm", ("uint8", "int8", "int32"), "quantgraph.kernels.gemm_int8:gemm_u8s8s32", priority=10),
    KernelEntry("QGemm", ("int8", "int8", "int32"), "quantgraph.kernels.gemm_int8:gemm_u8s8s32", priority=10),
    KernelEntry("QGemm", ("int16", "int16", "int32"), "quantgraph.kernels.gemm_int16:gemm_s16s16s32"),
    KernelEntry("QConv", ("uint8", "int8", "int32"), "quantgraph.kernels.conv_int8:conv_u8s8", priority=10),
    KernelEntry("QConv", ("int8", "int8", "int32"), "quantgraph.kernels.conv_int8:conv_u8s8", priority=10),
    KernelEntry("QMaxPool", ("uint8",), "quantgraph.kernels.pool_int8:max_pool", ("portable",)),
    KernelEntry("QMaxPool", ("int8",), "quantgraph.kernels.pool_int8:max_pool", ("portable",)),
    KernelEntry("QAveragePool", ("uint8",), "quantgraph.kernels.pool_int8:avg_pool", ("portable",)),
    KernelEntry("QAveragePool", ("int8",), "quantgraph.kernels.pool_int8:avg_pool", ("portable",)),
    KernelEntry("QGlobalAveragePool", ("uint8",), "quantgraph.kernels.pool_int8:global_avg_pool", ("portable",)),
    KernelEntry("QGlobalAveragePool", ("int8",), "quantgraph.kernels.pool_int8:global_avg_pool", ("portable",)),
    KernelEntry("QAdd", ("uint8",), "quantgraph.kernels.eltwise_int8:add_requant", ("portable",)),
    KernelEntry("QAdd", ("int8",), "quantgraph.kernels.eltwise_int8:add_requant", ("portable",)),
    KernelEntry("QConcat", ("uint8",), "quantgraph.kernels.eltwise_int8:concat_requant", ("portable",)),
    KernelEntry("QConcat", ("int8",), "quantgraph.kernels.eltwise_int8:concat_requant", ("portable",)),
)


def select(op: str, dtypes: tuple[str, ...], node: str | None = None) -> tuple[KernelEntry, str]:
    """The highest-priority kernel for ``op`` on ``dtypes`` and the ISA rung it will run on (honours
    ``QUANTGRAPH_ISA``). Raises UnsupportedOpError when none matches, so the caller can decompose instead."""
    found = sorted((k for k in KERNELS if k.op == op and k.dtypes == tuple(dtypes)), key=lambda k: -k.priority)
    if not found:
        have = sorted({k.dtypes for k in KERNELS if k.op == op})
        raise UnsupportedOpError(f"no int kernel for dtypes {tuple(dtypes)}; available: {have}", node, op)
    entry = found[0]
    isa = target.select_isa(entry.entry)
    return entry, isa if isa in entry.isas else "portable"
