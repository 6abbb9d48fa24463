"""ONNX converters: Attention (23, 24, 25) and RotaryEmbedding (23).

Version notes:
* Attention-24 added the ``nonpad_kv_seqlen`` input and Attention-25 the sliding-window attributes; both are
  optional with defaults that mean "absent", so one converter covers 23-25. Before 25 the head-count attributes
  were ignored for 4-D inputs; the IR op (25) rejects them there, so the converter drops them.
"""
from __future__ import annotations

from typing import Any

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op


@onnx_op("Attention", since=23)
def Attention(g: ConvertContext, Q: str, K: str, V: str, attn_mask: str | None = None, past_key: str | None = None,
              past_value: str | None = None, nonpad_kv_seqlen: str | None = None, *, is_causal: int = 0,
              kv_num_heads: int | None = None, q_num_heads: int | None = None, qk_matmul_output_mode: int = 0,
              scale: float | None = None, softcap: float = 0.0, softmax_precision: int | None = None,
              left_window_size: int = -1, right_window_size: int = -1) -> Any:
    if g.opset < 25 and (q_num_heads is not None or kv_num_heads is not None):
        rank = g.info(Q).rank
        if rank is None:
            raise g.unsupported("q_num_heads/kv_num_heads with a Q of unknown rank: cannot tell whether they apply "
                                "(3-D) or are ignored (4-D)")
        if rank == 4:
            q_num_heads = kv_num_heads = None
    n_out = max(1, g.num_outputs)
    outs = g.add("Attention", [Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen], outputs=n_out,
                 is_causal=int(is_causal), q_num_heads=q_num_heads, kv_num_heads=kv_num_heads,
                 scale=None if scale is None else float(scale), softcap=float(softcap),
                 softmax_precision=softmax_precision, qk_matmul_output_mode=int(qk_matmul_output_mode),
                 left_window_size=int(left_window_size), right_window_size=int(right_window_size))
    return outs[0] if n_out == 1 else outs


@onnx_op("RotaryEmbedding", since=23)
def RotaryEmbedding(g: ConvertContext, X: str, cos_cache: str, sin_cache: str, position_ids: str | None = None, *,
                    interleaved: int = 0, num_heads: int = 0, rotary_embedding_dim: int = 0) -> str:
    return g.add("RotaryEmbedding", [X, cos_cache, sin_cache, position_ids], interleaved=int(interleaved),
                 num_heads=int(num_heads), rotary_embedding_dim=int(rotary_embedding_dim))
