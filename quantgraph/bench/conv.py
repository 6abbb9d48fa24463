"""``python -m quantgraph.bench conv``: ResNet-50 int8 convolutions vs numpy fp32 (im2col GEMM) and QLinearConv.

Every distinct conv of ResNet-50 v1.5 (224x224) is timed once and weighted by how often it occurs (53 convs in
all). quantgraph runs NHWC u8 -> u8 with the fused epilogue (per-channel scale, bias, relu; plus the residual add
on the last 1x1 of each bottleneck). numpy is timed on the GEMM of a prebuilt fp32 im2col matrix only (the im2col
itself is not counted, which favours numpy). onnxruntime runs QLinearConv (NCHW, its native layout) with
per-channel weight scales and u8 output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantgraph import config
from quantgraph.bench.common import (Reporter, best_seconds, measure_peak, ort_available, ort_session,
                                     parse_args, random_s8, random_u8)


@dataclass(frozen=True)
class Layer:
    name: str
    hw: int      # input height = width
    cin: int
    cout: int
    k: int
    stride: int
    count: int   # occurrences in ResNet-50
    residual: bool = False

    @property
    def pad(self) -> int:
        return self.k // 2

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.pad - self.k) // self.stride + 1


RESNET50 = [
    Layer("conv1", 224, 3, 64, 7, 2, 1),
    Layer("l1.c1a", 56, 64, 64, 1, 1, 1), Layer("l1.c1", 56, 256, 64, 1, 1, 2),
    Layer("l1.c2", 56, 64, 64, 3, 1, 3), Layer("l1.c3", 56, 64, 256, 1, 1, 3, True),
    Layer("l1.ds", 56, 64, 256, 1, 1, 1),
    Layer("l2.c1a", 56, 256, 128, 1, 1, 1), Layer("l2.c2s", 56, 128, 128, 3, 2, 1),
    Layer("l2.ds", 56, 256, 512, 1, 2, 1), Layer("l2.c1", 28, 512, 128, 1, 1, 3),
    Layer("l2.c2", 28, 128, 128, 3, 1, 3), Layer("l2.c3", 28, 128, 512, 1, 1, 4, True),
    Layer("l3.c1a", 28, 512, 256, 1, 1, 1), Layer("l3.c2s", 28, 256, 256, 3, 2, 1),
    Layer("l3.ds", 28, 512, 1024, 1, 2, 1), Layer("l3.c1", 14, 1024, 256, 1, 1, 5),
    Layer("l3.c2", 14, 256, 256, 3, 1, 5), Layer("l3.c3", 14, 256, 1024, 1, 1, 6, True),
    Layer("l4.c1a", 14, 1024, 512, 1, 1, 1), Layer("l4.c2s", 14, 512, 512, 3, 2, 1),
    Layer("l4.ds", 14, 1024, 2048, 1, 2, 1), Layer("l4.c1", 7, 2048, 512, 1, 1, 2),
    Layer("l4.c2", 7, 512, 512, 3, 1, 2), Layer("l4.c3", 7, 512, 2048, 1, 1, 3, True),
]
QUICK = ["conv1", "l1.c2", "l2.c3", "l3.c2s", "l4.c2"]


def _im2col_f32(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    nb, h, w, c = x.shape
    xp = np.zeros((nb, h + 2 * p, w + 2 * p, c), np.float32)
    xp[:, p:p + h, p:p + w] = x
    oh = (h + 2 * p - k) // s + 1
    cols = [xp[:, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (oh - 1) + 1:s] for ky in range(k) for kx in range(k)]
    return np.concatenate(cols, axis=-1).reshape(nb * oh * oh, k * k * c)


def _ort_qlinearconv(layer: Layer, w: np.ndarray, w_scale: np.ndarray, bias: np.ndarray, threads: int):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(3, np.uint8), "xz"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_scale, "ws"),
             numpy_helper.from_array(np.zeros(layer.cout, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
             numpy_helper.from_array(np.array(0, np.uint8), "yz"), numpy_helper.from_array(bias, "b")]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            kernel_shape=[layer.k, layer.k], strides=[layer.stride] * 2, pads=[layer.pad] * 4)
    graph = helper.make_graph([node], "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return ort_session(model, threads)


def main(argv: list[str]) -> int:
    from quantgraph.kernels import Epilogue
    from quantgraph.kernels.conv_int8 import ConvSpec, conv_u8s8, pack_conv_weights

    args = parse_args(argv, "conv", __doc__ or "")
    threads = args.threads or 2
    batch = 1 if args.quick else 16
    layers = [L for L in RESNET50 if L.name in QUICK] if args.quick else RESNET50
    peak = measure_peak(threads)
    rep = Reporter(args.json, peak, threads)
    rep.note(f"ResNet-50 convolutions, batch {batch}")
    use_ort = ort_available() and not args.no_ort
    rng = np.random.default_rng(0)
    totals = {"quantgraph": 0.0, "numpy_fp32": 0.0, "onnxruntime": 0.0}
    total_ops = 0.0
    with config.override(threads=threads):
        for L in layers:
            oh = L.out_hw
            m, n, k = batch * oh * oh, L.cout, L.cin * L.k * L.k
            ops = 2.0 * m * n * k
            x = random_u8(rng, (batch, L.hw, L.hw, L.cin))
            w = random_s8(rng, (L.cout, L.cin, L.k, L.k))
            bias = rng.integers(-1000, 1000, L.cout).astype(np.int32)
            w_scale = (rng.random(L.cout) * 1e-2 + 1e-3).astype(np.float32)
            spec = ConvSpec((L.k, L.k), (L.stride, L.stride), (L.pad,) * 4)
            packed = pack_conv_weights(w, spec, x_zero_point=3, bias_s32=bias)
            epi = Epilogue(out_dtype="uint8", scale=(w_scale * np.float32(0.02)).astype(np.float32),
                           residual=random_u8(rng, (batch, oh, oh, n)) if L.residual else None,
                           residual_scale=0.05, residual_zero_point=0, activation="relu", out_scale=0.05)
            out = np.empty((batch, oh, oh, n), np.uint8)
            t_qg = best_seconds(lambda: conv_u8s8(x, packed, epi, out=out))
            cols = _im2col_f32(x, L.k, L.stride, L.pad)
            wf = w.transpose(2, 3, 1, 0).reshape(k, n).astype(np.float32)
            t_np = best_seconds(lambda: cols @ wf)
            t_ort = None
            if use_ort:
                sess = _ort_qlinearconv(L, w, w_scale, bias, threads)
                feed = {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}
                t_ort = best_seconds(lambda: sess.run(None, feed))
            shape = f"{L.name} {L.k}x{L.k}/{L.stride} {L.cin}->{L.cout} @{L.hw} x{L.count}"
            extra = {"layer": L.name, "count": L.count, "path": packed.path,
                     "epilogue": "scale+relu" + ("+residual" if L.residual else "") + "->u8",
                     "vs_numpy_fp32": round(t_np / t_qg, 2)}
            if t_ort is not None:
                extra["vs_onnxruntime"] = round(t_ort / t_qg, 2)
            rep.add("conv", m, n, k, "quantgraph", t_qg, ops, shape=shape, **extra)
            rep.add("conv", m, n, k, "numpy_fp32", t_np, ops, shape=shape, layer=L.name)
            totals["quantgraph"] += t_qg * L.count
            totals["numpy_fp32"] += t_np * L.count
            if t_ort is not None:
                rep.add("conv", m, n, k, "onnxruntime", t_ort, ops, shape=shape, layer=L.name)
                totals["onnxruntime"] += t_ort * L.count
            total_ops += ops * L.count
    for impl, sec in totals.items():
        if sec:
            rep.add("conv", 0, 0, 0, impl, sec, total_ops, shape="ALL (weighted sum)", layer="resnet50_sum")
    qg = [r for r in rep.results if r.impl == "quantgraph" and r.extra.get("layer") != "resnet50_sum"]
    slower = [r.extra["layer"] for r in qg if r.extra.get("vs_onnxruntime", 99) < 1.0]
    gops = total_ops / totals['quantgraph'] / 1e9
    rep.note(f"sum: {100 * gops / peak if peak else 0:.1f}% of the vpdpbusd peak (target 70%; "
             f"{rep.pct_isa(gops):.1f}% of the {rep.isa} peak), "
             f"{totals['numpy_fp32'] / totals['quantgraph']:.2f}x numpy fp32 (target 3x)"
             + (f", {totals['onnxruntime'] / totals['quantgraph']:.2f}x onnxruntime; slower than onnxruntime on: "
                f"{slower or 'none'}" if totals["onnxruntime"] else ""))
    return 0
