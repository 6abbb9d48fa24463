"""ONNX import of Attention across versions 23-25 and RotaryEmbedding-23, compared with onnx's ReferenceEvaluator:
the version differences the conformance data does not cover (head attributes on 4-D inputs before 25, omitted
middle outputs, unknown ranks)."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import quantgraph
from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.frontends.onnx.importer import import_onnx

RNG = np.random.default_rng(12)
_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
          np.dtype(np.bool_): TensorProto.BOOL,
          np.dtype(np.int32): TensorProto.INT32}


def node_model(op: str, opset: int, feeds: dict[str, np.ndarray], outputs: list[str],
               shapes: dict[str, Any] | None = None, out_type: int = TensorProto.FLOAT,
               **attrs: Any) -> onnx.ModelProto:
    """One ``op`` node over graph inputs ``feeds`` (declared with their shapes unless ``shapes`` overrides)."""
    shapes = shapes or {}
    ins = [helper.make_tensor_value_info(k, _TYPES[v.dtype], shapes.get(k, list(v.shape))) for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, out_type, None) for o in outputs if o]
    node = helper.make_node(op, list(feeds), outputs, **attrs)
    model = helper.make_model(helper.make_graph([node], "g", ins, outs), opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def compare_with(model: onnx.ModelProto, feeds: dict[str, np.ndarray], oracle: str = "reference",
                 rtol: float = 1e-5, atol: float = 1e-6) -> list[np.ndarray]:
    """Run ``model`` with quantgraph and with the oracle (onnx's ReferenceEvaluator or onnxruntime); return ours."""
    if oracle == "ort":
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)
    else:
        want = ReferenceEvaluator(model).run(None, feeds)
    got = quantgraph.compile(model, opt_level=0)(*feeds.values())
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_attention23_ignores_head_attributes_on_4d_inputs() -> None:
    feeds = {"Q": _rand(1, 4, 3, 8), "K": _rand(1, 2, 5, 8), "V": _rand(1, 2, 5, 6)}
    model = node_model("Attention", 23, feeds, ["Y"], q_num_heads=4, kv_num_heads=2, is_causal=1)
    (node,) = import_onnx(model).nodes
    assert node.attrs["q_num_heads"] is None and node.attrs["kv_num_heads"] is None
    compare_with(model, feeds)


def test_attention25_rejects_head_attributes_on_4d_inputs() -> None:
    feeds = {"Q": _rand(1, 4, 3, 8), "K": _rand(1, 2, 5, 8), "V": _rand(1, 2, 5, 6)}
    model = node_model("Attention", 25, feeds, ["Y"], q_num_heads=4, kv_num_heads=2)
    with pytest.raises(ShapeError, match="q_num_heads, kv_num_heads must not be given for 4-D Q/K/V"):
        import_onnx(model)


def test_attention23_head_attributes_with_unknown_rank_are_unsupported() -> None:
    feeds = {"Q": _rand(1, 3, 8), "K": _rand(1, 5, 8), "V": _rand(1, 5, 8)}
    model = node_model("Attention", 23, feeds, ["Y"], shapes={"Q": None}, q_num_heads=2, kv_num_heads=2)
    with pytest.raises(UnsupportedOpError, match="unknown rank"):
        import_onnx(model)


def test_attention24_3d_external_cache_with_omitted_present_outputs() -> None:
    feeds = {"Q": _rand(2, 3, 8), "K": _rand(2, 6, 4), "V": _rand(2, 6, 6), "attn_mask": _rand(3, 6),
             "nonpad_kv_seqlen": np.array([4, 6], dtype=np.int64)}
    names = ["Q", "K", "V", "attn_mask", "", "", "nonpad_kv_seqlen"]
    model = node_model("Attention", 24, feeds, ["Y", "", "", "qk"], q_num_heads=4, kv_num_heads=2, is_causal=1,
                       qk_matmul_output_mode=2, softcap=3.0)
    model.graph.node[0].ClearField("input")
    model.graph.node[0].input.extend(names)
    y, qk = compare_with(model, feeds)
    assert y.shape == (2, 3, 12) and qk.shape == (2, 4, 3, 6)


def test_attention23_past_and_present_4d() -> None:
    feeds = {"Q": _rand(1, 2, 1, 4), "K": _rand(1, 2, 1, 4), "V": _rand(1, 2, 1, 4), "attn_mask": _rand(1, 4),
             "past_key": _rand(1, 2, 3, 4), "past_value": _rand(1, 2, 3, 4)}
    compare_with(node_model("Attention", 23, feeds, ["Y", "present_key", "present_value"], scale=0.3), feeds)


def test_rotary_embedding23_3d_input_with_position_ids() -> None:
    theta = RNG.uniform(0, 6, (8, 4))
    feeds = {"X": _rand(2, 3, 16), "cos": np.cos(theta).astype(np.float32), "sin": np.sin(theta).astype(np.float32),
             "pos": RNG.integers(0, 8, (2, 3))}
    compare_with(node_model("RotaryEmbedding", 23, feeds, ["Y"], num_heads=2, interleaved=1), feeds)
