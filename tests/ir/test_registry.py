"""Registry sweep: every op is fully defined, and every op the project claims has an ONNX converter."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.frontends.onnx.importer import _load_converters
from quantgraph.frontends.onnx.registry import ONNX_CONVERTERS
from quantgraph.ir import REQUIRED, Fusion, GraphBuilder, all_ops, ref
from quantgraph.ir.interpreter import run

# The ops issue #2 requires (ONNX names).
CLAIMED = """Conv ConvTranspose BatchNormalization Relu LeakyRelu PRelu Clip Sigmoid Tanh HardSigmoid HardSwish Erf Gelu
Softplus Exp Log Sqrt Pow Reciprocal Neg Abs Add Sub Mul Div Min Max Sum Mean Where Equal Less Greater Not And Cast
MatMul Gemm MaxPool AveragePool GlobalAveragePool GlobalMaxPool LRN Flatten Reshape Transpose Squeeze Unsqueeze Concat
Split Slice Gather Expand Tile Pad Resize Shape Size Range ConstantOfShape Constant Identity Dropout Softmax LogSoftmax
LayerNormalization ReduceMean ReduceSum ReduceMax ReduceMin ReduceL2 ArgMax TopK CumSum LSTM GRU QuantizeLinear
DequantizeLinear DynamicQuantizeLinear QLinearConv QLinearMatMul ConvInteger MatMulInteger""".split()


def test_every_op_has_inference_and_reference() -> None:
    for name, d in all_ops().items():
        assert d.has_infer, f"{name} has no infer"
        assert d.has_reference, f"{name} has no reference"
        assert isinstance(d.fusion, Fusion)


@pytest.mark.parametrize("onnx_op", CLAIMED)
def test_claimed_op_has_a_converter(onnx_op: str) -> None:
    _load_converters()
    assert ONNX_CONVERTERS.versions("", onnx_op), f"no ONNX converter for {onnx_op}"


UNARY_FLOAT = [n for n, d in all_ops().items() if d.fusion is Fusion.ELEMWISE and len(d.inputs) == 1
               and REQUIRED not in d.attrs.values()]


@pytest.mark.parametrize("name", sorted(UNARY_FLOAT))
def test_elementwise_inference_matches_reference(name: str) -> None:
    """On random inputs, inferred shape and dtype equal those of the reference output."""
    dtype = "bool" if name == "Not" else "int32" if name.startswith("Bitwise") else "float32"
    gb = GraphBuilder()
    x = gb.input("x", (2, 3, 4), dtype)
    y = gb.op(name, x)
    g = gb.output(y).build()
    rng = np.random.default_rng(0)
    value = rng.standard_normal((2, 3, 4)) if dtype == "float32" else rng.integers(0, 2, (2, 3, 4))
    out = run(g, {"x": value.astype(dtype)}, check_types=True)[y]
    assert out.shape == (2, 3, 4)


def test_ref_composes_references() -> None:
    x = np.array([-2.0, 0.5], np.float32)
    np.testing.assert_allclose(ref("Relu", ref("Neg", x)), [2.0, 0.0])
