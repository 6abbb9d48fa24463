"""Normalization ops (BatchNormalization, LRN, Layer/Instance/Group/RMS/Lp/MeanVariance normalization) and the
softmax family (Softmax, LogSoftmax, Hardmax, all with the single-axis semantics of ONNX-13).

References accumulate in the op's stash type (float32 unless the input is float64, as ONNX's ``stash_type`` says)
and cast the result back to the input dtype, so float16 models keep float16 outputs without float16 rounding
inside the mean/variance.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from quantgraph.ir.dtypes import dtype_name, to_numpy
from quantgraph.ir.node import Node
from quantgraph.ir.ops.shape import axis_or_none as _axis
from quantgraph.ir.ops.registry import Fusion, REQUIRED, op, same_type
from quantgraph.ir.shapes import Shape, normalize_axis
from quantgraph.ir.tensor import TensorInfo, TensorType

batch_norm = op("BatchNormalization", inputs="X scale B input_mean input_var", outputs="Y", fusion=Fusion.OPAQUE,
                weights=(1, 2, 3, 4),
                attrs={"epsilon": 1e-5}, doc="inference-mode BatchNormalization (ONNX-15 with training_mode=0)")
batch_norm_train = op("BatchNormalizationTraining", inputs="X scale B input_mean input_var",
                      outputs="Y running_mean? running_var? saved_mean? saved_inv_std?", fusion=Fusion.OPAQUE,
                      attrs={"epsilon": 1e-5, "momentum": 0.9},
                      doc="training-mode BatchNormalization (ONNX-15 training_mode=1): normalizes with the batch "
                          "statistics and outputs the momentum-updated running ones (a separate op so that "
                          "inference rewrites and kernels never see it); saved_mean/saved_inv_std are the batch mean "
                          "and 1/sqrt(var + epsilon) that opsets < 14 also output (as onnxruntime computes them)")
lrn = op("LRN", inputs="X", outputs="Y", fusion=Fusion.OPAQUE,
         attrs={"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": REQUIRED})
softmax = op("Softmax", inputs="input", outputs="output", fusion=Fusion.REDUCE, attrs={"axis": -1})
log_softmax = op("LogSoftmax", inputs="input", outputs="output", fusion=Fusion.REDUCE, attrs={"axis": -1})
hardmax = op("Hardmax", inputs="input", outputs="output", fusion=Fusion.REDUCE, attrs={"axis": -1})
layer_norm = op("LayerNormalization", inputs="X Scale B?", outputs="Y Mean? InvStdDev?", fusion=Fusion.REDUCE,
                weights=(1, 2), attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})
rms_norm = op("RMSNormalization", inputs="X scale", outputs="Y", fusion=Fusion.REDUCE,
              attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1})
instance_norm = op("InstanceNormalization", inputs="input scale B", outputs="output", fusion=Fusion.REDUCE,
                   weights=(1, 2),
                   attrs={"epsilon": 1e-5})
group_norm = op("GroupNormalization", inputs="X scale bias", outputs="Y", fusion=Fusion.REDUCE,
                attrs={"epsilon": 1e-5, "num_groups": REQUIRED, "stash_type": 1},
                doc="ONNX-21 semantics: scale and bias hold one value per channel")
lp_norm = op("LpNormalization", inputs="input", outputs="output", fusion=Fusion.REDUCE, attrs={"axis": -1, "p": 2})
mvn = op("MeanVarianceNormalization", inputs="X", outputs="Y", fusion=Fusion.REDUCE, attrs={"axes": (0, 2, 3)})

#: ONNX TensorProto element codes that ``stash_type`` may name
_STASH = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


# -- shared helpers ----------------------------------------------------------------------------------------------


def _stash(n: Node) -> np.dtype:
    code = n.attrs["stash_type"]
    if code not in _STASH:
        raise n.unsupported(f"stash_type {code} is not supported; supported: "
                            + ", ".join(f"{k} ({v})" for k, v in _STASH.items()))
    return to_numpy(_STASH[code])


def _acc(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _standardize(x: np.ndarray, axes: Sequence[int], eps: float, acc: np.dtype) -> tuple[np.ndarray, ...]:
    """(x - mean) / sqrt(var + eps) over ``axes`` in ``acc``; also returns mean and 1/sqrt(var + eps)."""
    xa = x.astype(acc, copy=False)
    mean = xa.mean(axis=tuple(axes), keepdims=True)
    centered = xa - mean
    inv_std = 1.0 / np.sqrt((centered * centered).mean(axis=tuple(axes), keepdims=True) + acc.type(eps))
    return centered * inv_std, mean, inv_std


def _channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel (C,) vector shaped to broadcast against (N, C, d1, ...)."""
    return v.reshape((1, -1) + (1,) * (rank - 2))


