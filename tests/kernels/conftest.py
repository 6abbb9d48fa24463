"""Shared fixtures for kernel tests: a persistent kernel cache (fast reruns) and ISA helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantgraph import config
from quantgraph.kernels import target

CACHE_DIR = os.environ.get("QUANTGRAPH_TEST_CACHE_DIR") or str(Path(__file__).resolve().parents[2] / ".qg_cache")


def _rungs_in_reach() -> tuple[str, ...]:
    """The rungs the tests may use, best first, always ending with "portable" (opt-in rungs such as amx included).

    With ``QUANTGRAPH_ISA`` set the suite runs as if on a smaller host: only the forced rung and those below it,
    which is what an AVX2-only host would offer for ``QUANTGRAPH_ISA=avx2``.
    """
    if not config.get().isa:
        return target.available_isas()
    order = [isa.name for isa in target.LADDER]
    top = order.index(target.select_isa())
    return tuple(name for name in target.available_isas() if order.index(name) >= top)


ISAS = _rungs_in_reach()
BEST = target.select_isa()  # what runs: the forced rung, else the host's default


def host_has(feature: str) -> bool:
    """``target.has`` for the host the suite runs as (the forced rung's features only, when one is forced)."""
    if feature in target.ISAS:
        return feature in ISAS
    if not config.get().isa:
        return target.has(feature)
    return target.has(feature) and any(feature in target.ISAS[name].requires for name in ISAS)


def requires(feature: str) -> pytest.MarkDecorator:
    """Skip unless the host has ``feature`` (an LLVM feature name or an ISA rung name), as :func:`host_has` says."""
    return pytest.mark.skipif(not host_has(feature), reason=f"host CPU lacks {feature}"
                              + (f" (QUANTGRAPH_ISA={config.get().isa})" if config.get().isa else ""))


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache_dir():
    with config.override(cache_dir=CACHE_DIR):
        yield


@pytest.fixture(params=ISAS)
def isa(request):
    """Every ISA rung the host can run (the portable one always)."""
    with config.override(isa=request.param):
        yield request.param
