"""ONNX model conformance: the models shipped in the onnx wheel (nine light_* CNNs, simple, pytorch-*)."""
from __future__ import annotations

import pytest

from tests.conformance.cases import Case, model_cases
from tests.conformance.test_onnx_node import OPT_LEVELS, run_case

CASES = model_cases()


@pytest.mark.conformance
@pytest.mark.parametrize("opt_level", OPT_LEVELS, ids=lambda o: f"O{o}")
@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}/{c.name}" for c in CASES])
def test_model_case(case: Case, opt_level: int) -> None:
    run_case(case, opt_level)