def _check_rank(n: Node, x: TensorInfo, least: int, layout: str) -> None:
    if x.rank is not None and x.rank < least:
        raise n.error(f"X has shape {x.shape}; {n.op} expects {layout}")


def _check_channel_params(n: Node, x: TensorInfo, params: Sequence[tuple[str, TensorInfo]], count: object) -> None:
    for name, p in params:
        if p.shape is None:
            continue
        if len(p.shape) != 1 or (isinstance(count, int) and isinstance(p.shape[0], int) and p.shape[0] != count):
            raise n.error(f"{name} has shape {p.shape}; {n.op} expects a 1-D tensor of {count} values "
                          f"(one per channel of X {x.shape})")


# -- BatchNormalization / InstanceNormalization / LRN ------------------------------------------------------------
@batch_norm.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo, b: TensorInfo, mean: TensorInfo, var: TensorInfo) -> TensorType:
    _check_rank(n, x, 2, "(N, C, d1, ...)")
    c = x.shape[1] if x.shape is not None else None
    _check_channel_params(n, x, [("scale", scale), ("B", b), ("input_mean", mean), ("input_var", var)], c)
    return same_type(x)


@batch_norm.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray, b: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    acc = _acc(x)
    a = scale.astype(acc) / np.sqrt(var.astype(acc) + acc.type(n.attrs["epsilon"]))
    shift = b.astype(acc) - mean.astype(acc) * a
    return (x * _channel(a, x.ndim) + _channel(shift, x.ndim)).astype(x.dtype, copy=False)


@batch_norm_train.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo, b: TensorInfo, mean: TensorInfo, var: TensorInfo) -> list[TensorType]:
    y = batch_norm.run_infer(n, [x, scale, b, mean, var])[0]
    c = x.shape[1] if x.shape is not None else None
    return [y] + [TensorType((c,), x.dtype)] * 4


@batch_norm_train.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray, b: np.ndarray, mean: np.ndarray,
      var: np.ndarray) -> tuple[np.ndarray, ...]:
    acc, axes = _acc(x), (0,) + tuple(range(2, x.ndim))
    xa = x.astype(acc)
    batch_mean, batch_var = xa.mean(axis=axes), xa.var(axis=axes)  # NOTE: biased variance, as ONNX specifies
    y = (xa - _channel(batch_mean, x.ndim)) / np.sqrt(_channel(batch_var, x.ndim) + acc.type(n.attrs["epsilon"]))
    y = y * _channel(scale.astype(acc), x.ndim) + _channel(b.astype(acc), x.ndim)
    m = acc.type(n.attrs["momentum"])
    running_mean = mean.astype(acc) * m + batch_mean * (1 - m)
    running_var = var.astype(acc) * m + batch_var * (1 - m)
    inv_std = 1 / np.sqrt(batch_var + acc.type(n.attrs["epsilon"]))
    return tuple(v.astype(x.dtype) for v in (y, running_mean, running_var, batch_mean, inv_std))


@instance_norm.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo, b: TensorInfo) -> TensorType:
    _check_rank(n, x, 3, "(N, C, d1, ...) with at least one spatial axis")
    _check_channel_params(n, x, [("scale", scale), ("B", b)], x.shape[1] if x.shape is not None else None)
    return same_type(x)


@instance_norm.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray, b: np.ndarray) -> np.ndarray:
    y = _standardize(x, range(2, x.ndim), n.attrs["epsilon"], _acc(x))[0]
    return (y * _channel(scale, x.ndim) + _channel(b, x.ndim)).astype(x.dtype)


@lrn.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    _check_rank(n, x, 3, "(N, C, d1, ...)")
    if n.attrs["size"] < 1:
        raise n.error(f"size is {n.attrs['size']}; expected a positive number of channels")
    return same_type(x)


@lrn.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    size, acc = n.attrs["size"], _acc(x)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.square(x.astype(acc))
    # sum over the channel window [c - lo, c + hi] as a difference of cumulative sums (one pass, any size)
    padded = np.pad(sq, [(0, 0), (lo + 1, hi)] + [(0, 0)] * (x.ndim - 2))
    csum = np.cumsum(padded, axis=1)
    window = csum[:, size:] - csum[:, :-size]
    a = n.attrs
    return (x / (a["bias"] + a["alpha"] / size * window) ** a["beta"]).astype(x.dtype)


# -- softmax family ------------------------------------------------------------------------------------------------
def _softmax_type(n: Node, x: TensorInfo) -> TensorType:
    _axis(n, n.attrs["axis"], x.rank)
    return same_type(x)


for _d in (softmax, log_softmax, hardmax):
    _d.infer(lambda n, x: _softmax_type(n, x))


@softmax.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=n.attrs["axis"], keepdims=True))
    return (e / e.sum(axis=n.attrs["axis"], keepdims=True)).astype(x.dtype)


@log_softmax.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=n.attrs["axis"], keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=n.attrs["axis"], keepdims=True))).astype(x.dtype)


