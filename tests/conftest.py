"""Test-wide settings: graph verification after every pass and strict rewriting (a rule that raises is a
PassError, not a skipped rewrite) are always on in tests; the ``rungs`` marker on the tests whose results depend on
the ISA rung (``.ci/run`` runs them again with ``QUANTGRAPH_ISA=avx2`` and ``QUANTGRAPH_ISA=portable``)."""
from __future__ import annotations

from typing import Iterator

import pytest

from quantgraph import config


#: the ISA-dependent subset: every kernel, lowering and plan test (the plan tests include one CNN, ResNet-50, and one
#: transformer, a BERT layer, compiled end to end at O2 and O3); single tests elsewhere use @pytest.mark.rungs
RUNG_DEPENDENT = ("tests/kernels/", "tests/compiler/test_lower.py", "tests/compiler/test_lower_isa.py",
                  "tests/compiler/test_lower_int8.py", "tests/compiler/test_plan.py",
                  "tests/compiler/test_lower_quantized.py", "tests/compiler/quantize/test_matmul_two_activations.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(RUNG_DEPENDENT):
            item.add_marker(pytest.mark.rungs)


@pytest.fixture(autouse=True, scope="session")
def _strict_checks() -> Iterator[None]:
    with config.override(verify=True, strict=True):
        yield
