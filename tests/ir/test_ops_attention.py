"""IR Attention and RotaryEmbedding (quantgraph/ir/ops/attention.py): inference with symbolic/unknown dims, errors,
and references against per-head float64 textbook loops."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quantgraph.errors import ShapeError
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import ref

RNG = np.random.default_rng(11)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _infer(op: str, shapes: list[Any], dtypes: list[str] | None = None, **attrs: Any) -> list:
    g = Graph("t")
    dtypes = dtypes or ["float32"] * len(shapes)
    ins = [None if s == "omit" else g.add_input(f"i{k}", s, dtypes[k]) for k, s in enumerate(shapes)]
    out = g.add(op, ins, name="attn_1", **attrs)
    return [g.info(t) for t in ((out,) if isinstance(out, str) else out)]


def _textbook(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, allowed: np.ndarray | None,
              float_mask: np.ndarray | None = None) -> np.ndarray:
    """softmax(q k^T * scale + mask) v, one head at a time; kv head of q head h is h // (Hq / Hkv)."""
    b, hq, sq, _ = q.shape
    hk = k.shape[1]
    y = np.zeros((b, hq, sq, v.shape[3]))
    for bi in range(b):
        for h in range(hq):
            kh = h // (hq // hk)
            s = q[bi, h].astype(np.float64) @ k[bi, kh].astype(np.float64).T * scale
            if float_mask is not None:
                s = s + float_mask
            if allowed is not None:
                s = np.where(allowed, s, -np.inf)
            e = np.exp(s - s.max(axis=-1, keepdims=True))
            y[bi, h] = e / e.sum(axis=-1, keepdims=True) @ v[bi, kh]
    return y


def test_attention_infers_4d_symbolic_dims_and_gqa() -> None:
    y, pk, pv, qk = _infer("Attention", [("B", 8, "S", 16), ("B", 2, "T", 16), ("B", 2, "T", 32)])
    assert (y.shape, y.dtype) == (("B", 8, "S", 32), "float32")
    assert pk.shape == ("B", 2, "T", 16) and pv.shape == ("B", 2, "T", 32)
    assert qk.shape == ("B", 8, "S", "T")
    # with a cache, total length = past + new: known only when both are ints
    _, pk, _, qk = _infer("Attention", [(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), "omit", (1, 2, 7, 4),
                                        (1, 2, 7, 4)])
    assert pk.shape == (1, 2, 12, 4) and qk.shape == (1, 2, 3, 12)
    _, pk, _, _ = _infer("Attention", [(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), "omit", (1, 2, "P", 4),
                                       (1, 2, "P", 4)])
    assert pk.shape == (1, 2, None, 4)
    assert _infer("Attention", [None, None, None])[0].shape is None


def test_attention_infers_3d_hidden_sizes() -> None:
    y, pk, pv, qk = _infer("Attention", [(2, 5, 64), (2, 7, 16), (2, 7, 24)], q_num_heads=8, kv_num_heads=2)
    assert y.shape == (2, 5, 96)  # 8 heads * v head size 12
    assert pk.shape == (2, 2, 7, 8) and pv.shape == (2, 2, 7, 12) and qk.shape == (2, 8, 5, 7)
    assert _infer("Attention", [(2, "S", None), (2, 7, 16), (2, 7, 24)], q_num_heads=8, kv_num_heads=2)[0].shape \
        == (2, "S", 96)


@pytest.mark.parametrize("shapes, attrs, message", [
    ([(2, 5, 64), (2, 7, 16), (2, 7, 16)], {}, "3-D Q/K/V need both q_num_heads and kv_num_heads"),
    ([(1, 2, 3, 4)] * 3, {"q_num_heads": 2, "kv_num_heads": 2}, "q_num_heads, kv_num_heads must not be given"),
    ([(1, 3, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4)], {}, "Q has 3 heads and K/V 2; expected q heads to be a multiple"),
    ([(2, 5, 60), (2, 7, 16), (2, 7, 16)], {"q_num_heads": 8, "kv_num_heads": 2}, "Q has hidden size 60"),
    ([(1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 3, 4)], {}, "Q has head size 4 but K has 5"),
    ([(1, 2, 3, 4), (2, 3, 4), (1, 2, 3, 4)], {}, "all 3-D or all 4-D"),
    ([(1, 2, 3, 4)] * 3 + ["omit", (1, 2, 3, 4)], {}, "past_key and past_value must be given together"),
])
def test_attention_errors_name_node_and_op(shapes: list, attrs: dict, message: str) -> None:
    with pytest.raises(ShapeError, match=r"node 'attn_1' \(Attention\): .*" + message):
        _infer("Attention", shapes, **attrs)


