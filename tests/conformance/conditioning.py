"""Which softmax outputs can be compared at all: their sensitivity to the rounding of the logits.

Every ``light_*`` model of the onnx wheel has constant-fill weights, so its 1000 logits are equal in exact
arithmetic and grow layer by layer to 1e9 .. 1e31 (SqueezeNet 9.5e9, VGG-19 3.7e31), where one float32 ulp is
1e3 .. 1e24. Any change of summation order (another BLAS kernel, another ISA rung, a fused graph) moves a few of
them by an ulp or two, thousands in absolute terms, and the softmax turns from uniform (1/1000 everywhere, the
stored output) into one-hot over the largest few (1/56 in 56 places on an AVX2-only host). Such a softmax passes or
fails by luck of the BLAS's order, on any correct implementation. What is meaningful on every host:

- the logits (the Softmax input), compared with onnxruntime's with the case's rtol taken relative to their
  magnitude (float results: onnxruntime is an oracle on every host);
- every softmax value whose worst-case change, when each logit carries float32 rounding of ``LOGIT_NOISE`` of
  their magnitude, still fits the case's rtol/atol (its "band", :func:`softmax_band`); the others are not compared
  (for the huge-logit light models that is all of them, for ordinary logits none: the two classes are more than
  100x apart, so the choice of ``LOGIT_NOISE`` does not decide any case);
- that each softmax group sums to 1.

The decision is the same on every host: it depends on the reference logits' magnitude and the case's tolerances.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper

#: the rounding error computed logits carry, relative to their magnitude: float32 sums over deep networks of
#: constant fills move the light models' logits by up to 8e-5 of it (O2/O3 vs onnxruntime, measured); 1e-4 assumed
LOGIT_NOISE = 1e-4


def softmax_groups(x: np.ndarray, axis: int, opset: int) -> np.ndarray:
    """``x`` as a 2-D (groups, members) array of what one Softmax normalises together: opset < 13 flattens the
    dims from ``axis`` on (the 2-D coercion), opset 13+ normalises along ``axis`` alone."""
    axis = axis % x.ndim
    if opset < 13:
        return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    moved = np.moveaxis(x, axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _ungroup(g: np.ndarray, shape: tuple[int, ...], axis: int, opset: int) -> np.ndarray:
    axis = axis % len(shape)
    if opset < 13:
        return g.reshape(shape)
    moved = list(shape)
    moved.append(moved.pop(axis))
    return np.moveaxis(g.reshape(moved), -1, axis)


def softmax_band(logits: np.ndarray, delta: float, axis: int, opset: int) -> tuple[np.ndarray, np.ndarray]:
    """(softmax, half-width): the exact softmax of ``logits`` (float64) and, per value, how far it can move when
    every logit moves by at most ``delta``.

    y_i = 1 / (1 + S_i) with S_i = sum_{j != i} exp(z_j - z_i); each exponent moves by at most 2 delta, so the
    moved value lies in [1 / (1 + S_i e^{2 delta}), 1 / (1 + S_i e^{-2 delta})]. Computed in log space, so 1e31
    logits and one-hot softmaxes are fine.
    """
    z = softmax_groups(np.asarray(logits, np.float64), axis, opset)
    n = z.shape[1]
    if n == 1:
        return _ungroup(np.ones_like(z), logits.shape, axis, opset), _ungroup(np.zeros_like(z), logits.shape, axis,
                                                                              opset)
    # log S_i = logsumexp over j != i of z_j, minus z_i
    others = np.where(np.eye(n, dtype=bool)[None], -np.inf, z[:, None, :])
    top = others.max(axis=2, keepdims=True)
    log_s = (top[..., 0] + np.log(np.exp(others - top).sum(axis=2))) - z
    y = np.exp(-np.logaddexp(0.0, log_s))
    hi = np.exp(-np.logaddexp(0.0, log_s - 2 * delta))
    lo = np.exp(-np.logaddexp(0.0, log_s + 2 * delta))
    width = np.maximum(hi - y, y - lo)
    return _ungroup(y, logits.shape, axis, opset), _ungroup(width, logits.shape, axis, opset)


def comparable(logits: np.ndarray, axis: int, opset: int, rtol: float, atol: float) -> np.ndarray:
    """Mask of the softmax values that stay within half the case's tolerance when the logits on both sides of the
    comparison carry ``LOGIT_NOISE`` of their magnitude each."""
    delta = 2 * LOGIT_NOISE * float(np.abs(logits).max(initial=0.0))
    y, width = softmax_band(logits, delta, axis, opset)
    return width <= 0.5 * (atol + rtol * np.abs(y))


@dataclass
class SoftmaxOutput:
    """A graph output made by a Softmax whose logits are computed by the model (not a graph input)."""

    index: int  # position among the graph outputs
    logits: str  # the Softmax input
    axis: int
    opset: int


def softmax_outputs(proto: onnx.ModelProto) -> list[SoftmaxOutput]:
    """The graph outputs produced by a top-level Softmax of computed logits."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    opset = next((i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")), 1)
    found = []
    for i, out in enumerate(proto.graph.output):
        n = producer.get(out.name)
        if n is None or n.op_type != "Softmax" or n.input[0] not in producer:
            continue
        axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"),
                    1 if opset < 13 else -1)
        found.append(SoftmaxOutput(i, n.input[0], int(axis), opset))
    return found


def with_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs the tensors ``names`` (after its own outputs)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.graph.output.extend([helper.make_empty_tensor_value_info(t) for t in names])
    return out


def onnxruntime_outputs(proto: onnx.ModelProto, inputs: Sequence[Any]) -> list[np.ndarray]:
    """Run ``proto`` on onnxruntime (all graph outputs), feeding ``inputs`` to the non-initializer inputs in order."""
    import onnxruntime as ort  # the [test] extra installs it; float results, an oracle on every host

    inits = {t.name for t in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the light models carry unused initializers onnxruntime warns about
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))


def assert_logits_close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """Logits within ``rtol`` of their magnitude (max |want|), plus ``atol``."""
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"{what}: {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
    scale = float(np.abs(want).max(initial=0.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=atol + rtol * scale,
                               err_msg=f"{what}: logits differ by more than {rtol} of their magnitude {scale:.4g}")


def assert_softmax_where_comparable(got: np.ndarray, want: np.ndarray, mask: np.ndarray, axis: int, opset: int,
                                    rtol: float, atol: float, what: str) -> None:
    """The softmax values in ``mask`` within rtol/atol of ``want``; every group sums to 1."""
    want = np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"{what}: {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
    sums = softmax_groups(got.astype(np.float64), axis, opset).sum(axis=1)
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-5, err_msg=f"{what}: softmax groups do not sum to 1")
    np.testing.assert_allclose(got[mask], want[mask], rtol=rtol, atol=atol,
                               err_msg=f"{what}: well-conditioned softmax values")
