"""Bias correction (Nagel et al. 2019, section 4.2; Finkelstein et al. 2019): remove the mean error weight
quantization adds to a layer's output.

With dequantized weights W_dq = W + E, the layer computes W x + E x; over the calibration data the mean of E x is
E applied to E[x], the per-input-channel mean of the group's input (``CalibrationStats.means``, kept by
calibration for every group input when bias_correction is on). Subtracting it from the float bias makes the int8
layer's output unbiased. For a conv, zero padding is handled: tap (kh, kw) sees the channel mean at the fraction of
output positions where it reads inside the input (from the static input shape; 1 where it is unknown), the channel
mean taken as uniform over space. That matters: a 3x3 conv over a height-1 map (CRNN's last convs) reads padding
with two of its three rows, and ignoring it over-corrects three times over. Conv and Gemm groups without a bias get one;
a MatMul without a bias Add is left uncorrected (it would need a new Add node in the group).
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.graph import Graph


def input_channel_axes(graph: Graph, anchors: list[str]) -> dict[str, int]:
    """{group input tensor: its channel axis} for the anchors (Conv: NCHW axis 1; MatMul/Gemm: the last axis)."""
    out = {}
    for a in anchors:
        n = graph.node(a)
        out[n.inputs[0]] = 1 if n.op == "Conv" else -1
    return out


def tap_fractions(graph: Graph, n, kernel: tuple) -> np.ndarray:
    """Per kernel tap, the share of conv ``n``'s output positions at which it reads inside the input."""
    from quantgraph.ir.ops.spatial import window

    dims = (graph.tensors[n.inputs[0]].shape or (None,) * (2 + len(kernel)))[2:]
    w = window(n, kernel, dims)
    out = np.ones(())
    for i, k in enumerate(kernel):
        x, pb, pe = dims[i], w.pads[i], w.pads[w.rank + i]
        f = np.ones(k)
        if isinstance(x, int) and pb is not None and pe is not None:
            o = (x + pb + pe - w.extent(i)) // w.strides[i] + 1
            pos = np.arange(max(o, 1))[:, None] * w.strides[i] - pb + np.arange(k)[None, :] * w.dilations[i]
            f = ((pos >= 0) & (pos < x)).mean(axis=0)
        out = np.multiply.outer(out, f)
    return out


def mean_error(graph: Graph, anchor: str, err: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per output channel, the mean output error E[(W_dq - W) x] of ``anchor`` given E[x] = ``mean``."""
    n = graph.node(anchor)
    err = err.astype(np.float64)
    if n.op == "Conv":
        o, cg = err.shape[:2]
        group = int(n.attrs.get("group", 1))
        frac = tap_fractions(graph, n, err.shape[2:]).reshape(-1)
        per = (err.reshape(o, cg, -1) * frac).sum(axis=2)       # (O, C/g): taps weighted by in-bounds share
        m = mean.reshape(group, cg)[np.arange(o) // (o // group)]  # input channels of each output's group
        return (per * m).sum(axis=1)
    if n.op == "Gemm" and n.attrs["transB"]:
        return err @ mean                                          # W: (N, K)
    return mean @ err                                              # W: (K, N)


def correct_bias(graph: Graph, plan, anchor: str, w: np.ndarray, w_dq: np.ndarray, mean: np.ndarray,
                 axis: int) -> bool:
    """Subtract the mean error from ``anchor``'s float bias (adding a bias to a Conv/Gemm without one); returns
    whether the group was corrected."""
    g = graph
    n = g.node(anchor)
    delta = mean_error(g, anchor, w_dq - w, mean)
    b_name = plan.biases.get(anchor)
    if b_name is None:
        if n.op == "MatMul" or (n.op == "Gemm" and n.attrs["beta"] != 1.0):
            return False
        b = np.zeros(w.shape[axis], np.float64)
    else:
        b = g.tensors[b_name].const.astype(np.float64)
    new = g.add_const((b - delta.reshape(b.shape)).astype(np.float32), f"{b_name or anchor + '/bias'}/corrected")
    if n.op in ("Conv", "Gemm"):
        ins = list(n.inputs) + [""] * (3 - len(n.inputs))
        ins[2] = new
        g.set_inputs_of(n, ins)
    else:  # MatMul's bias Add: the constant's slot
        add = next(c for c in g.consumers(n.outputs[0]) if c.op == "Add")
        g.set_inputs_of(add, [new if t == b_name else t for t in add.inputs])
    return True
