"""Op definitions, one module per family. Importing ``load_all`` registers every op."""
from __future__ import annotations

import importlib

_MODULES = ("elementwise", "logic", "nn", "pool", "norm", "shape", "indexing", "resize", "reduce", "quant", "rnn",
            "misc", "fused",
            "attention", "detection", "loss",
            "fused_attention", "fused_quant", "rnn_quant", "control_flow", "sequence", "optional")
_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _MODULES:
        importlib.import_module(f"quantgraph.ir.ops.{mod}")
