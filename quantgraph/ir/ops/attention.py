"""Transformer ops: Attention (ONNX-25 semantics) and RotaryEmbedding (ONNX-23).

Attention takes Q/K/V either 4-D ``(batch, heads, seq, head_size)`` or 3-D ``(batch, seq, heads * head_size)``
(then ``q_num_heads``/``kv_num_heads`` say how to split the hidden size). The additive bias is built from the
optional mask, the bottom-right causal frontier, the sliding window and the external-cache padding; a query row
whose bias is entirely ``-inf`` yields zeros, not NaN. References compute in the input dtype, as ONNX's function
body does (scale folded into Q and K as ``sqrt(scale)`` each), so float16/bfloat16 results round as ONNX's do.
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.dtypes import to_numpy
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op, same_type
from quantgraph.ir.shapes import Dim
from quantgraph.ir.tensor import TensorInfo, TensorType

attention = op("Attention", inputs="Q K V attn_mask? past_key? past_value? nonpad_kv_seqlen?",
               outputs="Y present_key? present_value? qk_matmul_output?", fusion=Fusion.OPAQUE,
               attrs={"is_causal": 0, "q_num_heads": None, "kv_num_heads": None, "scale": None, "softcap": 0.0,
                      "softmax_precision": None, "qk_matmul_output_mode": 0, "left_window_size": -1,
                      "right_window_size": -1})
rotary = op("RotaryEmbedding", inputs="X cos_cache sin_cache position_ids?", outputs="Y", fusion=Fusion.OPAQUE,
            attrs={"interleaved": 0, "rotary_embedding_dim": 0, "num_heads": 0})

#: ONNX TensorProto codes that ``softmax_precision`` may name
_PRECISION = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


# -- dim arithmetic on possibly unknown dims -------------------------------------------------------------------
def _add(a: Dim, b: Dim) -> Dim:
    return a + b if isinstance(a, int) and isinstance(b, int) else None


def _mul(a: Dim, b: Dim) -> Dim:
    return a * b if isinstance(a, int) and isinstance(b, int) else None


def _split_dim(n: Node, what: str, hidden: Dim, heads: int) -> Dim:
    """head_size of a 3-D input's hidden dim split over ``heads``."""
    if not isinstance(hidden, int):
        return None
    if heads <= 0 or hidden % heads:
        raise n.error(f"{what} has hidden size {hidden}, not a multiple of {heads} heads; expected hidden = "
                      f"heads * head_size")
    return hidden // heads


# -- Attention: inference --------------------------------------------------------------------------------------
def _heads_view(n: Node, what: str, t: TensorInfo, heads: int | None) -> tuple[Dim, Dim, Dim, Dim] | None:
    """(batch, heads, seq, head_size) of a 3-D or 4-D Q/K/V, or None when its rank is unknown."""
    if t.shape is None:
        return None
    if len(t.shape) == 4:
        return t.shape  # type: ignore[return-value]
    if len(t.shape) == 3:
        assert heads is not None  # checked by _check_heads
        return t.shape[0], heads, t.shape[1], _split_dim(n, what, t.shape[2], heads)
    raise n.error(f"{what} has shape {t.shape}; Attention expects 3-D (batch, seq, hidden) or 4-D "
                  f"(batch, heads, seq, head_size)")


def _check_heads(n: Node, q: TensorInfo, k: TensorInfo, v: TensorInfo) -> int | None:
    """The common rank of Q/K/V (None when unknown); validates the head-count attributes against it."""
    ranks = {t.rank for t in (q, k, v) if t.rank is not None}
    if len(ranks) > 1:
        raise n.error(f"Q, K and V have shapes {q.shape}, {k.shape}, {v.shape}; Attention expects them all 3-D or "
                      f"all 4-D")
    rank = ranks.pop() if ranks else None
    given = [a for a in ("q_num_heads", "kv_num_heads") if n.attrs[a] is not None]
    if rank == 3 and len(given) < 2:
        raise n.error("3-D Q/K/V need both q_num_heads and kv_num_heads to split the hidden size into heads")
    if rank == 4 and given:
        raise n.error(f"{', '.join(given)} must not be given for 4-D Q/K/V (the heads are dim 1)")
    return rank


def _precision(n: Node) -> np.dtype | None:
    code = n.attrs["softmax_precision"]
    if code is None:
        return None
    if code not in _PRECISION:
        raise n.unsupported(f"softmax_precision {code} is not supported; supported: "
                            + ", ".join(f"{k} ({v})" for k, v in _PRECISION.items()))
    return to_numpy(_PRECISION[code])


