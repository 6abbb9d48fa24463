"""Benchmark models built in memory with ``onnx.helper``: ResNet-50 v1.5, MobileNetV2 and a BERT-style encoder.

Both are written the way PyTorch exports them (Conv without bias + BatchNormalization; MatMul + Add linears, decomposed
LayerNormalization and Erf-GELU), so the passes see the same patterns a real exported model has. Weights are seeded
random with realistic statistics (He-init convolutions, BatchNorm stats that keep activations O(1)).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], base: str | None = None, **attrs: object) -> str:
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="quantgraph")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


# ----------------------------------------------------------------------------------------------------- ResNet-50


def _conv_bn(b: _Builder, x: str, cin: int, cout: int, k: int, stride: int, gamma: float = 1.0,
             relu: bool = True, group: int = 1, relu6: bool = False) -> str:
    """Conv (no bias, He init) + BatchNormalization (+ Relu, or Clip(0, 6) with ``relu6``), as torchvision exports
    it. ``group=cin=cout`` is a depthwise convolution."""
    fan_in = cin // group * k * k
    w = (b.rng.standard_normal((cout, cin // group, k, k)) * math.sqrt(2.0 / fan_in)).astype(np.float32)
    pad = k // 2
    y = b.node("Conv", [x, b.const(w, "conv_w")], "conv", kernel_shape=[k, k], strides=[stride, stride],
               pads=[pad, pad, pad, pad], dilations=[1, 1], group=group)
    # NOTE: the running variance is about what a He-init conv produces on unit-variance input (~1-2), so the
    # normalised output is O(1); gamma < 1 on the last BN of a block keeps the residual sum from growing.
    scale = (gamma * b.rng.uniform(0.8, 1.2, cout)).astype(np.float32)
    bias = (b.rng.standard_normal(cout) * 0.05).astype(np.float32)
    mean = (b.rng.standard_normal(cout) * 0.1).astype(np.float32)
    var = b.rng.uniform(1.0, 2.0, cout).astype(np.float32)
    y = b.node("BatchNormalization", [y, b.const(scale, "bn_scale"), b.const(bias, "bn_bias"),
                                      b.const(mean, "bn_mean"), b.const(var, "bn_var")], "bn", epsilon=1e-5)
    if relu6:
        # NOTE: opset >= 11 Clip takes its bounds as inputs; PyTorch exports ReLU6 as Clip(x, 0, 6) this way
        return b.node("Clip", [y, b.const(np.array(0.0, np.float32), "clip_min"),
                               b.const(np.array(6.0, np.float32), "clip_max")], "relu6")
    return b.node("Relu", [y], "relu") if relu else y


def _bottleneck(b: _Builder, x: str, cin: int, width: int, stride: int) -> str:
    """torchvision Bottleneck v1.5: 1x1 -> 3x3 (stride here) -> 1x1 (x4), projection shortcut when shapes change."""
    cout = width * 4
    y = _conv_bn(b, x, cin, width, 1, 1)
    y = _conv_bn(b, y, width, width, 3, stride)
    y = _conv_bn(b, y, width, cout, 1, 1, gamma=0.3, relu=False)
    short = _conv_bn(b, x, cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else x
    return b.node("Relu", [b.node("Add", [y, short], "add")], "relu")


def _classifier(b: _Builder, y: str, cin: int, batch: int | str, image: int, classes: int,
                name: str) -> onnx.ModelProto:
    """Global average pool, Flatten and the "fc" Gemm to ``classes`` logits ("output"), as torchvision exports it;
    the model's input is "input" (batch, 3, image, image)."""
    y = b.node("GlobalAveragePool", [y], "avgpool")
    y = b.node("Flatten", [y], "flatten", axis=1)
    fc_w = (b.rng.standard_normal((classes, cin)) * math.sqrt(1.0 / cin)).astype(np.float32)
    fc_b = (b.rng.standard_normal(classes) * 0.01).astype(np.float32)
    b.node("Gemm", [y, b.const(fc_w, "fc_w"), b.const(fc_b, "fc_b")], "fc", alpha=1.0, beta=1.0, transB=1)
    b.nodes[-1].output[0] = "output"
    b.nodes[-1].name = "fc"
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, image, image])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, classes])
    return b.model([inp], [out], name)


