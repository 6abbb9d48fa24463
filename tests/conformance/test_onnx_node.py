"""ONNX node conformance: every node case of every op quantgraph claims must match onnx's stored outputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import quantgraph
from quantgraph.errors import UnsupportedOpError
from quantgraph.ir.verify import verify
from tests.conformance.cases import Case, compare, node_cases, non_tensor_io, unclaimed_ops

CASES = node_cases()


#: 0 is the reference interpreter; 2 adds fusion and compiled kernels; 3 adds the NHWC layout pass
OPT_LEVELS = (0, 2, 3)


def run_case(case: Case, opt_level: int) -> None:
    proto = case.proto()
    missing = unclaimed_ops(proto)
    if missing:
        pytest.skip(f"unclaimed op: {', '.join(missing)}")
    if non_tensor_io(proto):
        pytest.skip("unclaimed io: sequence/optional/map inputs or outputs")
    try:
        model = quantgraph.compile(proto, opt_level=opt_level)
    except UnsupportedOpError as exc:
        pytest.skip(f"unsupported: {exc}")
    verify(model.graph)
    for inputs, outputs in case.data():
        feeds = [onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)
                 for x in inputs]
        got = model(*feeds)
        compare(got, [onnx.numpy_helper.to_array(w) if isinstance(w, onnx.TensorProto) else w for w in outputs],
                case.rtol, case.atol)


@pytest.mark.conformance
@pytest.mark.parametrize("opt_level", OPT_LEVELS, ids=lambda o: f"O{o}")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case: Case, opt_level: int) -> None:
    run_case(case, opt_level)
