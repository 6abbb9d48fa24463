"""Int8/int16 CPU kernels JIT-compiled by Numba/LLVM, with ISA dispatch and a primitive cache.

Public entry points take plain numpy arrays plus frozen spec objects, validate everything before any JIT code runs
and compile lazily (importing this package does not import Numba).
"""
from __future__ import annotations

from typing import Any

from quantgraph.kernels.cache import cache_info, reset_counters
from quantgraph.kernels.epilogue import Epilogue, EpilogueKind
from quantgraph.kernels.packing import PackedWeights, pack_weights, unpack_weights
from quantgraph.kernels.target import available_isas, select_isa

_LAZY = {
    "gemm_u8s8s32": "quantgraph.kernels.gemm_int8",
    "gemm_s16s16s32": "quantgraph.kernels.gemm_int16",
    "ConvSpec": "quantgraph.kernels.conv_int8",
    "PackedConv": "quantgraph.kernels.conv_int8",
    "pack_conv_weights": "quantgraph.kernels.conv_int8",
    "conv_u8s8": "quantgraph.kernels.conv_int8",
    "PoolSpec": "quantgraph.kernels.pool_int8",
    "max_pool": "quantgraph.kernels.pool_int8",
    "avg_pool": "quantgraph.kernels.pool_int8",
    "global_avg_pool": "quantgraph.kernels.pool_int8",
    "add_requant": "quantgraph.kernels.eltwise_int8",
    "concat_requant": "quantgraph.kernels.eltwise_int8",
}

__all__ = ["cache_info", "reset_counters", "Epilogue", "EpilogueKind", "PackedWeights", "pack_weights",
           "unpack_weights", "available_isas", "select_isa", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quantgraph.kernels' has no attribute {name!r}")