def resnet50(batch: int | str = "N", seed: int = 0, image: int = 224, classes: int = 1000) -> onnx.ModelProto:
    """torchvision-style ResNet-50 v1.5 (53 convolutions): input "input" float32 (batch, 3, image, image).

    Args:
        batch: a fixed batch size or the name of a symbolic batch dimension.
        seed: seeds the random weights.
        image: input height and width (224 for the real model; tests may use 64).
        classes: outputs of the final Gemm.
    """
    b = _Builder(seed)
    y = _conv_bn(b, "input", 3, 64, 7, 2)
    y = b.node("MaxPool", [y], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            y = _bottleneck(b, y, cin, width, stride if i == 0 else 1)
            cin = width * 4
    return _classifier(b, y, cin, batch, image, classes, "resnet50")


# ---------------------------------------------------------------------------------------------------- MobileNetV2

#: torchvision's inverted-residual table: (expansion t, output channels c, repeats n, first stride s)
_MBV2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding for the width multiplier: nearest multiple of 8, never below 90% of ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _inverted_residual(b: _Builder, x: str, cin: int, cout: int, stride: int, t: int) -> str:
    """1x1 expand (ReLU6, skipped when t == 1) -> 3x3 depthwise (ReLU6, stride here) -> 1x1 linear project, plus
    the input when the shapes match."""
    hidden = cin * t
    y = _conv_bn(b, x, cin, hidden, 1, 1, relu6=True) if t != 1 else x
    y = _conv_bn(b, y, hidden, hidden, 3, stride, group=hidden, relu6=True)
    residual = stride == 1 and cin == cout
    # NOTE: as in _bottleneck, a small gamma on the projection keeps the residual sums of a stage from growing
    y = _conv_bn(b, y, hidden, cout, 1, 1, gamma=0.3 if residual else 1.0, relu=False)
    return b.node("Add", [x, y], "add") if residual else y


def mobilenet_v2(batch: int | str = "N", seed: int = 0, image: int = 224, classes: int = 1000,
                 width: float = 1.0) -> onnx.ModelProto:
    """torchvision-style MobileNetV2 (17 inverted residual blocks, depthwise 3x3 convolutions, ReLU6 as Clip):
    input "input" float32 (batch, 3, image, image), output "output" (batch, classes).

    Args:
        batch: a fixed batch size or the name of a symbolic batch dimension.
        seed: seeds the random weights.
        image: input height and width (224 for the real model; tests may use 64).
        classes: outputs of the final Gemm.
        width: torchvision's width multiplier (channels rounded to multiples of 8; the last conv stays 1280 below 1).
    """
    b = _Builder(seed)
    cin = _make_divisible(32 * width)
    y = _conv_bn(b, "input", 3, cin, 3, 2, relu6=True)
    for t, c, n, s in _MBV2_BLOCKS:
        cout = _make_divisible(c * width)
        for i in range(n):
            y = _inverted_residual(b, y, cin, cout, s if i == 0 else 1, t)
            cin = cout
    last = _make_divisible(1280 * max(1.0, width))
    y = _conv_bn(b, y, cin, last, 1, 1, relu6=True)
    return _classifier(b, y, last, batch, image, classes, "mobilenet_v2")


# -------------------------------------------------------------------------------------------------- BERT encoder


def _linear(b: _Builder, x: str, cin: int, cout: int) -> str:
    """PyTorch nn.Linear export: MatMul(x, W^T stored as (in, out)) + Add(bias)."""
    w = (b.rng.standard_normal((cin, cout)) * math.sqrt(1.0 / cin)).astype(np.float32)
    bias = (b.rng.standard_normal(cout) * 0.02).astype(np.float32)
    y = b.node("MatMul", [x, b.const(w, "linear_w")], "matmul")
    return b.node("Add", [y, b.const(bias, "linear_b")], "add")


def _layer_norm(b: _Builder, x: str, hidden: int, eps: float = 1e-12) -> str:
    """LayerNorm as older PyTorch exports it: ReduceMean/Sub/Pow/ReduceMean/Add(eps)/Sqrt/Div/Mul/Add."""
    mean = b.node("ReduceMean", [x], "ln_mean", axes=[-1], keepdims=1)
    d = b.node("Sub", [x, mean], "ln_sub")
    var = b.node("ReduceMean", [b.node("Pow", [d, b.const(np.array(2.0, np.float32), "ln_two")], "ln_pow")],
                 "ln_var", axes=[-1], keepdims=1)
    std = b.node("Sqrt", [b.node("Add", [var, b.const(np.array(eps, np.float32), "ln_eps")], "ln_add")], "ln_sqrt")
    y = b.node("Div", [d, std], "ln_div")
    gamma = (1.0 + b.rng.standard_normal(hidden) * 0.05).astype(np.float32)
    beta = (b.rng.standard_normal(hidden) * 0.02).astype(np.float32)
    y = b.node("Mul", [y, b.const(gamma, "ln_gamma")], "ln_mul")
    return b.node("Add", [y, b.const(beta, "ln_beta")], "ln_out")


def _gelu(b: _Builder, x: str) -> str:
    """Erf-GELU as PyTorch exports it: Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5)."""
    e = b.node("Erf", [b.node("Div", [x, b.const(np.array(math.sqrt(2.0), np.float32), "gelu_sqrt2")], "gelu_div")],
               "gelu_erf")
    e = b.node("Add", [e, b.const(np.array(1.0, np.float32), "gelu_one")], "gelu_add")
    y = b.node("Mul", [x, e], "gelu_mul")
    return b.node("Mul", [y, b.const(np.array(0.5, np.float32), "gelu_half")], "gelu_out")


def _attention(b: _Builder, x: str, hidden: int, heads: int, mask: str | None) -> str:
    dh = hidden // heads
    split = b.const(np.array([0, 0, heads, dh], np.int64), "split_shape")
    q = b.node("Reshape", [_linear(b, x, hidden, hidden), split], "q_reshape")
    k = b.node("Reshape", [_linear(b, x, hidden, hidden), split], "k_reshape")
    v = b.node("Reshape", [_linear(b, x, hidden, hidden), split], "v_reshape")
    q = b.node("Transpose", [q], "q_t", perm=[0, 2, 1, 3])
    k = b.node("Transpose", [k], "k_t", perm=[0, 2, 3, 1])
    v = b.node("Transpose", [v], "v_t", perm=[0, 2, 1, 3])
    s = b.node("MatMul", [q, k], "scores")
    s = b.node("Div", [s, b.const(np.array(math.sqrt(dh), np.float32), "sqrt_dh")], "scores_div")
    if mask is not None:
        s = b.node("Add", [s, mask], "scores_mask")
    p = b.node("Softmax", [s], "probs", axis=-1)
    c = b.node("Transpose", [b.node("MatMul", [p, v], "context")], "context_t", perm=[0, 2, 1, 3])
    c = b.node("Reshape", [c, b.const(np.array([0, 0, hidden], np.int64), "merge_shape")], "context_reshape")
    return _linear(b, c, hidden, hidden)


def bert_encoder(layers: int = 4, hidden: int = 384, heads: int = 6, seq: int = 128, batch: int | str = "B",
                 seed: int = 0, mask: bool = False, ffn: int | None = None) -> onnx.ModelProto:
    """A BERT-style post-LN encoder stack: input "hidden" float32 (batch, seq, hidden), output "output" same shape.

    Args:
        layers: encoder layers.
        hidden: model width (a multiple of ``heads``).
        heads: attention heads.
        seq: sequence length.
        batch: fixed batch size or the name of a symbolic batch dimension.
        seed: seeds the random weights.
        mask: add an additive attention-mask input "mask" float32 (batch, 1, 1, seq).
        ffn: feed-forward width (default 4 * hidden).
    """
    b = _Builder(seed)
    ffn = ffn or 4 * hidden
    mask_name = "mask" if mask else None
    x = "hidden"
    for _ in range(layers):
        a = _attention(b, x, hidden, heads, mask_name)
        x = _layer_norm(b, b.node("Add", [a, x], "residual"), hidden)
        f = _linear(b, _gelu(b, _linear(b, x, hidden, ffn)), ffn, hidden)
        x = _layer_norm(b, b.node("Add", [f, x], "residual"), hidden)
    b.nodes[-1].output[0] = "output"
    inputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [batch, seq, hidden])]
    if mask:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1, 1, seq]))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, seq, hidden])
    return b.model(inputs, [out], "bert_encoder")


def sample_inputs(model: onnx.ModelProto, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded float32 inputs for a model built here (symbolic dims set to ``batch``)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim]
        if vi.name == "mask":
            m = np.zeros(dims, np.float32)
            m[..., -dims[-1] // 8:] = -10000.0  # mask out the last eighth of the keys
            feeds[vi.name] = m
        else:
            feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds
