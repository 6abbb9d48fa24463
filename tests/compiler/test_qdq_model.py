"""A small CNN quantized by onnxruntime's quantize_static (QDQ, per-channel, u8 activations, s8 weights, MinMax):
compiled without calibration onto the int8 kernels, compared with the ONNX reference evaluator on the same file."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantgraph
from tests.compiler.qcases import onnx_reference

quantization = pytest.importorskip("onnxruntime.quantization")


def _float_cnn(rng: np.random.Generator) -> onnx.ModelProto:
    """conv-relu -> maxpool -> conv-relu -> conv + shortcut -> relu -> global pool -> gemm (a tiny ResNet)."""
    inits, nodes = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        w = const(f"{name}_w", rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)))
        b = const(f"{name}_b", rng.standard_normal(cout) * 0.1)
        nodes.append(helper.make_node("Conv", [x, w, b], [name], pads=[k // 2] * 4, strides=[stride] * 2))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
        return f"{name}_relu"

    y = conv("input", "c1", 3, 16, 3, 2)
    nodes.append(helper.make_node("MaxPool", [y], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    y = conv(conv("pool", "c2", 16, 16, 3), "c3", 16, 16, 3, relu=False)
    nodes += [helper.make_node("Add", [y, "pool"], ["add"]), helper.make_node("Relu", ["add"], ["add_relu"])]
    y = conv("add_relu", "c4", 16, 32, 1, 2)
    nodes += [helper.make_node("GlobalAveragePool", [y], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"])]
    fc = const("fc_w", rng.standard_normal((10, 32)) * 0.2)
    nodes.append(helper.make_node("Gemm", ["flat", fc, const("fc_b", rng.standard_normal(10) * 0.1)], ["logits"],
                                  transB=1))
    graph = helper.make_graph(nodes, "cnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    # NOTE: opset 21: onnx's reference evaluator implements DequantizeLinear from version 19 on
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


class _Batches(quantization.CalibrationDataReader):
    def __init__(self, rng: np.random.Generator) -> None:
        self._it = iter([{"input": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

    def get_next(self):  # noqa: ANN201
        return next(self._it, None)


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("qdq")
    onnx.save(_float_cnn(rng), str(d / "cnn.onnx"))
    quantization.quantize_static(str(d / "cnn.onnx"), str(d / "cnn_qdq.onnx"), _Batches(rng),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8,
                                 calibrate_method=quantization.CalibrationMethod.MinMax)
    return onnx.load(str(d / "cnn_qdq.onnx"))


def test_quantize_static_cnn_runs_int8_and_matches_the_onnx_reference(qdq_model: onnx.ModelProto) -> None:
    cm = quantgraph.compile(qdq_model)  # no calibration: the QDQ file carries every scale
    counts = cm.graph.op_counts()
    assert counts.get("QConv") == 4 and counts.get("QMatMul") == 1 and counts.get("QAdd") == 1
    assert not {"Conv", "Gemm", "Add", "MaxPool"} & set(counts), counts
    kernels = {ln.node.op: (ln.kernel.name if ln.kernel else "reference") for ln in cm._lowered}
    assert kernels["QConv"] == "qconv_int8" and kernels["QMatMul"] == "qmatmul_int8"
    out = next(n for n in qdq_model.graph.node if n.output[0] == "logits")
    scale = numpy_helper.to_array(next(i for i in qdq_model.graph.initializer if i.name == out.input[1]))
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    got = cm(x)[0]
    want = onnx_reference(qdq_model, {"input": x})[0]
    levels = np.rint(np.abs(got.astype(np.float64) - want) / float(scale)).astype(int)
    # NOTE: the reference evaluator computes every QDQ Conv in float32 (each product and sum rounded) and then
    # divides by the output scale; the int8 kernels accumulate exactly and requantize once (as QLinearConv). A
    # float result within float32 rounding of a .5 boundary rounds the other way (measured: well under 1% of the
    # activations of a layer), and such one-level differences propagate through the next layers, so the logits
    # differ by a few output levels at most, and most of them not at all.
    assert levels.max() <= 4, levels.max()
    assert np.count_nonzero(levels) <= levels.size // 4
    # against the realized graph's own reference (the same integer semantics) the kernels are exact
    np.testing.assert_array_equal(got, quantgraph.compile(qdq_model, opt_level=1)(x)[0])
