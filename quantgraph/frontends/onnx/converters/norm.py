"""ONNX converters: normalization ops and the softmax family.

Version notes:
* BatchNormalization-1..15 in inference mode become the inference IR op; the old ``spatial``/``is_test``/
  ``consumed_inputs`` attributes are accepted. ``spatial=0`` with per-activation (C, d1, ...) statistics is folded
  into a constant Mul + Add. Training (``training_mode=1`` from 14, or the statistics outputs asked for before)
  becomes BatchNormalizationTraining, whose outputs are 14's (Y, running_mean, running_var) followed by the
  batch mean and inverse standard deviation that opsets < 14 output as saved_mean/saved_var (the spec leaves
  saved_var open; onnxruntime outputs 1/sqrt(var + epsilon), and so do we).
* Softmax/LogSoftmax/Hardmax before 13 coerce the input to 2-D at ``axis`` (default 1); the IR op normalizes
  over one axis (default -1), so the old semantics become Reshape -> op(axis=-1) -> Reshape.
* GroupNormalization-18 has one scale/bias per group; the IR op (21) wants one per channel, so constants repeat.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.shapes import normalize_axis


@onnx_op("BatchNormalization", since=1)
def BatchNormalization(g: ConvertContext, X: str, scale: str, B: str, input_mean: str, input_var: str, *,
                       consumed_inputs: Any = None, epsilon: float = 1e-5, is_test: int = 0, momentum: float = 0.9,
                       spatial: int = 1, training_mode: int = 0) -> Any:
    # NOTE: before opset 14 training was signalled by asking for the statistics outputs (is_test=0 alone was left
    # at 0 by inference exporters too); from 14 on it is training_mode, and the outputs exist only with it.
    params = [scale, B, input_mean, input_var]
    training = bool(training_mode) if g.opset >= 14 else any(g.output_used(i) for i in range(1, 5))
    if training:
        if not spatial:
            raise g.unsupported("training mode with spatial=0 (per-activation statistics) is not supported")
        n_out = max(1, g.num_outputs)
        outs = g.add("BatchNormalizationTraining", [X, *params], outputs=n_out, epsilon=float(epsilon),
                     momentum=float(momentum))
        return outs if n_out > 1 else outs[0]
    if spatial or all(g.info(p).rank == 1 for p in params):
        return g.add("BatchNormalization", [X, *params], epsilon=float(epsilon))
    return _per_activation_batch_norm(g, X, params, float(epsilon))


def _per_activation_batch_norm(g: ConvertContext, X: str, params: list[str], epsilon: float) -> str:
    """spatial=0: statistics of shape (C, d1, ...) apply per activation; fold them into y = x * a + b."""
    values = [g.value(p) for p in params]
    if any(v is None for v in values):
        raise g.unsupported("spatial=0 with non-constant (C, d1, ...) statistics is not supported")
    scale, bias, mean, var = (np.asarray(v, dtype=np.float64) for v in values)
    a = scale / np.sqrt(var + epsilon)
    dtype = g.info(X).dtype
    mul = g.add("Mul", [X, g.const(a.astype(dtype), dtype)])
    return g.add("Add", [mul, g.const((bias - mean * a).astype(dtype), dtype)])


@onnx_op("InstanceNormalization", since=1)
def InstanceNormalization(g: ConvertContext, input: str, scale: str, B: str, *, consumed_inputs: Any = None,
                          epsilon: float = 1e-5) -> str:
    return g.add("InstanceNormalization", [input, scale, B], epsilon=float(epsilon))


@onnx_op("LRN", since=1)
def LRN(g: ConvertContext, X: str, *, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0,
        size: int | None = None) -> str:
    if size is None:
        raise g.error("attribute size is missing; LRN needs the channel window size")
    return g.add("LRN", [X], alpha=float(alpha), beta=float(beta), bias=float(bias), size=int(size))


# -- softmax family ------------------------------------------------------------------------------------------------
def _coerced_2d(g: ConvertContext, op: str, x: str, axis: int) -> str:
    """Opset < 13: normalize over all dims from ``axis`` on, as if the input were flattened to 2-D there."""
    shape = g.info(x).shape
    if shape is None:
        raise g.unsupported(f"{op} before opset 13 needs the input rank to express its 2-D coercion")
    try:
        ax = normalize_axis(axis, len(shape))
    except ValueError:
        raise g.error(f"axis {axis} is out of range for input of rank {len(shape)}") from None
    if ax >= len(shape) - 1:
        return g.add(op, [x], axis=-1)  # already a single trailing axis: the semantics coincide
    # Reshape's 0 copies a dim, so (0, .., 0, -1) flattens the tail without knowing the (maybe symbolic) batch dims.
    flat = g.add("Reshape", [x, g.const(np.array([0] * ax + [-1], dtype=np.int64), "int64")])
    y = g.add(op, [flat], axis=-1)
    tail = shape[ax:]
    if all(isinstance(d, int) for d in tail):
        back = g.const(np.array([0] * ax + list(tail), dtype=np.int64), "int64")
    else:
        back = g.add("Shape", [x])
    return g.add("Reshape", [y, back])


def _softmax_converters(op: str) -> None:
    """Register ``op``'s two converters: the coercing one (opset 1-12) and the single-axis one (13+)."""
    def old(g: ConvertContext, input: str, *, axis: int = 1) -> str:
        return _coerced_2d(g, op, input, axis)

    def new(g: ConvertContext, input: str, *, axis: int = -1) -> str:
        return g.add(op, [input], axis=axis)

    old.__name__ = new.__name__ = op
    onnx_op(op, since=1)(old)
    onnx_op(op, since=13)(new)


for _op in ("Softmax", "LogSoftmax", "Hardmax"):
    _softmax_converters(_op)


# -- Layer / RMS / Group / Lp / MeanVariance -----------------------------------------------------------------------
@onnx_op("LayerNormalization", since=17)
def LayerNormalization(g: ConvertContext, X: str, Scale: str, B: str | None = None, *, axis: int = -1,
                       epsilon: float = 1e-5, stash_type: int = 1) -> Any:
    n_out = max(1, g.num_outputs)
    outs = g.add("LayerNormalization", [X, Scale, B], outputs=n_out, axis=axis, epsilon=float(epsilon),
                 stash_type=stash_type)
    return outs if n_out > 1 else outs[0]


@onnx_op("RMSNormalization", since=23)
def RMSNormalization(g: ConvertContext, X: str, scale: str, *, axis: int = -1, epsilon: float = 1e-5,
                     stash_type: int = 1) -> str:
    return g.add("RMSNormalization", [X, scale], axis=axis, epsilon=float(epsilon), stash_type=stash_type)


@onnx_op("GroupNormalization", since=18)
def GroupNormalization_18(g: ConvertContext, X: str, scale: str, bias: str, *, epsilon: float = 1e-5,
                          num_groups: int | None = None) -> str:
    groups = _num_groups(g, num_groups)
    shape = g.info(X).shape
    c = shape[1] if shape is not None and len(shape) > 1 else None
    per_channel = []
    for what, t in (("scale", scale), ("bias", bias)):
        v = g.value(t)
        if v is None or not isinstance(c, int):
            raise g.unsupported(f"GroupNormalization-18 needs a constant {what} and a known channel count to "
                                f"expand per-group values to channels")
        per_channel.append(g.const(np.repeat(np.asarray(v), c // groups), g.info(t).dtype))
    return g.add("GroupNormalization", [X, *per_channel], epsilon=float(epsilon), num_groups=groups)


@onnx_op("GroupNormalization", since=21)
def GroupNormalization(g: ConvertContext, X: str, scale: str, bias: str, *, epsilon: float = 1e-5,
                       num_groups: int | None = None, stash_type: int = 1) -> str:
    return g.add("GroupNormalization", [X, scale, bias], epsilon=float(epsilon),
                 num_groups=_num_groups(g, num_groups), stash_type=stash_type)


def _num_groups(g: ConvertContext, num_groups: int | None) -> int:
    if num_groups is None:
        raise g.error("attribute num_groups is missing")
    return int(num_groups)


@onnx_op("LpNormalization", since=1)
def LpNormalization(g: ConvertContext, input: str, *, axis: int = -1, p: int = 2) -> str:
    if p not in (1, 2):
        raise g.unsupported(f"p = {p} is not supported; supported: 1, 2")
    return g.add("LpNormalization", [input], axis=axis, p=p)


@onnx_op("MeanVarianceNormalization", since=9)
def MeanVarianceNormalization(g: ConvertContext, X: str, *, axes: Any = (0, 2, 3)) -> str:
    return g.add("MeanVarianceNormalization", [X], axes=tuple(axes))