@hardmax.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    axis = normalize_axis(n.attrs["axis"], x.ndim)
    first = np.expand_dims(np.argmax(x, axis=axis), axis)  # ties: the first maximum wins
    return (np.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - 1 - axis)) == first).astype(x.dtype)


# -- Layer / RMS / Group normalization ---------------------------------------------------------------------------
def _check_broadcast_param(n: Node, name: str, p: TensorInfo | None, target: Shape) -> None:
    """Scale/bias of Layer/RMS normalization broadcast unidirectionally to the normalized trailing dims."""
    if p is None or p.shape is None or target is None:
        return
    if len(p.shape) > len(target) or any(isinstance(a, int) and isinstance(b, int) and a not in (1, b)
                                         for a, b in zip(p.shape[::-1], target[::-1])):
        raise n.error(f"{name} has shape {p.shape}; {n.op} expects it to broadcast to the input {target}")


@layer_norm.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo, b: TensorInfo | None) -> list[TensorType]:
    axis = _axis(n, n.attrs["axis"], x.rank)
    stash = dtype_name(_stash(n))
    for name, p in (("Scale", scale), ("B", b)):
        _check_broadcast_param(n, name, p, x.shape)
    stats = None if x.shape is None else tuple(x.shape[:axis]) + (1,) * (len(x.shape) - axis)  # type: ignore
    return [same_type(x), TensorType(stats, stash), TensorType(stats, stash)]


@layer_norm.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, ...]:
    axis = normalize_axis(n.attrs["axis"], x.ndim)
    stash = _stash(n)
    y, mean, inv_std = _standardize(x, range(axis, x.ndim), n.attrs["epsilon"], stash)
    y = y * scale.astype(stash) + (0 if b is None else b.astype(stash))
    return y.astype(x.dtype), mean, inv_std


@rms_norm.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo) -> TensorType:
    _axis(n, n.attrs["axis"], x.rank)
    _stash(n)
    _check_broadcast_param(n, "scale", scale, x.shape)
    return same_type(x)


@rms_norm.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    axes = tuple(range(normalize_axis(n.attrs["axis"], x.ndim), x.ndim))
    stash = _stash(n)
    xs = x.astype(stash)
    inv_rms = 1.0 / np.sqrt(np.square(xs).mean(axis=axes, keepdims=True) + stash.type(n.attrs["epsilon"]))
    return (xs * inv_rms * scale.astype(stash)).astype(x.dtype)


@group_norm.infer
def _(n: Node, x: TensorInfo, scale: TensorInfo, bias: TensorInfo) -> TensorType:
    _check_rank(n, x, 3, "(N, C, d1, ...)")
    _stash(n)
    groups = n.attrs["num_groups"]
    c = x.shape[1] if x.shape is not None else None
    if groups < 1 or isinstance(c, int) and c % groups:
        raise n.error(f"num_groups is {groups} but X has {c} channels; expected a positive divisor of C")
    _check_channel_params(n, x, [("scale", scale), ("bias", bias)], c)
    return same_type(x)


@group_norm.reference
def _(n: Node, x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    groups = n.attrs["num_groups"]
    grouped = x.reshape((x.shape[0], groups, -1))
    y = _standardize(grouped, (2,), n.attrs["epsilon"], _stash(n))[0].reshape(x.shape)
    return (y * _channel(scale, x.ndim) + _channel(bias, x.ndim)).astype(x.dtype)


# -- Lp / MeanVariance normalization -----------------------------------------------------------------------------
@lp_norm.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    _axis(n, n.attrs["axis"], x.rank)
    if n.attrs["p"] not in (1, 2):
        raise n.error(f"p is {n.attrs['p']}; LpNormalization supports p = 1 or 2")
    return same_type(x)


@lp_norm.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    xa = x.astype(_acc(x))
    axis = n.attrs["axis"]
    norm = (np.abs(xa).sum(axis=axis, keepdims=True) if n.attrs["p"] == 1
            else np.sqrt(np.square(xa).sum(axis=axis, keepdims=True)))
    # NOTE: an all-zero slice stays zero instead of becoming NaN (ONNX reference)
    return np.where(norm == 0, 0, xa / np.where(norm == 0, 1, norm)).astype(x.dtype)


@mvn.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    for a in n.attrs["axes"]:
        _axis(n, a, x.rank, "axes value")
    return same_type(x)


@mvn.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    axes = tuple(normalize_axis(a, x.ndim) for a in n.attrs["axes"])
    xa = x.astype(_acc(x))
    mean = xa.mean(axis=axes, keepdims=True)
    std = np.sqrt(np.maximum((xa * xa).mean(axis=axes, keepdims=True) - mean * mean, 0))
    # NOTE: ONNX adds epsilon 1e-9 to the standard deviation, not to the variance
    return ((xa - mean) / (std + 1e-9)).astype(x.dtype)
