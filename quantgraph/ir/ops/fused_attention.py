"""Compiler-made multi-head attention: the scaled-dot-product core of a PyTorch-exported self-attention block.

    FusedAttention(Q, K, V, mask?) =
        Reshape(Transpose(MatMul(Softmax(MatMul(q, k) * scale + mask), v), (0, 2, 1, 3)), (B, Sq, H * Dv))
    with q = Transpose(Reshape(Q, (B, Sq, H, D)), (0, 2, 1, 3)), k = Transpose(Reshape(K, (B, Skv, H, D)), (0, 2, 3, 1))
    and v = Transpose(Reshape(V, (B, Skv, H, Dv)), (0, 2, 1, 3)).

Q, K and V are 3-D ``(batch, seq, heads * head_size)`` (the projections' outputs); ``mask`` is additive and broadcasts
to the scores ``(batch, heads, Sq, Skv)`` without growing them. It is not the registry's ``Attention`` because that
op's semantics differ at the edges the exported graph defines: a mask shorter than the keys is padded with -inf
(the graph's Add broadcasts it), and an all -inf row gives zeros (the graph's Softmax gives NaN). The reference
chains the registry references of the ops it replaces, so it cannot drift from them.
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import REQUIRED, Fusion, op, ref
from quantgraph.ir.shapes import Dim, broadcast_shapes, shapes_compatible
from quantgraph.ir.tensor import TensorInfo, TensorType

fused_attention = op("FusedAttention", inputs="Q K V mask?", outputs="Y", fusion=Fusion.OPAQUE,
                     attrs={"num_heads": REQUIRED, "scale": REQUIRED},
                     doc="Softmax(Q K^T * scale + mask) V per head, 3-D (batch, seq, heads * head_size) in and out")


def _head_size(n: Node, what: str, t: TensorInfo) -> Dim:
    if t.rank != 3:
        raise n.error(f"{what} has shape {t.shape}; FusedAttention expects 3-D (batch, seq, heads * head_size)")
    hidden, heads = t.shape[2], n.attrs["num_heads"]
    if heads < 1:
        raise n.error(f"num_heads is {heads}; expected a positive head count")
    if not isinstance(hidden, int):
        return None
    if hidden % heads:
        raise n.error(f"{what} has hidden size {hidden}, not a multiple of num_heads={heads}")
    return hidden // heads


def _same(a: Dim, b: Dim) -> bool:
    return a is None or b is None or a == b


@fused_attention.infer
def _(n: Node, q: TensorInfo, k: TensorInfo, v: TensorInfo, mask: TensorInfo | None) -> TensorType:
    dq, dk, _ = (_head_size(n, w, t) for w, t in (("Q", q), ("K", k), ("V", v)))
    if not _same(dq, dk):
        raise n.error(f"Q has head size {dq} but K has {dk}; expected equal Q and K head sizes")
    if not (_same(q.shape[0], k.shape[0]) and _same(k.shape[0], v.shape[0]) and _same(k.shape[1], v.shape[1])):
        raise n.error(f"Q {q.shape}, K {k.shape} and V {v.shape} disagree on batch or key length; expected "
                      f"(B, Sq, .), (B, Skv, .), (B, Skv, .)")
    if mask is not None:
        scores = (q.shape[0], n.attrs["num_heads"], q.shape[1], k.shape[1])
        try:
            grown = broadcast_shapes(scores, mask.shape)
        except ValueError:
            grown = None
        if grown is None or not shapes_compatible(grown, scores):
            raise n.error(f"mask has shape {mask.shape}; it must broadcast to the scores {scores} without growing them")
        if mask.dtype != q.dtype:
            raise n.error(f"mask is {mask.dtype}; expected {q.dtype} like Q")
    return TensorType((q.shape[0], q.shape[1], v.shape[2]), q.dtype)


def split_heads(x: np.ndarray, heads: int, perm: tuple[int, ...]) -> np.ndarray:
    """(B, S, H*D) -> Transpose(Reshape(x, (B, S, H, D)), perm), through the registry references."""
    return ref("Transpose", ref("Reshape", x, np.array([0, 0, heads, -1], np.int64)), perm=perm)


@fused_attention.reference
def _(n: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    heads = n.attrs["num_heads"]
    scores = ref("MatMul", split_heads(q, heads, (0, 2, 1, 3)), split_heads(k, heads, (0, 2, 3, 1)))
    scores = ref("Mul", scores, np.array(n.attrs["scale"], scores.dtype))
    if mask is not None:
        scores = ref("Add", scores, mask)
    ctx = ref("MatMul", ref("Softmax", scores, axis=-1), split_heads(v, heads, (0, 2, 1, 3)))
    merged = ref("Transpose", ctx, perm=(0, 2, 1, 3))
    return ref("Reshape", merged, np.array([0, 0, -1], np.int64))
