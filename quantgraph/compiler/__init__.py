"""Graph -> faster graph -> CompiledModel."""
from __future__ import annotations

from quantgraph.compiler.api import compile
from quantgraph.compiler.executable import CompiledModel

__all__ = ["compile", "CompiledModel"]
