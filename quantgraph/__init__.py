"""quantgraph: a neural-network graph compiler for fast (int8) CPU inference."""
from __future__ import annotations

__version__ = "0.1.0"

from quantgraph.compiler.api import compile  # noqa: E402
from quantgraph.compiler.artifact import load  # noqa: E402
from quantgraph.compiler.executable import CompiledModel  # noqa: E402
from quantgraph.compiler.quantize import CalibrationStats, calibrate  # noqa: E402
from quantgraph.frontends.onnx import load_onnx  # noqa: E402
from quantgraph.ir.graph import Graph  # noqa: E402

__all__ = ["compile", "load", "calibrate", "load_onnx", "CompiledModel", "CalibrationStats", "Graph", "__version__"]
