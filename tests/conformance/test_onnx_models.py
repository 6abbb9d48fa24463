"""ONNX model conformance: the models shipped in the onnx wheel (nine light_* CNNs, simple, pytorch-*)."""
from __future__ import annotations

import pytest

from tests.conformance.cases import Case, model_cases
from tests.conformance.test_onnx_node import run_case

CASES = model_cases()


@pytest.mark.conformance
@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}/{c.name}" for c in CASES])
def test_model_case(case: Case) -> None:
    run_case(case)
