"""RNN / GRU / LSTM: inference (symbolic dims, layouts), error messages and small hand-checked recurrences."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.errors import ShapeError, UnsupportedOpError
from quantgraph.ir.builder import GraphBuilder
from quantgraph.ir.ops.registry import ref

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _weights(gb: GraphBuilder, op: str, nd: int, feat: int, hidden: int) -> tuple[str, str]:
    g = GATES[op] * hidden
    return gb.const(np.zeros((nd, g, feat), np.float32)), gb.const(np.zeros((nd, g, hidden), np.float32))


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("layout", [0, 1])
def test_infer_shapes_with_symbolic_dims(op: str, layout: int) -> None:
    gb = GraphBuilder()
    x = gb.input("x", ("B", "T", 3) if layout else ("T", "B", 3), "float32")
    w, r = _weights(gb, op, 2, 3, 5)
    outs = gb.op(op, x, w, r, direction="bidirectional", layout=layout)
    shapes = [gb.graph.info(t).shape for t in outs]
    y, state = (("B", "T", 2, 5), ("B", 2, 5)) if layout else (("T", 2, "B", 5), (2, "B", 5))
    assert shapes == [y] + [state] * (len(outs) - 1)
    assert len(outs) == (3 if op == "LSTM" else 2)


def test_infer_unknown_rank_input_keeps_known_dims() -> None:
    gb = GraphBuilder()
    w, r = _weights(gb, "GRU", 1, 3, 4)
    y, h = gb.op("GRU", gb.input("x", None, "float32"), w, r)
    assert gb.graph.info(y).shape == (None, 1, None, 4) and gb.graph.info(h).shape == (1, None, 4)


def test_direction_count_must_match_weights() -> None:
    gb = GraphBuilder()
    w, r = _weights(gb, "LSTM", 1, 3, 4)
    with pytest.raises(ShapeError, match=r"node 'l' \(LSTM\): W has shape \(1, 16, 3\); expected dim 0 to be 2"):
        gb.op("LSTM", gb.input("x", (2, 1, 3), "float32"), w, r, name="l", direction="bidirectional")


def test_weight_rank_and_feature_size_checked() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 1, 3), "float32")
    with pytest.raises(ShapeError, match=r"\(RNN\): W has shape \(4, 3\); RNN expects 3-D W"):
        gb.op("RNN", x, gb.const(np.zeros((4, 3), np.float32)), gb.const(np.zeros((1, 4, 4), np.float32)))
    w, r = _weights(gb, "RNN", 1, 5, 4)
    with pytest.raises(ShapeError, match=r"\(RNN\): W has shape \(1, 4, 5\); expected dim 2 to be 3"):
        gb.op("RNN", x, w, r)


def test_activation_count_and_names_checked() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 1, 3), "float32")
    w, r = _weights(gb, "GRU", 1, 3, 4)
    with pytest.raises(ShapeError, match=r"\(GRU\): activations has 1 names \('Tanh',\); GRU expects 2"):
        gb.op("GRU", x, w, r, activations=("Tanh",))
    with pytest.raises(UnsupportedOpError, match="activation 'Swish' is not supported"):
        gb.op("GRU", x, w, r, activations=("Swish", "Tanh"))


def test_sequence_lens_must_be_int32_per_batch() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 3, 3), "float32")
    w, r = _weights(gb, "RNN", 1, 3, 4)
    with pytest.raises(ShapeError, match="sequence_lens is int64; expected int32"):
        gb.op("RNN", x, w, r, None, gb.const(np.array([1, 2, 2], np.int64)))
    with pytest.raises(ShapeError, match=r"sequence_lens has shape \(2,\); expected dim 0 to be 3"):
        gb.op("RNN", x, w, r, None, gb.const(np.array([1, 2], np.int32)))


def test_rnn_affine_recurrence_by_hand() -> None:
    # identity activation: h_t = x_t + 0.5 h_{t-1}, with h_0 = 2
    x = np.array([1.0, 2.0, 3.0], np.float32).reshape(3, 1, 1)
    w, r = np.ones((1, 1, 1), np.float32), np.full((1, 1, 1), 0.5, np.float32)
    h0 = np.full((1, 1, 1), 2.0, np.float32)
    y, h = ref("RNN", x, w, r, None, None, h0, activations=("Affine",))
    np.testing.assert_allclose(y.reshape(-1), [2.0, 3.0, 4.5])
    np.testing.assert_allclose(h.reshape(-1), [4.5])
    y, h = ref("RNN", x, w, r, None, None, h0, activations=("Affine",), direction="reverse")
    # runs x_3, x_2, x_1: 3 + 1 = 4, 2 + 2 = 4, 1 + 2 = 3, stored at their own time steps
    np.testing.assert_allclose(y.reshape(-1), [3.0, 4.0, 4.0])
    np.testing.assert_allclose(h.reshape(-1), [3.0])


def test_sequence_lens_masks_outputs_and_keeps_last_state() -> None:
    x = np.ones((3, 2, 1), np.float32)
    w, r = np.ones((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32)
    y, h = ref("RNN", x, w, r, None, np.array([3, 1], np.int32), None, activations=("Affine",),
               direction="reverse")
    # batch 0 sums 1, 2, 3 from the end; batch 1 has one step and zero padding after it
    np.testing.assert_allclose(y[:, 0, :, 0], [[3.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(h[0, :, 0], [3.0, 1.0])


def test_lstm_input_forget_couples_gates() -> None:
    # with zero weights every gate pre-activation is 0: i = o = 0.5; coupled f = 1 - i = 0.5; c~ = tanh(0) = 0
    x = np.zeros((1, 1, 2), np.float32)
    w, r = np.zeros((1, 4, 2), np.float32), np.zeros((1, 4, 1), np.float32)
    c0 = np.full((1, 1, 1), 2.0, np.float32)
    _, h, c = ref("LSTM", x, w, r, None, None, None, c0, None, input_forget=1)
    np.testing.assert_allclose(c.reshape(-1), [1.0])
    np.testing.assert_allclose(h.reshape(-1), [0.5 * np.tanh(1.0)], rtol=1e-6)


def test_float64_in_float64_out() -> None:
    x = np.zeros((2, 1, 2), np.float64)
    outs = ref("GRU", x, np.zeros((1, 6, 2)), np.zeros((1, 6, 2)))
    assert [o.dtype for o in outs] == [np.float64, np.float64]
