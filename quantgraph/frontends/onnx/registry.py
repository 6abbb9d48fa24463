"""The ONNX converter table and the ``onnx_op`` decorator.

A converter is a function named after the ONNX op; its positional parameters are the node's inputs (tensor names,
None when omitted) and its keyword-only parameters are the ONNX attributes with the spec's defaults:

    @onnx_op("LeakyRelu", since=6)
    def LeakyRelu(g, X, *, alpha=0.01):
        return g.add("LeakyRelu", [X], alpha=alpha)

It returns the tensor name (or a tuple, one per ONNX output) that holds each output. Versions: register
``since=N``; the importer takes the newest version <= the model's opset.
"""
from __future__ import annotations

from quantgraph.frontends.common import ConverterTable

ONNX_CONVERTERS = ConverterTable("onnx")
onnx_op = ONNX_CONVERTERS.register
