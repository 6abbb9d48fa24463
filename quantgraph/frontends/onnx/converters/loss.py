"""ONNX converters: NegativeLogLikelihoodLoss (12, 13, 22) and SoftmaxCrossEntropyLoss (12, 13).

Later versions only widened the types, so one converter per op covers every version.
"""
from __future__ import annotations

from typing import Any

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.ops.loss import REDUCTIONS


def _reduction(g: ConvertContext, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise g.unsupported(f"reduction '{reduction}' is not supported; supported: {', '.join(REDUCTIONS)}")
    return reduction


@onnx_op("NegativeLogLikelihoodLoss", since=12)
def NegativeLogLikelihoodLoss(g: ConvertContext, input: str, target: str, weight: str | None = None, *,
                              ignore_index: int | None = None, reduction: str = "mean") -> str:
    return g.add("NegativeLogLikelihoodLoss", [input, target, weight], ignore_index=ignore_index,
                 reduction=_reduction(g, reduction))


@onnx_op("SoftmaxCrossEntropyLoss", since=12)
def SoftmaxCrossEntropyLoss(g: ConvertContext, scores: str, labels: str, weights: str | None = None, *,
                            ignore_index: int | None = None, reduction: str = "mean") -> Any:
    n_out = 2 if g.output_used(1) else 1
    outs = g.add("SoftmaxCrossEntropyLoss", [scores, labels, weights], outputs=n_out, ignore_index=ignore_index,
                 reduction=_reduction(g, reduction))
    return outs if n_out == 2 else outs[0]
