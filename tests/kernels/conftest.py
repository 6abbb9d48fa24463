"""Shared fixtures for kernel tests: a persistent kernel cache (fast reruns) and ISA helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantgraph import config
from quantgraph.kernels import target

CACHE_DIR = os.environ.get("QUANTGRAPH_TEST_CACHE_DIR") or str(Path(__file__).resolve().parents[2] / ".qg_cache")
ISAS = target.available_isas()  # best first, always ends with "portable" (includes opt-in rungs such as amx)
BEST = target.default_isa()  # what runs when QUANTGRAPH_ISA is not set


def requires(feature: str) -> pytest.MarkDecorator:
    """Skip unless the host has ``feature`` (an LLVM feature name or an ISA rung name)."""
    return pytest.mark.skipif(not target.has(feature), reason=f"host CPU lacks {feature}")


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache_dir():
    with config.override(cache_dir=CACHE_DIR):
        yield


@pytest.fixture(params=ISAS)
def isa(request):
    """Every ISA rung the host can run (the portable one always)."""
    with config.override(isa=request.param):
        yield request.param