def _check_options(n: Node, past_key: TensorInfo | None, past_value: TensorInfo | None,
                   nonpad: TensorInfo | None) -> None:
    a = n.attrs
    if (past_key is None) != (past_value is None):
        raise n.error("past_key and past_value must be given together")
    if nonpad is not None and past_key is not None:
        raise n.error("nonpad_kv_seqlen cannot be combined with past_key/past_value (external vs internal cache)")
    if a["qk_matmul_output_mode"] not in (0, 1, 2, 3):
        raise n.error(f"qk_matmul_output_mode is {a['qk_matmul_output_mode']}; expected 0, 1, 2 or 3")
    for w in ("left_window_size", "right_window_size"):
        if a[w] < -1:
            raise n.error(f"{w} is {a[w]}; expected -1 (unbounded) or a nonnegative window")
    _precision(n)


@attention.infer
def _(n: Node, q: TensorInfo, k: TensorInfo, v: TensorInfo, mask: TensorInfo | None, past_key: TensorInfo | None,
      past_value: TensorInfo | None, nonpad: TensorInfo | None) -> list[TensorType]:
    _check_options(n, past_key, past_value, nonpad)
    rank = _check_heads(n, q, k, v)
    qv = _heads_view(n, "Q", q, n.attrs["q_num_heads"])
    kv = _heads_view(n, "K", k, n.attrs["kv_num_heads"])
    vv = _heads_view(n, "V", v, n.attrs["kv_num_heads"])
    batch, hq, sq, dk = qv if qv is not None else (None,) * 4
    hk, skv = (kv[1], kv[2]) if kv is not None else (None, None)
    dv = vv[3] if vv is not None else None
    if kv is not None and isinstance(dk, int) and isinstance(kv[3], int) and dk != kv[3]:
        raise n.error(f"Q has head size {dk} but K has {kv[3]}; Attention expects equal Q and K head sizes")
    if isinstance(hq, int) and isinstance(hk, int) and hq % hk:
        raise n.error(f"Q has {hq} heads and K/V {hk}; expected q heads to be a multiple of kv heads (GQA)")
    total = skv if past_key is None else _add(past_key.shape[2] if past_key.rank == 4 else None, skv)
    y_shape = None if rank is None else (batch, hq, sq, dv) if rank == 4 else (batch, sq, _mul(hq, dv))
    present_k = TensorType((batch, hk, total, dk), k.dtype)
    present_v = TensorType((batch, hk, total, dv), v.dtype)
    return [TensorType(y_shape, q.dtype), present_k, present_v, TensorType((batch, hq, sq, total), q.dtype)]


# -- Attention: reference ----------------------------------------------------------------------------------------
def _to_heads(x: np.ndarray, heads: int | None) -> np.ndarray:
    if x.ndim == 4:
        return x
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _mask_bias(mask: np.ndarray, total: int, dtype: np.dtype) -> np.ndarray:
    """The additive form of ``attn_mask`` (bool True = attend), padded with -inf up to ``total`` keys."""
    neg = dtype.type(-np.inf)
    if mask.dtype == np.bool_:
        mask = np.where(mask, dtype.type(0), neg)
    short = total - mask.shape[-1]
    if short > 0:
        mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, short)], constant_values=neg)
    return mask


