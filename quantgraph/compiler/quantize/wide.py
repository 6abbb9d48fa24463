"""W8A16 (int16 activation) groups: the overflow-free level count and the QDQ the quantizer writes for them.

``quantize.py`` decides which groups are int16 and calls these from ``insert_qdq`` (see its docstring).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from quantgraph.errors import InputError
from quantgraph.ir.graph import Graph
from quantgraph.ir.tensor import QuantParams


#: the int16 range is this many times the calibrated max |x|: headroom for data beyond what calibration saw, which
#: a range fitted to the calibration batches clips (the accuracy search, which widens to int16, measures on those
#: batches; pplcnet's output SQNR was 30 dB there and 21 dB on held-out images). It costs a factor of 2 in steps,
#: still >= 1834 levels a side at K = 4608 against u8's 255 over the tighter range.
INT16_HEADROOM = 2.0


def int16_qmax(k: int, bias_bound: int = 0) -> int:
    """Levels on each side of zero for an int16-activation group with reduction length ``k`` (s8 weights).

    The int32 accumulator holds ``k`` products of ``|x| <= qmax`` and ``|w| <= 127`` plus the s32 bias, so
    ``k * 127 * qmax + |bias| <= 2**31 - 1`` makes it overflow-free by construction on every rung (vpdpwssd,
    vpmaddwd and portable all sum in int32). The kernel must clamp activations to ``+-qmax`` (not +-32767): a
    value beyond the calibrated range would otherwise reach the full int16 range. E.g. k=4608 -> 3669 levels a
    side, still ~28x finer than u8's 255 levels over the same range.
    """
    if k <= 0:
        raise ValueError(f"reduction length must be positive, got {k}")
    room = (2 ** 31 - 1) - abs(int(bias_bound))
    if room <= 0:
        raise ValueError(f"bias bound {bias_bound} leaves no accumulator headroom")
    return int(min(32767, room // (k * 127)))


def int16_range(g: Graph, weights: tuple[int, int], stats: Any, anchor: str,
                t: str) -> tuple[float, int, np.float32]:
    """(max |x|, reduction length K, the smallest scale the input can get: no bias) of int16 group ``anchor``
    reading ``t`` (``weights``: the anchor's weight slot and output-channel axis).

    The range is the calibrated min/max whatever ``calib_mode`` says, times ``INT16_HEADROOM``: the histogram modes
    trade clipping against 256 levels, and with thousands of levels a side clipping is the larger error."""
    rng = stats.range(t, "minmax") if stats is not None and t in stats else None
    if rng is None:
        raise InputError(f"calibration saw no finite value of tensor '{t}' (read by the int16 group '{anchor}'); "
                         "it cannot be quantized: check the calibration data, or ask fp32 for it")
    amax = INT16_HEADROOM * max(abs(float(rng[0])), abs(float(rng[1])))
    amax = amax if amax > 0.0 else 1.0   # always 0: any scale represents it
    slot, axis = weights
    w = g.tensors[g.node(anchor).inputs[slot]].const
    k = w.size // w.shape[axis]   # Conv: C/group * kh * kw; MatMul / Gemm: K
    return amax, k, np.float32(amax / int16_qmax(k))


def int_bias_bound(g: Graph, anchor: str, x_scale: float, w_scale: np.ndarray) -> int:
    """An upper bound of |int32 bias| of ``anchor`` (its float bias now, after bias correction) for an activation
    scale of at least ``x_scale``: what the realization will round, with room for float32 rounding of the scales."""
    b = _current_bias(g, anchor)
    if b is None:
        return 0
    bb = np.abs(b.astype(np.float64).reshape(-1))
    if not bb.size:
        return 0
    top = float(np.max(bb / (np.float64(x_scale) * w_scale.astype(np.float64).reshape(-1))))  # sizes 1 or n
    return int(np.ceil(top * (1.0 + 2.0 ** -20))) + 2


def _current_bias(g: Graph, anchor: str) -> np.ndarray | None:
    """The float bias constant ``anchor`` adds now: Conv's B, Gemm's C, or the constant of MatMul's bias Add."""
    n = g.node(anchor)
    if n.op in ("Conv", "Gemm"):
        t = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else ""
        return g.tensors[t].const if t else None
    readers = g.consumers(n.outputs[0])
    if len(readers) == 1 and readers[0].op == "Add":
        other = [t for t in readers[0].inputs if t != n.outputs[0]]
        if len(other) == 1 and g.tensors[other[0]].const is not None:
            return g.tensors[other[0]].const
    return None


def insert_int16(g: Graph, anchor: str, scale: np.float32, qmax: int) -> None:
    """``Clip(x, -qmax*s, qmax*s) -> QuantizeLinear(int16, zp 0) -> DequantizeLinear`` before ``anchor``'s input.

    The Clip makes the saturation at +-qmax explicit (QuantizeLinear alone saturates at +-32767), so the QDQ graph
    means what the kernels compute and the int32 accumulator cannot overflow (``int16_qmax``)."""
    n = g.node(anchor)
    x = n.inputs[0]
    bound = np.float32(np.float32(qmax) * scale)
    lo = g.add_const(np.asarray(-bound, np.float32), f"{anchor}/int16/min")
    hi = g.add_const(np.asarray(bound, np.float32), f"{anchor}/int16/max")
    s = g.add_const(np.asarray(scale, np.float32), f"{anchor}/int16/scale")
    z = g.add_const(np.asarray(0, np.int16), f"{anchor}/int16/zero_point")
    c = g.add("Clip", [x, lo, hi], name=f"{anchor}/int16/clip")
    q = g.add("QuantizeLinear", [c, s, z], name=f"{anchor}/int16/quantize")
    g.set_tensor(g.tensors[q].with_(qparams=QuantParams((float(scale),), (0,), "int16")))
    dq = g.add("DequantizeLinear", [q, s, z], name=f"{anchor}/int16/dequantize")
    g.set_inputs_of(n, [dq] + list(n.inputs[1:]))