def test_attention_reference_gqa_matches_textbook() -> None:
    q, k, v = _rand(2, 4, 3, 8), _rand(2, 2, 5, 8), _rand(2, 2, 5, 6)
    y, pk, pv, qk = ref("Attention", q, k, v, None, None, None, None)
    np.testing.assert_allclose(y, _textbook(q, k, v, 1 / np.sqrt(8), None), rtol=1e-5, atol=1e-6)
    assert y.dtype == np.float32 and pk is k and pv is v
    np.testing.assert_allclose(qk[:, 1], q[:, 1] @ k[:, 0].transpose(0, 2, 1) / np.sqrt(8), rtol=1e-5, atol=1e-6)


def test_attention_reference_3d_causal_with_past_is_bottom_right() -> None:
    q, k, v = _rand(1, 2, 8), _rand(1, 2, 8), _rand(1, 2, 8)
    past_k, past_v = _rand(1, 2, 3, 4), _rand(1, 2, 3, 4)
    y, pk, _, _ = ref("Attention", q, k, v, None, past_k, past_v, None, is_causal=1, q_num_heads=2,
                      kv_num_heads=2, scale=0.5)
    k4, v4 = (np.concatenate([p, t.reshape(1, 2, 2, 4).transpose(0, 2, 1, 3)], axis=2)
              for p, t in ((past_k, k), (past_v, v)))
    np.testing.assert_array_equal(pk, k4)
    allowed = np.arange(5)[None, :] <= np.arange(2)[:, None] + 3  # query i sits at absolute position 3 + i
    want = _textbook(q.reshape(1, 2, 2, 4).transpose(0, 2, 1, 3), k4, v4, 0.5, allowed)
    np.testing.assert_allclose(y, want.transpose(0, 2, 1, 3).reshape(1, 2, 8), rtol=1e-5, atol=1e-6)


def test_attention_reference_masks_compose_and_empty_rows_are_zero() -> None:
    q, k, v = _rand(1, 1, 3, 4), _rand(1, 1, 4, 4), _rand(1, 1, 4, 2)
    bool_mask = np.array([[True, True, False], [False, False, False], [True, True, True]])  # padded to 4 keys
    y, *_ = ref("Attention", q, k, v, bool_mask, None, None, None)
    allowed = np.pad(bool_mask, [(0, 0), (0, 1)])
    want = _textbook(q, k, v, 0.5, np.where(allowed.any(-1, keepdims=True), allowed, True))
    assert not np.isnan(y).any()
    np.testing.assert_array_equal(y[0, 0, 1], 0)  # every key masked: zeros, not NaN
    np.testing.assert_allclose(y[0, 0, [0, 2]], want[0, 0, [0, 2]], rtol=1e-5, atol=1e-6)
    float_mask = _rand(3, 4)
    y, *_ = ref("Attention", q, k, v, float_mask, None, None, None, left_window_size=1, right_window_size=0)
    window = (np.arange(3)[:, None] - np.arange(4)[None, :] >= 0) & (np.arange(3)[:, None] - np.arange(4) <= 1)
    np.testing.assert_allclose(y, _textbook(q, k, v, 0.5, window, float_mask), rtol=1e-5, atol=1e-6)


def test_attention_reference_nonpad_kv_seqlen_masks_padding() -> None:
    q, k, v = _rand(2, 1, 2, 4), _rand(2, 1, 5, 4), _rand(2, 1, 5, 3)
    y, *_ = ref("Attention", q, k, v, None, None, None, np.array([3, 5], dtype=np.int64), is_causal=1)
    for b, valid in enumerate((3, 5)):
        allowed = np.arange(5)[None, :] <= np.arange(2)[:, None] + valid - 2
        np.testing.assert_allclose(y[b], _textbook(q[b:b + 1], k[b:b + 1], v[b:b + 1], 0.5, allowed)[0],
                                   rtol=1e-5, atol=1e-6)


