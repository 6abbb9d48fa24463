"""The ONNX conformance cases: node cases from the installed onnx package, model cases from the data it ships.

A case runs when every node of its model has a quantgraph converter; otherwise it is skipped with the reason (the
unclaimed ops, or an element type quantgraph does not support). ``compare`` is the comparison the ONNX backend
test runner makes (same shape, same dtype, allclose with the case's rtol/atol).
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from quantgraph.frontends.onnx.importer import MAX_OPSET, _load_converters
from quantgraph.frontends.onnx.registry import ONNX_CONVERTERS

DATA_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
MODEL_KINDS = ("light", "simple", "pytorch-converted", "pytorch-operator")


@dataclass
class Case:
    name: str
    kind: str
    load: Callable[[], onnx.ModelProto]
    data: Callable[[], list[tuple[list[Any], list[Any]]]]
    rtol: float = 1e-3
    atol: float = 1e-7
    model: onnx.ModelProto | None = field(default=None, repr=False)

    def proto(self) -> onnx.ModelProto:
        if self.model is None:
            self.model = self.load()
        return self.model


def node_cases() -> list[Case]:
    """Every node case of the installed onnx (about 1,900), built in memory by onnx's own case generators."""
    import warnings

    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        found = node.collect_testcases()
    return [Case(c.name, "node", (lambda m=c.model: m), (lambda d=c.data_sets: d), c.rtol, c.atol, c.model)
            for c in found]


def _read_pb(path: str) -> np.ndarray:
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def _dataset_dirs(case_dir: str) -> list[tuple[list[Any], list[Any]]]:
    sets = []
    for d in sorted(glob.glob(os.path.join(case_dir, "test_data_set_*"))):
        ins = [_read_pb(p) for p in sorted(glob.glob(os.path.join(d, "input_*.pb")),
                                           key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        outs = [_read_pb(p) for p in sorted(glob.glob(os.path.join(d, "output_*.pb")),
                                            key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        sets.append((ins, outs))
    return sets


def _light_data(model_path: str) -> list[tuple[list[Any], list[Any]]]:
    """The inputs onnx's runner makes for light models (arange / n), with the stored expected output."""
    proto = onnx.load(model_path)
    inits = {i.name for i in proto.graph.initializer}
    ins = []
    for x in proto.graph.input:
        if x.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        ins.append((np.arange(n).reshape(shape) / n).astype(np.float32))
    prefix = os.path.splitext(model_path)[0]
    outs = [_read_pb(f"{prefix}_output_{i}.pb") for i in range(len(proto.graph.output))]
    return [(ins, outs)]


def model_cases() -> list[Case]:
    """The model cases shipped in the onnx wheel: light_* architectures, simple, pytorch-converted/-operator."""
    cases = []
    for path in sorted(glob.glob(os.path.join(DATA_DIR, "light", "light_*.onnx"))):
        name = "test_" + os.path.basename(path)[len("light_"):-len(".onnx")]
        cases.append(Case(name, "light", (lambda p=path: onnx.load(p)), (lambda p=path: _light_data(p))))
    for kind in MODEL_KINDS[1:]:
        for case_dir in sorted(glob.glob(os.path.join(DATA_DIR, kind, "test_*"))):
            model_path = os.path.join(case_dir, "model.onnx")
            if not os.path.exists(model_path):
                continue
            rtol, atol = 1e-3, 1e-7
            meta = os.path.join(case_dir, "data.json")
            if os.path.exists(meta):
                with open(meta) as f:
                    d = json.load(f)
                rtol, atol = d.get("rtol", rtol), d.get("atol", atol)
            cases.append(Case(os.path.basename(case_dir), kind, (lambda p=model_path: onnx.load(p)),
                              (lambda c=case_dir: _dataset_dirs(c)), rtol, atol))
    return cases


def unclaimed_ops(proto: onnx.ModelProto) -> list[str]:
    """Ops of the model (including subgraphs) that have no quantgraph converter at the model's opset."""
    _load_converters()
    opsets = {("" if i.domain == "ai.onnx" else i.domain): i.version for i in proto.opset_import}
    missing = set()

    def walk(nodes: Any) -> None:
        for n in nodes:
            dom = "" if n.domain == "ai.onnx" else n.domain
            if ONNX_CONVERTERS.lookup(dom, n.op_type, opsets.get(dom, MAX_OPSET)) is None:
                missing.add(f"{dom + '::' if dom else ''}{n.op_type}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:  # claimed op: its subgraphs' ops must be claimed too
                    walk(a.g.node)
    walk(proto.graph.node)
    return sorted(missing)


def _claimed_type(tp: Any) -> bool:
    if tp.HasField("tensor_type"):
        return True
    if tp.HasField("sequence_type"):
        return tp.sequence_type.elem_type.HasField("tensor_type")
    return tp.HasField("optional_type") and _claimed_type(tp.optional_type.elem_type)


def non_tensor_io(proto: onnx.ModelProto) -> list[str]:
    """Inputs/outputs that are not tensors, sequences of tensors or optionals of either (maps, sparse tensors)."""
    return [v.name for v in list(proto.graph.input) + list(proto.graph.output) if not _claimed_type(v.type)]


def compare(got: list[np.ndarray], want: list[Any], rtol: float, atol: float) -> None:
    """The ONNX backend runner's comparison: same count, shape and dtype; allclose (exact for non-floats)."""
    assert len(got) == len(want), f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:  # an empty optional
            assert g is None, f"output {i}: {type(g).__name__}, expected None (an empty optional)"
            continue
        if isinstance(w, list):  # a sequence output: a list of arrays, compared item by item
            assert isinstance(g, list) and len(g) == len(w), (f"output {i}: {type(g).__name__}, expected a list of "
                                                              f"{len(w)} arrays")
            compare(g, w, rtol, atol)
            continue
        w = np.asarray(w)
        assert g.shape == w.shape, f"output {i}: shape {g.shape}, expected {w.shape}"
        if w.dtype == object:
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
            continue
        assert g.dtype == w.dtype, f"output {i}: dtype {g.dtype}, expected {w.dtype}"
        if w.dtype.kind in "fc" or w.dtype.name == "bfloat16":
            np.testing.assert_allclose(g.astype(np.float64) if g.dtype.itemsize < 4 else g,  # half types
                                       w.astype(np.float64) if w.dtype.itemsize < 4 else w,
                                       rtol=rtol, atol=atol, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
