"""Recurrent ops: RNN, GRU and LSTM (ONNX semantics, opset 22), built on one shared recurrence driver.

Each op is described by a ``Cell`` row (gate count, number of activations and their defaults, state count and the
per-step update); inference, attribute checks, layout handling, directions, ``sequence_lens`` masking and the time
loop are written once. The input projection ``X @ W^T`` is done for all time steps at once; only the recurrent
part loops over time. Arithmetic is float64, cast back to the input type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op
from quantgraph.ir.shapes import Dim
from quantgraph.ir.tensor import TensorInfo, TensorType

Act = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Activation:
    """An activation usable inside a cell; ``alpha``/``beta`` are None when it takes no such parameter."""

    fn: Callable[[np.ndarray, float, float], np.ndarray]
    alpha: float | None = None
    beta: float | None = None


def _sigmoid(x: np.ndarray, a: float, b: float) -> np.ndarray:
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


#: the ONNX activation names (matched case-insensitively) with the defaults of the corresponding ONNX ops
ACTIVATIONS: dict[str, Activation] = {
    "Sigmoid": Activation(_sigmoid),
    "Tanh": Activation(lambda x, a, b: np.tanh(x)),
    "Relu": Activation(lambda x, a, b: np.maximum(x, 0)),
    "Affine": Activation(lambda x, a, b: a * x + b, 1.0, 0.0),
    "LeakyRelu": Activation(lambda x, a, b: np.where(x >= 0, x, a * x), 0.01),
    "ThresholdedRelu": Activation(lambda x, a, b: np.where(x > a, x, 0.0), 1.0),
    "ScaledTanh": Activation(lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "HardSigmoid": Activation(lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "Elu": Activation(lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))), 1.0),
    "Softsign": Activation(lambda x, a, b: x / (1 + np.abs(x))),
    "Softplus": Activation(lambda x, a, b: np.logaddexp(x, 0)),
}
_BY_LOWER = {k.lower(): k for k in ACTIVATIONS}
DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def canonical_activation(name: str) -> str | None:
    """The table's spelling of an activation name, or None when it is not supported."""
    return _BY_LOWER.get(name.lower())


@dataclass(frozen=True)
class Step:
    """What a cell update sees at every time step of one direction (all float64)."""

    r: np.ndarray                  # R, (gates * hidden, hidden)
    rb: np.ndarray                 # Rb, (gates * hidden,)
    p: np.ndarray | None           # LSTM peepholes (3 * hidden,): i, o, f
    acts: Sequence[Act]
    clip: float | None
    attrs: dict

    def gate(self, k: int, pre: np.ndarray) -> np.ndarray:
        """Activation k on a gate pre-activation, clipped to [-clip, clip] first when clip is set."""
        return self.acts[k](pre if self.clip is None else np.clip(pre, -self.clip, self.clip))


