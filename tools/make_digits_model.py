"""Train the bundled demo model and write ``quantgraph/models/digits_cnn.onnx`` + ``digits_test.npz``.

A one-off tool, not part of the package: it needs ``torch`` and ``scikit-learn``, which quantgraph itself never
imports. Run it from the repository root::

    pip install torch scikit-learn onnxruntime
    python tools/make_digits_model.py

The model is a small residual CNN for scikit-learn's 8x8 digits (1797 images, 10 classes)::

    image (N,1,8,8) float32 in [0, 1]
      stem:  Conv(1->16, 3x3, pad 1, no bias) -> BatchNormalization -> Relu            -> s  (N,16,8,8)
      block: Conv(16->16, 3x3, pad 1, no bias) -> BatchNormalization -> Add(s) -> Relu  ->    (N,16,8,8)
      MaxPool(2x2, stride 2)                                                             ->    (N,16,4,4)
      head:  Conv(16->32, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten            ->    (N,32)
      fc:    Gemm(32->10, transB=1)                                                      -> logits (N,10)

The ONNX file is written with ``onnx.helper`` from the trained eval-mode weights (not ``torch.onnx``), so each
BatchNormalization stays a separate node for the compiler's fusion passes to fold. The script checks the export
against torch with onnxruntime (max abs diff < 1e-4) and the test accuracy (>= 95%) before writing anything.

``digits_test.npz`` (np.savez_compressed, no pickled objects) holds:
    images        float32 (500, 1, 8, 8)  the held-out test images, scaled to [0, 1] (pixel / 16)
    labels        int64   (500,)          their classes
    calib_images  float32 (200, 1, 8, 8)  a sample of training images for int8 calibration
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from torch import nn

SEED = 0
N_TEST = 500
N_CALIB = 200
OPSET = 17
# NOTE: IR version 8 is the one that goes with opset 17; older onnxruntime builds refuse newer IR versions.
IR_VERSION = 8
OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "quantgraph", "models")


class DigitsCNN(nn.Module):
    """The torch twin of the exported graph; layer names match the ONNX node prefixes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.block_conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.block_bn = nn.BatchNorm2d(16)
        self.head_conv = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem_bn(self.stem_conv(x)))
        y = torch.relu(self.block_bn(self.block_conv(s)) + s)
        y = nn.functional.max_pool2d(y, 2)
        y = torch.relu(self.head_conv(y))
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)
        return self.fc(y)


def load_split() -> dict[str, np.ndarray]:
    """Digits scaled to [0, 1], split by a seeded permutation into 1297 train / 500 test (+ 200 calib from train)."""
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    perm = np.random.RandomState(SEED).permutation(len(images))
    test, train = perm[:N_TEST], perm[N_TEST:]
    return {"train_x": images[train], "train_y": labels[train], "test_x": images[test], "test_y": labels[test],
            "calib_x": images[train[:N_CALIB]]}


def train(model: DigitsCNN, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """Adam with a cosine schedule; small random shifts (+-1 pixel) so the model does not memorise the train set."""
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = order[i:i + 64]
            xb = xt[idx]
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad()
            loss = loss_fn(model(xb), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  loss {total / len(xt):.4f}")
    model.eval()


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def to_onnx(model: DigitsCNN) -> onnx.ModelProto:
    """Build the ONNX graph by hand from the eval-mode weights; BatchNormalization stays its own node."""
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def conv(prefix: str, x: str, m: nn.Conv2d) -> str:
        ins = [x, init(f"{prefix}.weight", _f32(m.weight))]
        if m.bias is not None:
            ins.append(init(f"{prefix}.bias", _f32(m.bias)))
        out = f"{prefix}_out"
        nodes.append(helper.make_node("Conv", ins, [out], name=f"{prefix}/Conv", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1))
        return out

    def bn(prefix: str, x: str, m: nn.BatchNorm2d) -> str:
        assert m.running_mean is not None and m.running_var is not None
        ins = [x, init(f"{prefix}.weight", _f32(m.weight)), init(f"{prefix}.bias", _f32(m.bias)),
               init(f"{prefix}.running_mean", _f32(m.running_mean)), init(f"{prefix}.running_var", _f32(m.running_var))]
        out = f"{prefix}_out"
        nodes.append(helper.make_node("BatchNormalization", ins, [out], name=f"{prefix}/BatchNormalization",
                                      epsilon=float(m.eps), momentum=float(m.momentum or 0.1)))
        return out

    def simple(op: str, name: str, ins: list[str], **attrs: Any) -> str:
        out = f"{name}_out"
        nodes.append(helper.make_node(op, ins, [out], name=f"{name}/{op}", **attrs))
        return out

    s = simple("Relu", "stem_relu", [bn("stem_bn", conv("stem_conv", "image", model.stem_conv), model.stem_bn)])
    y = bn("block_bn", conv("block_conv", s, model.block_conv), model.block_bn)
    y = simple("Relu", "block_relu", [simple("Add", "block_add", [y, s])])
    y = simple("MaxPool", "pool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = simple("Relu", "head_relu", [conv("head_conv", y, model.head_conv)])
    y = simple("Flatten", "flatten", [simple("GlobalAveragePool", "gap", [y])], axis=1)
    ins = [y, init("fc.weight", _f32(model.fc.weight)), init("fc.bias", _f32(model.fc.bias))]
    nodes.append(helper.make_node("Gemm", ins, ["logits"], name="fc/Gemm", alpha=1.0, beta=1.0, transA=0, transB=1))

    graph = helper.make_graph(
        nodes, "digits_cnn",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="quantgraph/tools/make_digits_model.py", ir_version=IR_VERSION)
    proto.doc_string = ("Residual CNN for scikit-learn 8x8 digits; input 'image' (N,1,8,8) float32 = pixel/16, "
                        "output 'logits' (N,10).")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out-dir", default=OUT_DIR)
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # NOTE: shared machine; the model is tiny anyway
    data = load_split()
    model = DigitsCNN()
    train(model, data["train_x"], data["train_y"], args.epochs)

    with torch.no_grad():
        ref = model(torch.from_numpy(data["test_x"])).numpy()
    acc = float((ref.argmax(1) == data["test_y"]).mean())
    print(f"torch test accuracy: {acc:.4f} ({N_TEST} images)")
    if acc < 0.95:
        print("error: test accuracy below 0.95; not writing the model", file=sys.stderr)
        return 1

    proto = to_onnx(model)
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"image": data["test_x"]})[0]
    diff = float(np.abs(got - ref).max())
    ort_acc = float((got.argmax(1) == data["test_y"]).mean())
    print(f"onnxruntime vs torch: max abs diff {diff:.2e}; onnxruntime test accuracy {ort_acc:.4f}")
    if diff >= 1e-4:
        print("error: exported model does not match torch (max abs diff >= 1e-4)", file=sys.stderr)
        return 1

    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, "digits_cnn.onnx")
    npz_path = os.path.join(args.out_dir, "digits_test.npz")
    onnx.save(proto, onnx_path)
    np.savez_compressed(npz_path, images=data["test_x"], labels=data["test_y"], calib_images=data["calib_x"])
    for p in (onnx_path, npz_path):
        print(f"wrote {p} ({os.path.getsize(p) / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
