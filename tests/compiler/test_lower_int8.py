"""Lowered int8 ops (QConv, QMatMul, QAdd, max pooling, QuantizeLinear, DequantizeLinear) on the int8 kernels,
bit-exact against the ONNX reference evaluator on the host's rung, AVX2 and the portable rung."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import quantgraph
from quantgraph import config
from quantgraph.kernels import target
from tests.compiler.qcases import CONV_CASES, MATMUL_CASES, QCase, graph_model, onnx_reference

BEST = target.default_isa()
ISAS = [BEST] + [i for i in ("avx2", "portable") if i != BEST and target.has(i)]
INT8_KERNELS = {"qconv_int8", "qmatmul_int8", "qadd_int8", "maxpool_int8", "quantize_f32_int8",
                "dequantize_int8_f32"}


def _compile_and_run(model: onnx.ModelProto, feeds: dict, isa: str, opt_level: int = 3):
    with config.override(isa=isa):
        cm = quantgraph.compile(model, opt_level=opt_level)
        got = cm(*[feeds[k] for k in cm.input_names])
        plan = next(iter(cm.plans.values()))
    return cm, got, dict(zip((ln.node.op for ln in plan.nodes), plan.kernels))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("const", [True, False], ids=["const", "inputs"])
@pytest.mark.parametrize("case", CONV_CASES + MATMUL_CASES, ids=lambda c: c.name)
def test_lowered_qoperator_ops_equal_onnx(case: QCase, const: bool, isa: str) -> None:
    model, feeds = case.model(const), case.feeds(const)
    want = onnx_reference(model, feeds)[0]
    _, (got,), kernels = _compile_and_run(model, feeds, isa)
    op = "QConv" if "Conv" in case.op else "QMatMul"
    assert kernels[op] == ("qconv_int8" if op == "QConv" else "qmatmul_int8")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", CONV_CASES[:3], ids=lambda c: c.name)
def test_nchw_qconv_at_opt_level_2(case: QCase) -> None:
    """Without the layout pass the NCHW QConv transposes around the NHWC kernel; same integers."""
    model, feeds = case.model(True), case.feeds(True)
    _, (got,), kernels = _compile_and_run(model, feeds, BEST, opt_level=2)
    assert kernels["QConv"] == "qconv_int8"
    np.testing.assert_array_equal(got, onnx_reference(model, feeds)[0])


def _qdq_nodes(prefix: str, x: str, s: str, z: str) -> tuple[list, str]:
    q, d = f"{prefix}_q", f"{prefix}_dq"
    return [helper.make_node("QuantizeLinear", [x, s, z], [q]), helper.make_node("DequantizeLinear", [q, s, z], [d])], d


def _qdq_conv_model(rng: np.random.Generator, relu: bool, per_channel: bool) -> tuple[onnx.ModelProto, dict, dict]:
    """A QDQ conv (+ relu) as quantize_static writes it, and the same integers as QLinearConv (its exact twin)."""
    cin, cout = 5, 9
    w = rng.integers(-127, 128, (cout, cin, 3, 3)).astype(np.int8)
    ws = rng.uniform(0.01, 0.03, cout if per_channel else ()).astype(np.float32)
    xs, ys = np.array(0.04, np.float32), np.array(0.07, np.float32)
    bq = rng.integers(-400, 400, cout).astype(np.int32)
    inits = {"xs": xs, "xz": np.array(120, np.uint8), "w": w, "ws": ws, "wz": np.zeros(ws.shape, np.int8),
             "b": bq, "bs": np.broadcast_to(xs * ws, (cout,)).astype(np.float32), "bz": np.zeros(cout, np.int32),
             "ys": ys, "yz": np.array(0 if relu else 100, np.uint8)}
    nodes, dx = _qdq_nodes("x", "x", "xs", "xz")
    nodes += [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["dw"], axis=0),
              helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["db"], axis=0),
              helper.make_node("Conv", [dx, "dw", "db"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 1])]
    last = "conv"
    if relu:
        nodes.append(helper.make_node("Relu", ["conv"], ["relu"]))
        last = "relu"
    nodes.append(helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["y"]))
    feeds = {"x": rng.standard_normal((2, cin, 9, 8)).astype(np.float32) * 3}
    qdq = graph_model(nodes, feeds, inits, ["y"])
    twin_nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                  helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                                   pads=[1, 1, 1, 1], strides=[2, 1])]
    twin = graph_model(twin_nodes, feeds, {k: v for k, v in inits.items() if k not in ("bs", "bz")}, ["y"])
    return qdq, twin, feeds


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("relu,per_channel", [(True, True), (False, False)])
def test_qdq_conv_equals_its_qlinear_twin(isa: str, relu: bool, per_channel: bool) -> None:
    qdq, twin, feeds = _qdq_conv_model(np.random.default_rng(7), relu, per_channel)
    _, (got,), kernels = _compile_and_run(qdq, feeds, isa)
    assert kernels["QConv"] == "qconv_int8" and kernels["QuantizeLinear"] == "quantize_f32_int8"
    np.testing.assert_array_equal(got, onnx_reference(twin, feeds)[0])
    # the QDQ file's own float arithmetic rounds each product: within one level, rarely off
    diff = np.abs(got.astype(np.int32) - onnx_reference(qdq, feeds)[0].astype(np.int32))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 100


@pytest.mark.parametrize("isa", ISAS)
def test_qdq_matmul_equals_its_qlinear_twin(isa: str) -> None:
    rng = np.random.default_rng(8)
    w = rng.integers(-127, 128, (24, 13)).astype(np.int8)
    inits = {"xs": np.array(0.05, np.float32), "xz": np.array(128, np.uint8), "w": w,
             "ws": rng.uniform(0.01, 0.02, 13).astype(np.float32), "wz": np.zeros(13, np.int8),
             "ys": np.array(0.2, np.float32), "yz": np.array(-3, np.int8)}
    nodes, dx = _qdq_nodes("x", "x", "xs", "xz")
    nodes += [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["dw"], axis=1),
              helper.make_node("MatMul", [dx, "dw"], ["mm"]), helper.make_node("QuantizeLinear", ["mm", "ys", "yz"],
                                                                               ["y"])]
    feeds = {"x": rng.standard_normal((3, 7, 24)).astype(np.float32) * 3}
    qdq = graph_model(nodes, feeds, inits, ["y"])
    twin = graph_model([helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                        helper.make_node("QLinearMatMul", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])],
                       feeds, inits, ["y"])
    _, (got,), kernels = _compile_and_run(qdq, feeds, isa)
    assert kernels["QMatMul"] == "qmatmul_int8"
    np.testing.assert_array_equal(got, onnx_reference(twin, feeds)[0])


@pytest.mark.parametrize("isa", ISAS)
def test_qdq_add_maxpool_and_boundaries_equal_onnx(isa: str) -> None:
    """Q -> MaxPool -> Add(+Relu) -> DQ: every op realized on int8 and exact, so the QDQ file is the oracle."""
    rng = np.random.default_rng(9)
    inits = {"s1": np.array(0.03, np.float32), "z1": np.array(128, np.uint8), "s2": np.array(0.05, np.float32),
             "z2": np.array(100, np.uint8), "s3": np.array(0.045, np.float32), "z3": np.array(0, np.uint8)}
    nodes, d1 = _qdq_nodes("a", "a", "s1", "z1")
    more, d2 = _qdq_nodes("b", "b", "s2", "z2")
    nodes += more + [helper.make_node("MaxPool", [d1], ["mp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    more, dmp = _qdq_nodes("mp", "mp", "s1", "z1")
    nodes += more + [helper.make_node("Add", [dmp, d2], ["sum"]), helper.make_node("Relu", ["sum"], ["r"])]
    more, out = _qdq_nodes("r", "r", "s3", "z3")
    nodes += more + [helper.make_node("Identity", [out], ["y"])]
    feeds = {"a": rng.standard_normal((2, 6, 7, 7)).astype(np.float32) * 2,
             "b": rng.standard_normal((2, 6, 7, 7)).astype(np.float32) * 3}
    model = graph_model(nodes, feeds, inits, ["y"])
    cm, (got,), kernels = _compile_and_run(model, feeds, isa)
    assert {kernels[op] for op in ("QAdd", "FusedPool", "QuantizeLinear", "DequantizeLinear")} <= INT8_KERNELS
    np.testing.assert_array_equal(got, onnx_reference(model, feeds)[0])


def test_int8_chain_stays_nhwc_and_int8() -> None:
    """O3: QConv -> QConv -> QAdd run channels-last, uint8 between them; transposes only at the boundaries."""
    rng = np.random.default_rng(10)
    inits = {"s": np.array(0.05, np.float32), "z": np.array(0, np.uint8)}
    nodes, dx = _qdq_nodes("x", "x", "s", "z")
    prev = dx
    for i in range(2):
        inits[f"w{i}"] = rng.integers(-127, 128, (6, 6, 3, 3)).astype(np.int8)
        inits[f"ws{i}"] = np.full(6, 0.01, np.float32)
        inits[f"wz{i}"] = np.zeros(6, np.int8)
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}", f"ws{i}", f"wz{i}"], [f"dw{i}"], axis=0),
                  helper.make_node("Conv", [prev, f"dw{i}"], [f"c{i}"], pads=[1, 1, 1, 1])]
        more, prev = _qdq_nodes(f"c{i}", f"c{i}", "s", "z")
        nodes += more
    nodes.append(helper.make_node("Add", [prev, dx], ["sum"]))
    more, out = _qdq_nodes("sum", "sum", "s", "z")
    nodes += more + [helper.make_node("Identity", [out], ["y"])]
    feeds = {"x": rng.standard_normal((1, 6, 8, 8)).astype(np.float32)}
    model = graph_model(nodes, feeds, inits, ["y"])
    cm, (got,), kernels = _compile_and_run(model, feeds, BEST)
    g = cm.graph
    assert g.op_counts() == {"QuantizeLinear": 1, "Transpose": 2, "QConv": 2, "QAdd": 1, "DequantizeLinear": 1}
    for n in g.topo():
        if n.op == "QConv":
            assert n.attrs["layout"] == "NHWC" and g.tensors[n.outputs[0]].dtype == "uint8"
        if n.op == "Transpose":
            assert g.tensors[n.outputs[0]].dtype in ("uint8", "float32")
    np.testing.assert_array_equal(got, quantgraph.compile(model, opt_level=1)(feeds["x"])[0])


def _conformance_cases() -> list:
    from tests.conformance.cases import node_cases

    return [c for c in node_cases() if c.name.startswith(("test_qlinearconv", "test_qlinearmatmul",
                                                          "test_convinteger", "test_matmulinteger"))]


@pytest.mark.parametrize("opt_level", [2, 3])
def test_onnx_node_cases_run_on_the_int8_kernels(opt_level: int) -> None:
    """The ONNX conformance QLinear*/ConvInteger/MatMulInteger cases (all inputs at run time: packed per call)
    pass through QConv/QMatMul on the int8 kernels, not the references."""
    from onnx import numpy_helper

    cases = _conformance_cases()
    assert len(cases) >= 10
    for case in cases:
        cm = quantgraph.compile(case.proto(), opt_level=opt_level)
        for inputs, outputs in case.data():
            feeds = [numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x) for x in inputs]
            got = cm(*feeds)[0]
            want = outputs[0]
            want = numpy_helper.to_array(want) if isinstance(want, onnx.TensorProto) else want
            np.testing.assert_array_equal(got, want, err_msg=case.name)
        kernels = {ln.node.op: ln.kernel.name if ln.kernel else "reference" for ln in cm._lowered}
        assert "reference" not in kernels.values(), (case.name, kernels)
        assert {kernels.get("QConv"), kernels.get("QMatMul")} & {"qconv_int8", "qmatmul_int8"}, (case.name, kernels)
