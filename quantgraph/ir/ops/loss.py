"""Training losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (ONNX-13 semantics).

Both read class scores laid out (N, C, d1, ...) with integer targets (N, d1, ...). A target equal to
``ignore_index`` contributes nothing and carries no weight; ``mean`` divides by the summed weights of the targets
that count (their number when there is no weight input), as ONNX specifies.
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op, ref, same_type
from quantgraph.ir.tensor import TensorInfo, TensorType

_LOSS_ATTRS = {"ignore_index": None, "reduction": "mean"}
REDUCTIONS = ("none", "sum", "mean")

nll = op("NegativeLogLikelihoodLoss", inputs="input target weight?", outputs="loss", fusion=Fusion.OPAQUE,
         attrs=dict(_LOSS_ATTRS))
sce = op("SoftmaxCrossEntropyLoss", inputs="scores labels weights?", outputs="output log_prob?",
         fusion=Fusion.OPAQUE, attrs=dict(_LOSS_ATTRS))


def _loss_type(n: Node, x: TensorInfo, target: TensorInfo, weight: TensorInfo | None) -> TensorType:
    """The loss: per target element with reduction 'none', else a scalar."""
    if n.attrs["reduction"] not in REDUCTIONS:
        raise n.unsupported(f"reduction '{n.attrs['reduction']}' is not supported; supported: {', '.join(REDUCTIONS)}")
    if x.rank is not None and x.rank < 2:
        raise n.error(f"{n.op} input has shape {x.shape}; expected (N, C, d1, ...)")
    if x.rank is not None and target.rank is not None and target.rank != x.rank - 1:
        raise n.error(f"target has shape {target.shape} for input {x.shape}; expected (N, d1, ...) without C")
    if target.dtype not in ("int32", "int64"):
        raise n.error(f"target has dtype {target.dtype}; expected int32 or int64 class indices")
    if weight is not None and weight.rank not in (None, 1):
        raise n.error(f"weight has shape {weight.shape}; expected one weight per class (C,)")
    if n.attrs["reduction"] != "none":
        return TensorType((), x.dtype)
    return TensorType(target.shape, x.dtype)


def _nll(n: Node, log_p: np.ndarray, target: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    ignore = n.attrs["ignore_index"]
    counted = np.ones(target.shape, dtype=bool) if ignore is None else target != ignore
    safe = np.where(counted, target, 0).astype(np.int64)  # an ignored target may be out of range
    picked = np.take_along_axis(log_p.astype(np.float64), safe[:, None], axis=1)[:, 0]
    w = (np.ones(target.shape) if weight is None else weight.astype(np.float64)[safe]) * counted
    loss = -picked * w
    reduction = n.attrs["reduction"]
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.sum() / w.sum()
    return np.asarray(loss).astype(log_p.dtype)


@nll.infer
def _(n: Node, x: TensorInfo, target: TensorInfo, weight: TensorInfo | None) -> TensorType:
    return _loss_type(n, x, target, weight)


@nll.reference
def _(n: Node, x: np.ndarray, target: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    return _nll(n, x, target, weight)


@sce.infer
def _(n: Node, x: TensorInfo, labels: TensorInfo, weights: TensorInfo | None) -> list[TensorType]:
    return [_loss_type(n, x, labels, weights), same_type(x)]


@sce.reference
def _(n: Node, x: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    log_p = ref("LogSoftmax", x, axis=1)
    return _nll(n, log_p, labels, weights), log_p