def test_attention_softcap_and_qk_output_modes() -> None:
    q, k, v = _rand(1, 1, 2, 4) * 4, _rand(1, 1, 3, 4) * 4, _rand(1, 1, 3, 2)
    mask = np.array([[0, -1, 0], [0, 0, -2]], dtype=np.float32)
    raw = q[0, 0].astype(np.float64) @ k[0, 0].T * 0.5
    capped = 2.0 * np.tanh(raw / 2.0)
    outs = [ref("Attention", q, k, v, mask, None, None, None, softcap=2.0, qk_matmul_output_mode=m)[3][0, 0]
            for m in range(4)]
    for got, want in zip(outs, (raw, capped, capped + mask)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    e = np.exp(capped + mask)
    np.testing.assert_allclose(outs[3], e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_attention_float16_keeps_dtype() -> None:
    q, k, v = (_rand(1, 2, 3, 4).astype(np.float16) for _ in range(3))
    y = ref("Attention", q, k, v, None, None, None, None, softmax_precision=1)[0]
    assert y.dtype == np.float16
    want = _textbook(q, k, v, 0.5, None)
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=1e-2, atol=1e-2)


# -- RotaryEmbedding -----------------------------------------------------------------------------------------------
def _rotate_textbook(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, rot: int, interleaved: bool) -> np.ndarray:
    """x (B, S, H, D): rotate pairs as complex numbers x_a + i x_b by angle theta (cos/sin (B, S, rot/2))."""
    part = x[..., :rot].astype(np.float64)
    a, b = (part[..., 0::2], part[..., 1::2]) if interleaved else (part[..., :rot // 2], part[..., rot // 2:])
    z = (a + 1j * b) * (cos + 1j * sin)[:, :, None, :]
    out = np.empty_like(part)
    if interleaved:
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
    else:
        out[..., :rot // 2], out[..., rot // 2:] = z.real, z.imag
    return np.concatenate([out, x[..., rot:]], axis=-1)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_4d_with_position_ids_partial_dim(interleaved: int) -> None:
    x = _rand(2, 3, 4, 8)  # (B, H, S, D)
    theta = RNG.uniform(0, 6, (10, 3))
    pos = RNG.integers(0, 10, (2, 4))
    got = ref("RotaryEmbedding", x, np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32), pos,
              interleaved=interleaved, rotary_embedding_dim=6)
    want = _rotate_textbook(x.transpose(0, 2, 1, 3), np.cos(theta[pos]), np.sin(theta[pos]), 6, bool(interleaved))
    np.testing.assert_allclose(got, want.transpose(0, 2, 1, 3), rtol=1e-5, atol=1e-6)


def test_rotary_3d_without_position_ids() -> None:
    x = _rand(2, 4, 12)  # (B, S, H * D) with 3 heads of 4
    theta = RNG.uniform(0, 6, (2, 4, 2))
    got = ref("RotaryEmbedding", x, np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32), None,
              num_heads=3)
    want = _rotate_textbook(x.reshape(2, 4, 3, 4), np.cos(theta), np.sin(theta), 4, False).reshape(2, 4, 12)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_rotary_infer_and_errors() -> None:
    assert _infer("RotaryEmbedding", [("B", 4, "S", 8), (16, 4), (16, 4), ("B", "S")],
                  ["float32", "float32", "float32", "int64"])[0].shape == ("B", 4, "S", 8)
    with pytest.raises(ShapeError, match=r"\(RotaryEmbedding\): 3-D X needs num_heads"):
        _infer("RotaryEmbedding", [(1, 4, 8), (1, 4, 4), (1, 4, 4)])
    with pytest.raises(ShapeError, match=r"cos_cache has shape \(16, 3\); its last dim must be"):
        _infer("RotaryEmbedding", [(1, 2, 4, 8), (16, 3), (16, 4), (1, 4)],
               ["float32", "float32", "float32", "int64"])
    with pytest.raises(ShapeError, match=r"sin_cache has shape \(16, 4\); RotaryEmbedding expects \(batch, seq"):
        _infer("RotaryEmbedding", [(1, 2, 4, 8), (1, 4, 4), (16, 4)])