def _frontier_bias(n: Node, q_len: int, total: int, offset: int | np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """-inf where the causal frontier or the sliding window forbid key j for query i, else 0.

    ``offset`` counts the valid keys before the query block: a scalar (past length) or one per batch (external
    cache), so query i sits at absolute position ``i + offset``.
    """
    a = n.attrs
    limits = [(a["is_causal"], lambda d: d >= 0), (a["left_window_size"] >= 0, lambda d: d <= a["left_window_size"]),
              (a["right_window_size"] >= 0, lambda d: -d <= a["right_window_size"])]
    if not any(on for on, _ in limits):
        return None
    off = np.asarray(offset).reshape(-1, 1, 1, 1) if np.ndim(offset) else int(offset)
    dist = np.arange(q_len)[:, None] + off - np.arange(total)[None, :]  # (q, kv) or (batch, 1, q, kv)
    allowed = np.ones(dist.shape, dtype=bool)
    for on, ok in limits:
        if on:
            allowed &= ok(dist)
    return np.where(allowed, dtype.type(0), dtype.type(-np.inf))


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; an all -inf row gives zeros instead of NaN."""
    top = x.max(axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isneginf(top), 0, top).astype(x.dtype))
    s = e.sum(axis=-1, keepdims=True)
    return e / np.where(s == 0, 1, s).astype(x.dtype)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a, b).astype(a.dtype, copy=False)  # numpy computes bfloat16 products in float32


@attention.reference
def _(n: Node, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, past_key: np.ndarray | None,
      past_value: np.ndarray | None, nonpad: np.ndarray | None) -> tuple[np.ndarray, ...]:
    a, dtype, rank = n.attrs, q.dtype, q.ndim
    q, k, v = _to_heads(q, a["q_num_heads"]), _to_heads(k, a["kv_num_heads"]), _to_heads(v, a["kv_num_heads"])
    if past_key is not None:
        k, v = np.concatenate((past_key, k), axis=2), np.concatenate((past_value, v), axis=2)
    present_k, present_v = k, v
    q_len, total = q.shape[2], k.shape[2]
    bias = np.zeros((q_len, total), dtype=dtype)
    if mask is not None:
        bias = bias + _mask_bias(mask, total, dtype)
    offset: int | np.ndarray = 0 if past_key is None else past_key.shape[2]
    if nonpad is not None:
        offset = nonpad.reshape(-1).astype(np.int64) - q_len
    frontier = _frontier_bias(n, q_len, total, offset, dtype)
    if frontier is not None:
        bias = bias + frontier
    if nonpad is not None:
        valid = np.arange(total)[None, :] < nonpad.reshape(-1, 1)
        bias = bias + np.where(valid, dtype.type(0), dtype.type(-np.inf)).reshape(-1, 1, 1, total)
    if q.shape[1] != k.shape[1]:  # GQA/MQA: each kv head serves q_heads / kv_heads consecutive q heads
        reps = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, reps, axis=1), np.repeat(v, reps, axis=1)
    scale = a["scale"] if a["scale"] is not None else 1.0 / np.sqrt(q.shape[3])
    root = dtype.type(np.sqrt(scale))  # sqrt(scale) on both Q and K keeps Q @ K^T from overflowing in float16
    raw = _matmul(q * root, (k * root).transpose(0, 1, 3, 2))
    capped = raw
    if a["softcap"] > 0:
        capped = (np.tanh(raw / dtype.type(a["softcap"])) * dtype.type(a["softcap"])).astype(dtype)
    logits = capped + bias
    precision = _precision(n)
    probs = _softmax(logits.astype(precision) if precision is not None else logits)
    # NOTE: masking is decided on the bias, not the logits: a +inf logit plus a -inf bias must still be masked
    probs = np.where(np.isneginf(bias.max(axis=-1, keepdims=True)), 0, probs).astype(dtype)
    y = _matmul(probs, v)
    if rank == 3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
    qk = (raw, capped, logits, probs)[a["qk_matmul_output_mode"]]
    qk = np.broadcast_to(qk, raw.shape).astype(dtype)
    return y, present_k, present_v, qk


# -- RotaryEmbedding ---------------------------------------------------------------------------------------------
@rotary.infer
def _(n: Node, x: TensorInfo, cos: TensorInfo, sin: TensorInfo, pos: TensorInfo | None) -> TensorType:
    if x.rank not in (None, 3, 4):
        raise n.error(f"X has shape {x.shape}; RotaryEmbedding expects 4-D (batch, heads, seq, head_size) or 3-D "
                      f"(batch, seq, hidden)")
    heads, rot = n.attrs["num_heads"], n.attrs["rotary_embedding_dim"]
    if x.rank == 3 and heads <= 0:
        raise n.error("3-D X needs num_heads to split the hidden size into heads")
    head = None
    if x.shape is not None:
        head = x.shape[3] if x.rank == 4 else _split_dim(n, "X", x.shape[2], heads)
    rot = rot or head
    if isinstance(rot, int) and isinstance(head, int) and (rot > head or rot % 2):
        raise n.error(f"rotary_embedding_dim is {rot}; expected an even number <= head size {head}")
    want_rank = 2 if pos is not None else 3
    for name, c in (("cos_cache", cos), ("sin_cache", sin)):
        if c.rank is not None and c.rank != want_rank:
            layout = "(max_position, rotary_dim / 2) with position_ids" if pos is not None else \
                "(batch, seq, rotary_dim / 2) without position_ids"
            raise n.error(f"{name} has shape {c.shape}; RotaryEmbedding expects {layout}")
        last = c.shape[-1] if c.shape else None
        if isinstance(rot, int) and isinstance(last, int) and last * 2 != rot:
            raise n.error(f"{name} has shape {c.shape}; its last dim must be rotary_embedding_dim / 2 = {rot // 2}")
    return same_type(x)


@rotary.reference
def _(n: Node, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    # work in (batch, seq, heads, head_size) so the (batch, seq, rot/2) caches broadcast over heads
    xs = x.transpose(0, 2, 1, 3) if x.ndim == 4 else x.reshape(x.shape[0], x.shape[1], n.attrs["num_heads"], -1)
    rot = n.attrs["rotary_embedding_dim"] or xs.shape[3]
    if pos is not None:
        cos, sin = cos[pos], sin[pos]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    part = xs[..., :rot]
    x1, x2 = (part[..., 0::2], part[..., 1::2]) if n.attrs["interleaved"] else np.split(part, 2, axis=-1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    rotated = (np.stack((real, imag), axis=-1).reshape(part.shape) if n.attrs["interleaved"]
               else np.concatenate((real, imag), axis=-1))
    out = np.concatenate((rotated, xs[..., rot:]), axis=-1).astype(x.dtype)
    return out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(x.shape)
