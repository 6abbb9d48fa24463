"""Rewrite rules, grouped into the rule sets the pipeline runs (each module's docstring lists its rewrites)."""
from __future__ import annotations

from quantgraph.compiler.rules import (activation, attention, cleanup, conv, epilogue, gemm, norm, realize_qdq,
                                       realize_qlinear)

#: Identity/Dropout/no-op elimination
ELIMINATE = cleanup.ELIMINATE
#: transpose/reshape cancellation
CANCEL = cleanup.CANCEL
#: BatchNorm folded into the Conv/Gemm/MatMul before it
BN_FOLDING = norm.BN_FOLDING
#: canonical forms, zero Pad folded into the Conv after it, BatchNorm as an affine, LayerNorm / GELU / HardSwish
#: written as primitive ops, 1-D convolutions as 2-D ones
RECOGNIZE = cleanup.CANONICAL + conv.PAD_FOLDING + conv.CONV1D + norm.BN_AFFINE + norm.NORMS + activation.RULES
#: the multi-head attention core into FusedAttention (before FUSIONS turns its MatMuls into FusedMatMul)
ATTENTION = attention.RULES
#: Conv/Gemm/MatMul into FusedConv/FusedMatMul with bias, residual and activation epilogues
FUSIONS = conv.RULES + gemm.RULES + epilogue.RULES
#: QOperator ops and QDQ-wrapped Conv/MatMul/Gemm/Add into the int8 ops QConv/QMatMul/QAdd (before folding, which
#: would turn the weights' DequantizeLinear into float constants)
REALIZE = realize_qlinear.RULES + realize_qdq.RULES
#: DQ-fed Conv/MatMul/Gemm whose output float ops read, into QConv/QMatMul writing float32 (after REALIZE)
REALIZE_FLOAT = realize_qdq.FLOAT_OUT

__all__ = ["ELIMINATE", "CANCEL", "BN_FOLDING", "RECOGNIZE", "ATTENTION", "FUSIONS", "REALIZE", "REALIZE_FLOAT"]
