"""Rewrite rules, grouped into the rule sets the pipelines run (each module's docstring lists its rewrites)."""
from __future__ import annotations

from quantgraph.compiler.rules import (activation, attention, cleanup, conv, epilogue, gemm, norm, realize_qdq,
                                       realize_qlinear)

#: Identity/Dropout/no-op elimination and transpose/reshape cancellation (O1 cleanup)
CLEANUP = cleanup.RULES
#: BatchNorm folding and recognition of LayerNorm / GELU / HardSwish written as primitive ops
CANONICAL = norm.RULES + activation.RULES
#: Conv/Gemm/MatMul into FusedConv/FusedMatMul with bias, residual and activation epilogues
FUSIONS = conv.RULES + gemm.RULES + epilogue.RULES
#: the multi-head attention core into FusedAttention (before FUSIONS turns its MatMuls into FusedMatMul)
ATTENTION = attention.RULES
#: QOperator ops and QDQ-wrapped Conv/MatMul/Gemm/Add into the int8 ops QConv/QMatMul/QAdd (before folding, which
#: would turn the weights' DequantizeLinear into float constants)
REALIZE = realize_qlinear.RULES + realize_qdq.RULES
ALL = CLEANUP + CANONICAL + ATTENTION + FUSIONS + REALIZE

__all__ = ["CLEANUP", "CANONICAL", "ATTENTION", "FUSIONS", "REALIZE", "ALL"]
