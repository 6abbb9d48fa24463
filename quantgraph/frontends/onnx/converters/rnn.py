"""ONNX converters: RNN, GRU and LSTM.

Opsets 7, 14 and 22 differ only by the ``layout`` attribute (14; default 0 = the older behaviour) and new element
types (22), so one converter per op, registered at 7 (the oldest opset the importer reads), covers them all.
Activation names are checked here so an unsupported one fails at import, and stored in the IR's spelling.
"""
from __future__ import annotations

from typing import Any, Sequence

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.rnn import ACTIVATIONS, DIRECTIONS, canonical_activation


def _recurrent(g: ConvertContext, op: str, inputs: Sequence[str | None], activations: Sequence[str] | None,
               direction: str, **attrs: Any) -> Any:
    if direction not in DIRECTIONS:
        raise g.unsupported(f"direction '{direction}' is not supported; supported: {', '.join(DIRECTIONS)}")
    names = []
    for a in activations or ():
        c = canonical_activation(a)
        if c is None:
            raise g.unsupported(f"activation '{a}' is not supported; supported: {', '.join(ACTIVATIONS)}")
        names.append(c)
    return g.add(op, list(inputs), activations=tuple(names) or None, direction=direction, **attrs)


@onnx_op("RNN", since=7)
def RNN(g: ConvertContext, X: str, W: str, R: str, B: str | None = None, sequence_lens: str | None = None,
        initial_h: str | None = None, *, activation_alpha: Sequence[float] | None = None,
        activation_beta: Sequence[float] | None = None, activations: Sequence[str] | None = None,
        clip: float | None = None, direction: str = "forward", hidden_size: int | None = None,
        layout: int = 0) -> Any:
    return _recurrent(g, "RNN", [X, W, R, B, sequence_lens, initial_h], activations, direction,
                      activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip,
                      hidden_size=hidden_size, layout=layout)


@onnx_op("GRU", since=7)
def GRU(g: ConvertContext, X: str, W: str, R: str, B: str | None = None, sequence_lens: str | None = None,
        initial_h: str | None = None, *, activation_alpha: Sequence[float] | None = None,
        activation_beta: Sequence[float] | None = None, activations: Sequence[str] | None = None,
        clip: float | None = None, direction: str = "forward", hidden_size: int | None = None, layout: int = 0,
        linear_before_reset: int = 0) -> Any:
    return _recurrent(g, "GRU", [X, W, R, B, sequence_lens, initial_h], activations, direction,
                      activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip,
                      hidden_size=hidden_size, layout=layout, linear_before_reset=linear_before_reset)


@onnx_op("LSTM", since=7)
def LSTM(g: ConvertContext, X: str, W: str, R: str, B: str | None = None, sequence_lens: str | None = None,
         initial_h: str | None = None, initial_c: str | None = None, P: str | None = None, *,
         activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
         activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
         hidden_size: int | None = None, input_forget: int = 0, layout: int = 0) -> Any:
    return _recurrent(g, "LSTM", [X, W, R, B, sequence_lens, initial_h, initial_c, P], activations, direction,
                      activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip,
                      hidden_size=hidden_size, input_forget=input_forget, layout=layout)
