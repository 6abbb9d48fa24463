"""ONNX node conformance: every node case of every op quantgraph claims must match onnx's stored outputs.

``run_case`` also runs the model cases. A softmax output that rounding of its logits decides (the light_* models'
huge constant-fill logits) is compared through its logits and where it is well conditioned (conditioning.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest

import quantgraph
from quantgraph.errors import UnsupportedOpError
from quantgraph.ir.verify import verify
from tests.conformance.cases import Case, compare, node_cases, non_tensor_io, unclaimed_ops
from tests.conformance.conditioning import (SoftmaxOutput, assert_logits_close, assert_softmax_where_comparable,
                                            comparable, onnxruntime_outputs, softmax_outputs, with_outputs)

CASES = node_cases()


#: 0 is the reference interpreter; 2 adds fusion and compiled kernels; 3 adds the NHWC layout pass
OPT_LEVELS = (0, 2, 3)


@dataclass
class _IllConditioned:
    """A softmax output some of whose values rounding of the logits decides (see conditioning.py), with
    onnxruntime's logits and the mask of the comparable values, per data set."""

    out: SoftmaxOutput
    logits: list[np.ndarray]
    masks: list[np.ndarray]


_ILL: dict[str, list[_IllConditioned]] = {}


def _ill_conditioned(case: Case) -> list[_IllConditioned]:
    """The case's softmax outputs that cannot be compared as a whole (computed once per case, not per level)."""
    key = f"{case.kind}/{case.name}"
    if key not in _ILL:
        found = []
        for so in softmax_outputs(case.proto()):
            probe = with_outputs(case.proto(), [so.logits])
            logits = [onnxruntime_outputs(probe, _arrays(ins))[-1] for ins, _ in case.data()]
            masks = [comparable(z, so.axis, so.opset, case.rtol, case.atol) for z in logits]
            if not all(m.all() for m in masks):
                found.append(_IllConditioned(so, logits, masks))
        _ILL[key] = found
    return _ILL[key]


def _arrays(values: list) -> list[np.ndarray]:
    return [onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else  # list: a sequence; None: empty
            [np.asarray(v) for v in x] if isinstance(x, list) else None if x is None else np.asarray(x) for x in values]


def run_case(case: Case, opt_level: int) -> None:
    proto = case.proto()
    missing = unclaimed_ops(proto)
    if missing:
        pytest.skip(f"unclaimed op: {', '.join(missing)}")
    if non_tensor_io(proto):
        pytest.skip("unclaimed io: sequence/optional/map inputs or outputs")
    ill = _ill_conditioned(case)
    if ill:  # NOTE: these models also output their logits, compared instead of the softmax (conditioning.py)
        proto = with_outputs(proto, [c.out.logits for c in ill])
    try:
        model = quantgraph.compile(proto, opt_level=opt_level)
    except UnsupportedOpError as exc:
        pytest.skip(f"unsupported: {exc}")
    verify(model.graph)
    special = {c.out.index for c in ill}
    for k, (inputs, outputs) in enumerate(case.data()):
        got = model(*_arrays(inputs))
        want = _arrays(outputs)
        got, logits = got[:len(want)], got[len(want):]
        compare([g for i, g in enumerate(got) if i not in special], [w for i, w in enumerate(want) if i not in special],
                case.rtol, case.atol)
        for c, z in zip(ill, logits):
            what = f"output {c.out.index} (Softmax of '{c.out.logits}')"
            assert_logits_close(z, c.logits[k], case.rtol, case.atol, what)
            assert_softmax_where_comparable(got[c.out.index], want[c.out.index], c.masks[k], c.out.axis,
                                            c.out.opset, case.rtol, case.atol, what)


@pytest.mark.conformance
@pytest.mark.parametrize("opt_level", OPT_LEVELS, ids=lambda o: f"O{o}")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case: Case, opt_level: int) -> None:
    run_case(case, opt_level)
