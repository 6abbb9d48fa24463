"""Int16 GEMM ``C = epilogue(A[M,K] s16 @ B[K,N] s16)`` with s32 accumulation, for layers that need precision.

Same driver, packing (layout ``k2n32``: 2 int16 per 4-byte group) and epilogue as the int8 GEMM. Rungs:
``vpdpwssd`` (avx512vnni zmm, avxvnni ymm), ``vpmaddwd`` + add (avx512bw, avx2), portable. ``vpmaddwd`` is exact
except for the pair (-32768 * -32768) * 2 = 2**31, which wraps to -2**31 exactly as ``vpdpwssd`` and the
portable int32 sum do, so all rungs agree bit for bit.
"""
from __future__ import annotations

import numpy as np

from quantgraph.kernels.epilogue import Epilogue
from quantgraph.kernels.gemm_int8 import run_gemm
from quantgraph.kernels.packing import PackedWeights

_DEFAULT_EPILOGUE = Epilogue()


def gemm_s16s16s32(a: np.ndarray, w: PackedWeights, epilogue: Epilogue = _DEFAULT_EPILOGUE, *,
                   out: np.ndarray | None = None, node: str | None = None, op: str | None = "QGemm") -> np.ndarray:
    """Int16 GEMM: ``epilogue(A @ B + bias_s32)``; B from ``pack_weights(int16 B, a_dtype="int16", ...)``.

    Args:
        a: int16 activations (M, K).
        w: packed int16 weights (layout ``k2n32``).
        epilogue, out, node, op: as for :func:`quantgraph.kernels.gemm_int8.gemm_u8s8s32`.
    """
    return run_gemm("s16s16", "s16s16s32", a, w, epilogue, out, node, op)
