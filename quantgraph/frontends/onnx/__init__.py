"""ONNX frontend: ``load_onnx(path | ModelProto) -> ir.Graph``."""
from __future__ import annotations

from quantgraph.frontends.onnx.importer import import_onnx, read_model

load_onnx = import_onnx

__all__ = ["import_onnx", "load_onnx", "read_model"]
