"""Multi-head attention in fp32 (FusedAttention): BLAS on strided head views around a fused Numba softmax.

Q, K, V and the output stay in the projections' ``(batch, seq, heads * head_size)`` layout. A head is a column slice,
so ``heads_view`` exposes them as ``(B, H, S, D)`` views (strides only, nothing copied) and K^T as a transposed view;
numpy's stacked matmul hands each (b, h) matrix to BLAS with a leading dimension of ``H * D``, so no split/merge
transpose is materialised and the context is written straight into the output's column slices. Steps:

1. scores[b, h] = Q_bh @ K_bh^T                 (BLAS, into a (B, H, Sq, Skv) scratch)
2. P = softmax(scores * scale + mask) per row   (``softmax_scaled``: one pass per row, parallel over all rows)
3. out[b, :, h*Dv:(h+1)*Dv] = P[b, h] @ V_bh     (BLAS, into the output view)

The softmax's exp is ``expf.exp_nonpos_row`` (vectorised; the logits are <= 0 once the row max is subtracted).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import njit, prange

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.kernels.checks import float32_only
from quantgraph.kernels.fp32.expf import exp_nonpos_row
from quantgraph.kernels.intrinsics.scalar_f32 import fmax
from quantgraph.kernels.registry import Kernel, register

_ROWS = 16                               # rows per parallel work item


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def softmax_scaled(s, mask, has_mask, scale):
    """s[b, h, i] = softmax(s[b, h, i] * scale + mask[b, h, i]) in place over a (B, H, Sq, Skv) array.

    ``mask`` is read as mask[b, h, i, j] and may be a zero-strided broadcast view (ignored unless has_mask).
    """
    batch, heads, q_len, kv_len = s.shape
    sc = np.float32(scale)
    nblk = (q_len + _ROWS - 1) // _ROWS
    for t in prange(batch * heads * nblk):
        b = t // (heads * nblk)
        h = (t // nblk) % heads
        i0 = (t % nblk) * _ROWS
        for i in range(i0, min(i0 + _ROWS, q_len)):
            row = s[b, h, i]
            if has_mask:
                mr = mask[b, h, i]
                for j in range(kv_len):
                    row[j] = row[j] * sc + mr[j]
            else:
                for j in range(kv_len):
                    row[j] = row[j] * sc
            m = row[0]
            for j in range(1, kv_len):
                m = fmax(m, row[j])
            for j in range(kv_len):
                row[j] = row[j] - m
            exp_nonpos_row(row, kv_len)
            total = np.float32(0.0)
            for j in range(kv_len):
                total += row[j]
            inv = np.float32(1.0) / total
            for j in range(kv_len):
                row[j] = row[j] * inv


def heads_view(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, S, H*D) -> a (B, H, S, D) view of the same memory (no copy)."""
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def mask_view(mask: np.ndarray | None, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The additive mask as a (B, H, Sq, Skv) broadcast view (zero strides, no copy); a zero dummy if None."""
    if mask is None:
        return np.broadcast_to(np.zeros((1, 1, 1, 1), np.float32), shape)
    return np.broadcast_to(mask.reshape((1,) * (4 - mask.ndim) + mask.shape), shape)


def scratch_size(batch: int, heads: int, q_len: int, kv_len: int) -> int:
    """float32 elements of the scores buffer."""
    return batch * heads * q_len * kv_len


def _matmul_out(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=out)


def attention_steps(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, out: np.ndarray,
                    scratch: np.ndarray, heads: int, scale: float) -> list[tuple]:
    """Prebound ``(fn, args)`` steps computing FusedAttention(q, k, v, mask) into ``out`` (all 3-D, float32)."""
    batch, q_len, _ = q.shape
    kv_len = k.shape[1]
    shape = (batch, heads, q_len, kv_len)
    scores = scratch[:scratch_size(*shape)].reshape(shape)
    k_t = heads_view(k, heads).transpose(0, 1, 3, 2)
    return [(_matmul_out, (heads_view(q, heads), k_t, scores)),
            (softmax_scaled, (scores, mask_view(mask, shape), mask is not None, float(scale))),
            (_matmul_out, (scores, heads_view(v, heads), heads_view(out, heads)))]


# -- the kernel record -------------------------------------------------------------------------------------------
def accepts(n: Node, g: Graph) -> str | None:
    """Why this kernel cannot run FusedAttention node ``n`` (None: it can)."""
    # NOTE: FusedAttention's inference already keeps the mask within the 4-D scores
    return float32_only(n, g)


def scratch(n: Node, packed: Any, ins: Sequence[tuple[int, ...] | None], outs: Sequence[tuple[int, ...] | None]
            ) -> int | None:
    """Scratch bytes for the float32 scores (None when the shapes are unknown)."""
    q, k = ins[0], ins[1]
    if q is None or k is None:
        return None
    return 4 * scratch_size(q[0], n.attrs["num_heads"], q[1], k[1])


def bind(n: Node, packed: Any, ins: list, outs: list, scratch_buf: np.ndarray) -> list[tuple]:
    """Prebound steps for one FusedAttention node on planned buffers."""
    mask = ins[3] if len(ins) > 3 else None
    return attention_steps(ins[0], ins[1], ins[2], mask, outs[0], scratch_buf.view(np.float32), n.attrs["num_heads"],
                           n.attrs["scale"])


register(Kernel("attention_f32_blas", ("FusedAttention",), accepts, bind, scratch=scratch, priority=10))
