"""One name for every microkernel: the x86 intrinsic tiles and their portable Numba twin.

``microkernel(isa, kind, mr)`` returns a callable usable from ``@njit`` code with the signature

    tile(a, a_off, lda, b, b_off, kg, c, c_off, ldc)     # 1-D arrays, offsets/strides in elements

that overwrites ``c[c_off + r*ldc + j]`` (r < mr, j < 32) with ``sum_g sum_t a[a_off + r*lda + G*g + t] *
b[b_off + (g*32 + j)*G + t]`` in wrapping int32 arithmetic. See ``intrinsics/x86.py`` for the ISA versions.
"""
from __future__ import annotations

import functools

from quantgraph.kernels.intrinsics.epilogue_ir import ACTS
from quantgraph.kernels.intrinsics.x86 import KIND_GROUP, NR, tile_epilogue_kernel, tile_kernel


@functools.lru_cache(maxsize=None)
def _portable_tile(kind: str, mr: int):
    import numpy as np
    from numba import njit

    g = KIND_GROUP[kind]

    @njit(error_model="numpy", nogil=True)
    def tile(a, a_off, lda, b, b_off, kg, c, c_off, ldc):
        acc = np.zeros((mr, NR), np.int64)
        for gi in range(kg):
            bo = b_off + gi * NR * g
            for r in range(mr):
                ao = a_off + r * lda + gi * g
                for j in range(NR):
                    s = 0
                    for t in range(g):
                        s += np.int64(a[ao + t]) * np.int64(b[bo + j * g + t])
                    acc[r, j] += s
        for r in range(mr):
            for j in range(NR):
                c[c_off + r * ldc + j] = acc[r, j]  # NOTE: int64 -> int32 store truncates, i.e. wraps

    return tile


def microkernel(isa: str, kind: str, mr: int):
    """The tile callable for ``isa`` (``portable`` or an x86 rung), ``kind`` (``u8s8``/``s16s16``), ``mr`` rows.

    The ``amx`` rung uses the avx512vnni tiles for everything its tile blocks do not cover.
    """
    isa = "avx512vnni" if isa == "amx" else isa
    if isa == "portable":
        return _portable_tile(kind, mr)
    return tile_kernel(isa, kind, mr)


def fused_microkernel(isa: str, kind: str, mr: int, has_bias: bool, has_res: bool, act: int):
    """Tile + in-register epilogue (x86 rungs); for ``portable`` the plain tile (the driver never calls it)."""
    isa = "avx512vnni" if isa == "amx" else isa
    if isa == "portable":
        return _portable_tile(kind, mr)
    return tile_epilogue_kernel(isa, kind, mr, bool(has_bias), bool(has_res), ACTS[act])


@functools.lru_cache(maxsize=None)
def _no_strip():
    from numba import njit

    @njit(error_model="numpy", nogil=True)
    def strip(*args):  # pragma: no cover - typed only, never run (see amx_strip)
        raise AssertionError("AMX strip called on a non-AMX rung")

    return strip


def amx_strip(isa: str, kind: str, rmode: int, has_bias: bool, has_res: bool, act: int):
    """The AMX strip kernel (``intrinsics/amx.py``) for the ``amx`` rung and u8s8; else a stand-in that is never
    called (the drivers branch on the compile-time constant ``USE_AMX``)."""
    if isa == "amx" and kind == "u8s8":
        from quantgraph.kernels.intrinsics.amx import amx_strip_kernel

        return amx_strip_kernel(rmode, bool(has_bias), bool(has_res), ACTS[act])
    return _no_strip()
