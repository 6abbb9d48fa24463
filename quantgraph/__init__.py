"""quantgraph: a neural-network graph compiler for fast (int8) CPU inference."""
from __future__ import annotations

import logging as _logging

__version__ = "0.1.0"

from quantgraph import config as _config  # noqa: E402
from quantgraph.compiler.api import compile  # noqa: E402
from quantgraph.compiler.artifact import load  # noqa: E402
from quantgraph.compiler.executable import CompiledModel  # noqa: E402
from quantgraph.compiler.quantize import CalibrationStats, calibrate  # noqa: E402
from quantgraph.frontends.onnx import load_onnx  # noqa: E402
from quantgraph.ir.graph import Graph  # noqa: E402

# NOTE: a library adds no log handler of its own (the application decides); QUANTGRAPH_DEBUG=2 is the user asking
# for the rewrite rules' nearest misses, which are logged at INFO, so it gets a stderr handler when none is set
if _config.get().debug >= 2 and not _logging.getLogger("quantgraph").handlers:
    _handler = _logging.StreamHandler()
    _handler.setFormatter(_logging.Formatter("quantgraph: %(levelname)s: %(name)s: %(message)s"))
    _logging.getLogger("quantgraph").addHandler(_handler)
    _logging.getLogger("quantgraph").setLevel(_logging.DEBUG)

__all__ = ["compile", "load", "calibrate", "load_onnx", "CompiledModel", "CalibrationStats", "Graph", "__version__"]