# A step maps (Step, xw = X_t @ W^T + Wb of shape (batch, gates * hidden), state) to the new state; h comes first.
def _rnn_step(s: Step, xw: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    (h,) = state
    return (s.gate(0, xw + h @ s.r.T + s.rb),)


def _gru_step(s: Step, xw: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    (h,) = state
    xz, xr, xh = np.split(xw, 3, axis=1)
    rz, rr, rh = np.split(s.r, 3, axis=0)
    bz, br, bh = np.split(s.rb, 3)
    z = s.gate(0, xz + h @ rz.T + bz)
    r = s.gate(0, xr + h @ rr.T + br)
    if s.attrs["linear_before_reset"]:  # reset gate applied after the recurrent matmul (cuDNN style)
        cand = s.gate(1, xh + r * (h @ rh.T + bh))
    else:
        cand = s.gate(1, xh + (r * h) @ rh.T + bh)
    return ((1 - z) * cand + z * h,)


def _lstm_step(s: Step, xw: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    h, c = state
    gi, go, gf, gc = np.split(xw + h @ s.r.T + s.rb, 4, axis=1)
    pi, po, pf = np.split(s.p, 3) if s.p is not None else (0.0, 0.0, 0.0)
    i = s.gate(0, gi + pi * c)
    f = 1 - i if s.attrs["input_forget"] else s.gate(0, gf + pf * c)
    c_new = f * c + i * s.gate(1, gc)
    o = s.gate(0, go + po * c_new)
    return o * s.acts[2](c_new), c_new


@dataclass(frozen=True)
class Cell:
    gates: int
    default_acts: tuple[str, ...]
    states: int                      # 1 (h) or 2 (h, c)
    step: Callable[[Step, np.ndarray, tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]


CELLS = {
    "RNN": Cell(1, ("Tanh",), 1, _rnn_step),
    "GRU": Cell(3, ("Sigmoid", "Tanh"), 1, _gru_step),
    "LSTM": Cell(4, ("Sigmoid", "Tanh", "Tanh"), 2, _lstm_step),
}
COMMON_ATTRS = {"hidden_size": None, "activations": None, "activation_alpha": None, "activation_beta": None,
                "clip": None, "direction": "forward", "layout": 0}


# -- attribute handling ---------------------------------------------------------------------------------------
def _num_directions(n: Node) -> int:
    d = n.attrs["direction"]
    if d not in DIRECTIONS:
        raise n.error(f"direction is '{d}'; expected one of {', '.join(DIRECTIONS)}")
    return len(DIRECTIONS[d])


def _activation_names(n: Node, cell: Cell, num_dir: int) -> list[tuple[str, ...]]:
    """Activation names per direction; one set of names is shared by both directions."""
    names = n.attrs["activations"] or cell.default_acts * num_dir
    k = len(cell.default_acts)
    if len(names) not in (k, k * num_dir):
        raise n.error(f"activations has {len(names)} names {tuple(names)}; {n.op} expects {k} per direction "
                      f"({k * num_dir} for {n.attrs['direction']})")
    canon = []
    for name in names:
        c = canonical_activation(name)
        if c is None:
            raise n.unsupported(f"activation '{name}' is not supported; supported: {', '.join(ACTIVATIONS)}")
        canon.append(c)
    if len(canon) == k:
        canon = canon * num_dir
    return [tuple(canon[i * k:(i + 1) * k]) for i in range(num_dir)]


def _activations(n: Node, cell: Cell, num_dir: int) -> list[list[Act]]:
    """Bind alpha/beta: each activation that takes a parameter consumes the next listed value, else its default."""
    alphas = list(n.attrs["activation_alpha"] or ())
    betas = list(n.attrs["activation_beta"] or ())
    out = []
    for names in _activation_names(n, cell, num_dir):
        bound = []
        for name in names:
            spec = ACTIVATIONS[name]
            a = alphas.pop(0) if spec.alpha is not None and alphas else spec.alpha
            b = betas.pop(0) if spec.beta is not None and betas else spec.beta
            bound.append(lambda x, f=spec.fn, a=a, b=b: f(x, a, b))
        out.append(bound)
    return out


# -- inference ------------------------------------------------------------------------------------------------
def _expect(n: Node, what: str, t: TensorInfo | None, dims: Sequence[Dim | str]) -> None:
    """Check rank and the known dims of an input against ``dims`` (None entries are not checked)."""
    if t is None or t.shape is None:
        return
    if len(t.shape) != len(dims):
        raise n.error(f"{what} has shape {t.shape}; {n.op} expects {len(dims)}-D {what}")
    for i, (got, want) in enumerate(zip(t.shape, dims)):
        if isinstance(got, int) and isinstance(want, int) and got != want:
            raise n.error(f"{what} has shape {t.shape}; expected dim {i} to be {want}")


def _hidden(n: Node, cell: Cell, w: TensorInfo, r: TensorInfo) -> Dim:
    if n.attrs["hidden_size"] is not None:
        return int(n.attrs["hidden_size"])
    if r.shape is not None and len(r.shape) == 3 and r.shape[2] is not None:
        return r.shape[2]
    if w.shape is not None and len(w.shape) == 3 and isinstance(w.shape[1], int):
        return w.shape[1] // cell.gates
    return None


def _scaled(k: int, d: Dim) -> Dim:
    return k * d if isinstance(d, int) else None


def _infer(n: Node, x: TensorInfo, w: TensorInfo, r: TensorInfo, b: TensorInfo | None,
           lens: TensorInfo | None, *states_and_p: TensorInfo | None) -> list[TensorType]:
    cell = CELLS[n.op]
    nd = _num_directions(n)
    _activation_names(n, cell, nd)
    if x.dtype not in ("float32", "float64", "float16", "bfloat16"):
        raise n.error(f"X is {x.dtype}; {n.op} expects a float tensor")
    if n.attrs["layout"] not in (0, 1):
        raise n.error(f"layout is {n.attrs['layout']}; expected 0 (seq, batch, ...) or 1 (batch, seq, ...)")
    _expect(n, "X", x, (None, None, None))
    seq, batch, feat = x.shape if x.shape is not None else (None, None, None)
    if n.attrs["layout"]:
        seq, batch = batch, seq
    h = _hidden(n, cell, w, r)
    g = _scaled(cell.gates, h)
    _expect(n, "W", w, (nd, g, feat))
    _expect(n, "R", r, (nd, g, h))
    _expect(n, "B", b, (nd, _scaled(2, g)))
    _expect(n, "sequence_lens", lens, (batch,))
    if lens is not None and lens.dtype != "int32":
        raise n.error(f"sequence_lens is {lens.dtype}; expected int32")
    state_shape = (batch, nd, h) if n.attrs["layout"] else (nd, batch, h)
    for what, t in zip(("initial_h", "initial_c"), states_and_p[:cell.states]):
        _expect(n, what, t, state_shape)
    if n.op == "LSTM":
        _expect(n, "P", states_and_p[2], (nd, _scaled(3, h)))
    y = (batch, seq, nd, h) if n.attrs["layout"] else (seq, nd, batch, h)
    return [TensorType(y, x.dtype)] + [TensorType(state_shape, x.dtype)] * cell.states


# -- the recurrence driver ------------------------------------------------------------------------------------
def _reverse_within(x: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Reverse each batch entry's first ``lens[b]`` steps along axis 0 (padding steps stay put). An involution."""
    t = np.arange(x.shape[0])[:, None]
    idx = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)
    return x[idx, np.arange(x.shape[1])[None, :]]


def _recur(cell: Cell, step: Step, xw: np.ndarray, init: Sequence[np.ndarray | None],
           lens: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The time loop of one direction: returns Y (seq, batch, hidden) and the final states."""
    seq, batch, hidden = xw.shape[0], xw.shape[1], step.r.shape[1]
    state = tuple(np.zeros((batch, hidden)) if s is None else s.astype(np.float64) for s in init)
    y = np.zeros((seq, batch, hidden))
    for t in range(seq):
        new = cell.step(step, xw[t], state)
        valid = (t < lens)[:, None]  # finished sequences keep their last state and output zeros
        state = tuple(np.where(valid, ns, s) for ns, s in zip(new, state))
        y[t] = np.where(valid, new[0], 0.0)
    return y, state


def _run(n: Node, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None, lens: np.ndarray | None,
         init: Sequence[np.ndarray | None], p: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    cell = CELLS[n.op]
    layout = n.attrs["layout"]
    dtype = x.dtype
    if layout:  # work in (seq, batch, ...) and (dir, batch, ...); transpose back at the end
        x = x.transpose(1, 0, 2)
        init = [None if s is None else s.transpose(1, 0, 2) for s in init]
    seq, batch, _ = x.shape
    gh = cell.gates * r.shape[2]
    x64 = x.astype(np.float64)
    lens = np.full(batch, seq, np.int64) if lens is None else lens.astype(np.int64)
    directions = DIRECTIONS[n.attrs["direction"]]
    acts = _activations(n, cell, len(directions))
    ys, finals = [], []
    for d, reverse in enumerate(directions):
        bias = np.zeros(2 * gh) if b is None else b[d].astype(np.float64)
        xd = _reverse_within(x64, lens) if reverse else x64
        xw = xd @ w[d].T.astype(np.float64) + bias[:gh]  # the input projection of every step at once
        step = Step(r[d].astype(np.float64), bias[gh:], None if p is None else p[d].astype(np.float64),
                    acts[d], n.attrs["clip"], n.attrs)
        y, state = _recur(cell, step, xw, [None if s is None else s[d] for s in list(init)[:cell.states]], lens)
        ys.append(_reverse_within(y, lens) if reverse else y)
        finals.append(state)
    y_all = np.stack(ys, axis=1)  # (seq, dir, batch, hidden)
    states = [np.stack([f[k] for f in finals]) for k in range(cell.states)]  # (dir, batch, hidden)
    if layout:
        y_all = y_all.transpose(2, 0, 1, 3)
        states = [s.transpose(1, 0, 2) for s in states]
    return tuple(a.astype(dtype) for a in [y_all] + states)


# -- the ops --------------------------------------------------------------------------------------------------
rnn = op("RNN", inputs="X W R B? sequence_lens? initial_h?", outputs="Y Y_h", attrs=dict(COMMON_ATTRS),
         fusion=Fusion.OPAQUE, doc="Elman RNN: H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)")
gru = op("GRU", inputs="X W R B? sequence_lens? initial_h?", outputs="Y Y_h",
         attrs={**COMMON_ATTRS, "linear_before_reset": 0}, fusion=Fusion.OPAQUE, doc="GRU, gates z, r, h")
lstm = op("LSTM", inputs="X W R B? sequence_lens? initial_h? initial_c? P?", outputs="Y Y_h Y_c",
          attrs={**COMMON_ATTRS, "input_forget": 0}, fusion=Fusion.OPAQUE, doc="LSTM, gates i, o, f, c")


@rnn.infer
def _infer_h(n: Node, x: TensorInfo, w: TensorInfo, r: TensorInfo, b: TensorInfo | None, lens: TensorInfo | None,
             h0: TensorInfo | None) -> list[TensorType]:
    return _infer(n, x, w, r, b, lens, h0)


gru.infer(_infer_h)  # RNN and GRU have the same ports; the cell table holds the difference


@lstm.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, r: TensorInfo, b: TensorInfo | None, lens: TensorInfo | None,
      h0: TensorInfo | None, c0: TensorInfo | None, p: TensorInfo | None) -> list[TensorType]:
    return _infer(n, x, w, r, b, lens, h0, c0, p)


@rnn.reference
def _run_h(n: Node, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None, lens: np.ndarray | None,
           h0: np.ndarray | None) -> tuple[np.ndarray, ...]:
    return _run(n, x, w, r, b, lens, [h0])


gru.reference(_run_h)


@lstm.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray | None, lens: np.ndarray | None,
      h0: np.ndarray | None, c0: np.ndarray | None, p: np.ndarray | None) -> tuple[np.ndarray, ...]:
    return _run(n, x, w, r, b, lens, [h0, c0], p)
