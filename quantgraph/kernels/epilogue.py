"""The fused epilogue: what happens to an int32 accumulator before it leaves the kernel, and its numpy twin.

Exact semantics, per output element (row m, channel n), in this order (no FMA contraction anywhere):

    v  = int32(acc[m, n] + bias_s32[n])                 # wraps; bias_s32 already holds -zp_u8 * col_sum(W)
    out_dtype == "int32":  result = v                   # nothing below applies

    out_dtype == "float32" (dequantize), float32 throughout:
        y = float32(v) * scale[n]                       # per-channel (or per-tensor, broadcast) scale
        y = y + bias[n]                                 # optional fp32 bias
        y = y + float32(int32(res[m, n]) - res_zp) * res_scale   # optional int residual (u8/s8), dequantized
            or y + res[m, n]                            # optional float32 residual, added as is
        y = y if y > 0 else 0                           # activation "relu"
            or lo if y < lo else (hi if y > hi else y)  # activation "clip"
        result = y

    out_dtype in {"uint8", "int8"} (requantize), float64 in units of out_scale:
        t = float64(v) * float64(mult[n])               # mult = multiplier, default float32(scale[n] / out_scale)
        t = t + float64(float32(bias[n] / out_scale))   # optional fp32 bias
        t = t + float64(int32(res[m, n]) - res_zp) * float64(float32(res_scale / out_scale))   # int residual
            or t + float64(res[m, n]) * float64(float32(1 / out_scale))                      # float residual
        t = max(t, 0) ("relu")  or  clamp(t, float32(lo / out_scale), float32(hi / out_scale)) ("clip")
        result = saturate(rint(t + float64(out_zp)))    # rint: round half to even; [0, 255] / [-128, 127]

The requantization is ONNX's ``QLinearConv`` / ``QLinearMatMul`` exactly (``onnx.reference``): one combined
multiplier ``x_scale * w_scale / y_scale`` rounded to float32 (numpy does it in the scales' type), applied to the
exact integer accumulator in float64, the zero point added in float64, then rounded half to even and saturated.
Multiplying a float32 ``y`` by ``float32(1 / out_scale)`` instead (what this epilogue did before) rounds twice and
differs from ONNX by one level near ties (``tests/kernels/test_epilogue_rounding.py`` constructs such cases). The
float64 path costs about two extra vector instructions per output element, next to ``K / 4`` products.

Only the *kind* (:class:`EpilogueKind`: output dtype, bias present, residual kind, activation) is compiled into a
kernel; the arrays and scalars are run-time arguments, so one compiled kernel serves every layer of that kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.ir.ops.activation import ACTIVATIONS as ACT_TABLE

OUT_DTYPES = ("int32", "float32", "uint8", "int8")
#: the int8 rows of the activation table (quantgraph/ir/ops/activation.py), in table order: none, relu, clip
ACTIVATIONS = tuple(a.name for a in ACT_TABLE.values() if a.int8)
RESIDUALS = ("none", "int", "float")
_QRANGE = {"uint8": (0, 255), "int8": (-128, 127)}
_NO_RESIDUAL = np.zeros((1, 1), np.float32)  # placeholder argument; never read when the kind has no residual


def out_inverse(out_scale: float) -> np.float32:
    """``float32(1 / out_scale)``: the factor a float32 residual is brought into output units with."""
    return np.float32(1.0 / float(out_scale))


def requant_multiplier(scale: np.ndarray | float, out_scale: float) -> np.ndarray:
    """ONNX's combined multiplier ``float32(scale / out_scale)``, as a float32 array (division in float32)."""
    return np.asarray(np.asarray(scale, np.float32) / np.float32(out_scale), np.float32)


@dataclass(frozen=True)
class EpilogueKind:
    """The compiled part of an epilogue (part of the primitive cache key)."""

    out_dtype: str = "int32"
    has_bias: bool = False
    residual: str = "none"
    activation: str = "none"

    def codes(self) -> dict[str, object]:
        """Template constants for the kernel generator."""
        return {"OUT": OUT_DTYPES.index(self.out_dtype), "HAS_BIAS": self.has_bias,
                "RES": RESIDUALS.index(self.residual), "ACT": ACTIVATIONS.index(self.activation)}


@dataclass(frozen=True, eq=False)
class Epilogue:
    """Everything applied to the accumulators (see the module docstring for the exact order).

    Attributes:
        out_dtype: ``int32`` (raw accumulators + bias_s32), ``float32`` (dequantize), ``uint8``/``int8`` (requantize).
        scale: float32 per output channel (shape (N,)) or one float for the tensor: the real value of one unit of
            the accumulator (``x_scale * w_scale``).
        multiplier: u8/s8 outputs only: the requantization multiplier per channel (or one float), overriding the
            default ``float32(scale / out_scale)``; a caller matching ONNX passes ``x_scale * w_scale / y_scale``
            computed in the scales' own type (e.g. float16).
        bias: optional float32 per-channel bias, added after scaling.
        residual: optional tensor shaped like the output (u8/s8 dequantized with residual_scale/zero_point, or f32).
        activation: ``none`` | ``relu`` | ``clip`` (with clip_min/clip_max).
        out_scale, out_zero_point: requantization parameters for u8/s8 outputs.
    """

    out_dtype: str = "int32"
    scale: np.ndarray | float = 1.0
    multiplier: np.ndarray | float | None = None
    bias: np.ndarray | None = None
    residual: np.ndarray | None = None
    residual_scale: float = 1.0
    residual_zero_point: int = 0
    activation: str = "none"
    clip_min: float = 0.0
    clip_max: float = 6.0
    out_scale: float = 1.0
    out_zero_point: int = 0

    @property
    def kind(self) -> EpilogueKind:
        res = "none"
        if self.residual is not None:
            res = "float" if np.asarray(self.residual).dtype == np.float32 else "int"
        return EpilogueKind(self.out_dtype, self.bias is not None, res, self.activation)

    def validate(self, n: int, out_shape: tuple[int, ...], kernel: str, node: str | None = None,
                 op: str | None = None) -> None:
        """Check the epilogue against an output of ``out_shape`` with ``n`` channels (last axis).

        Memoized per (n, out_shape): the instance is frozen and a compiled model calls it once per layer run.
        """
        key = (n, tuple(out_shape))
        if self.__dict__.get("_validated") == key:
            return
        self._validate(n, out_shape, kernel, node, op)
        object.__setattr__(self, "_validated", key)

    def _validate(self, n: int, out_shape: tuple[int, ...], kernel: str, node: str | None, op: str | None) -> None:
        def bad(msg: str) -> KernelError:
            return KernelError(f"kernel '{kernel}': epilogue {msg}", node, op)

        if self.out_dtype not in OUT_DTYPES:
            raise bad(f"out_dtype {self.out_dtype!r} unknown; expected one of {OUT_DTYPES}")
        if self.activation not in ACTIVATIONS:
            raise bad(f"activation {self.activation!r} unknown; expected one of {ACTIVATIONS}")
        if self.out_dtype == "int32":
            if (self.bias is not None or self.residual is not None or self.activation != "none"
                    or np.any(np.asarray(self.scale) != 1.0) or self.multiplier is not None):
                raise bad("with out_dtype 'int32' cannot scale, add a float bias/residual or activate; "
                          "use out_dtype 'float32', 'uint8' or 'int8'")
            return
        scale = np.asarray(self.scale)
        if scale.dtype.kind != "f" or scale.shape not in ((), (1,), (n,)):
            raise bad(f"scale has {scale.dtype}{scale.shape}; expected a float scalar or shape ({n},)")
        if self.multiplier is not None:
            mult = np.asarray(self.multiplier)
            if self.out_dtype not in _QRANGE:
                raise bad(f"multiplier is for uint8/int8 outputs; out_dtype is {self.out_dtype!r}")
            if mult.dtype.kind != "f" or mult.shape not in ((), (1,), (n,)):
                raise bad(f"multiplier has {mult.dtype}{mult.shape}; expected a float scalar or shape ({n},)")
        if self.bias is not None:
            b = np.asarray(self.bias)
            if b.dtype.kind != "f" or b.shape != (n,):
                raise bad(f"bias has {b.dtype}{b.shape}; expected float32 of shape ({n},)")
        if self.residual is not None:
            r = self.residual
            if not isinstance(r, np.ndarray) or r.dtype not in (np.uint8, np.int8, np.float32):
                raise bad("residual must be a uint8, int8 or float32 numpy array")
            if r.shape != tuple(out_shape):
                raise bad(f"residual has shape {r.shape}; expected the output shape {tuple(out_shape)}")
        if self.activation == "clip" and not self.clip_min <= self.clip_max:
            raise bad(f"clip range ({self.clip_min}, {self.clip_max}) is empty")
        if self.out_dtype in _QRANGE:
            if not (math.isfinite(self.out_scale) and self.out_scale > 0):
                raise bad(f"out_scale {self.out_scale} must be a positive finite float")
            lo, hi = _QRANGE[self.out_dtype]
            if not lo <= int(self.out_zero_point) <= hi:
                raise bad(f"out_zero_point {self.out_zero_point} outside the {self.out_dtype} range [{lo}, {hi}]")

    def _channel_vectors(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(per-channel factor, per-channel bias) as the kernels read them: scale and bias for float32 outputs,
        the requantization multiplier and the bias in output units for u8/s8 outputs (see the module docstring)."""
        if self.out_dtype in _QRANGE:
            mult = requant_multiplier(self.scale, self.out_scale) if self.multiplier is None else self.multiplier
            factor = np.asarray(mult, np.float32).reshape(-1)
            bias = None if self.bias is None else (np.asarray(self.bias, np.float64) / float(self.out_scale))
        else:
            factor = np.asarray(self.scale, np.float32).reshape(-1)
            bias = self.bias
        # NOTE: a copy: broadcast_to returns a read-only view, and a read-only array is another Numba signature
        factor = np.array(np.broadcast_to(factor, (n,)), np.float32)
        bias = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
        return factor, bias

    def _scalars(self) -> tuple[np.float32, np.float32, np.float32]:
        """(residual factor, clip low, clip high) in the units the kernel's arithmetic runs in."""
        if self.out_dtype in _QRANGE:
            inv = 1.0 / float(self.out_scale)
            return (requant_multiplier(self.residual_scale, self.out_scale)[()], np.float32(self.clip_min * inv),
                    np.float32(self.clip_max * inv))
        return np.float32(self.residual_scale), np.float32(self.clip_min), np.float32(self.clip_max)

    def runtime_args(self, n: int, bias_s32: np.ndarray, residual2d: np.ndarray | None) -> tuple:
        """The tuple the JIT epilogue reads: fixed dtypes so one compiled signature serves every layer.

        ``(bias_s32, factor[n], bias[n], residual, residual factor, residual zp, lo, hi, float32(1 / out_scale),
        out zp)``, where factor/bias/residual factor/lo/hi are in the units of the output's arithmetic (see
        ``_channel_vectors``)."""
        memo = self.__dict__.get("_channel_args")
        if memo is None or memo[0] != n:
            # NOTE: memoized on the (frozen) instance: a compiled model reuses one Epilogue per layer.
            memo = (n, *self._channel_vectors(n), self._scalars())
            object.__setattr__(self, "_channel_args", memo)
        _, factor, bias, (rscale, lo, hi) = memo
        res = _NO_RESIDUAL if residual2d is None else residual2d
        return (np.ascontiguousarray(bias_s32, np.int32), factor, bias, res, rscale,
                np.int32(self.residual_zero_point), lo, hi, out_inverse(self.out_scale), np.int32(self.out_zero_point))


def apply_epilogue_reference(acc: np.ndarray, bias_s32: np.ndarray, epi: Epilogue) -> np.ndarray:
    """numpy twin of the JIT epilogue: ``acc`` is int32 [..., N], channels on the last axis."""
    with np.errstate(over="ignore"):
        v = (acc.astype(np.int32) + bias_s32.astype(np.int32)).astype(np.int32)
    if epi.out_dtype == "int32":
        return v
    n = v.shape[-1]
    factor, bias = epi._channel_vectors(n)
    rscale, lo, hi = epi._scalars()
    if epi.out_dtype == "float32":
        f32 = np.float32
        y = v.astype(f32) * factor
        if epi.bias is not None:
            y = y + bias
        if epi.residual is not None:
            r = epi.residual
            if r.dtype == np.float32:
                y = y + r
            else:
                y = y + (r.astype(np.int32) - np.int32(epi.residual_zero_point)).astype(f32) * rscale
        zero = f32(0)
        if epi.activation == "relu":
            y = np.where(y > zero, y, zero)
        elif epi.activation == "clip":
            y = np.where(y < lo, lo, np.where(y > hi, hi, y))
        return y.astype(f32)
    f64 = np.float64
    t = v.astype(f64) * factor.astype(f64)
    if epi.bias is not None:
        t = t + bias.astype(f64)
    if epi.residual is not None:
        r = epi.residual
        if r.dtype == np.float32:
            t = t + r.astype(f64) * f64(out_inverse(epi.out_scale))
        else:
            t = t + (r.astype(np.int32) - np.int32(epi.residual_zero_point)).astype(f64) * f64(rscale)
    if epi.activation == "relu":
        t = np.where(t > 0.0, t, 0.0)
    elif epi.activation == "clip":
        t = np.where(t < f64(lo), f64(lo), np.where(t > f64(hi), f64(hi), t))
    qlo, qhi = _QRANGE[epi.out_dtype]
    q = np.rint(t + f64(epi.out_zero_point))
    return np.clip(q, qlo, qhi).astype(epi.out_dtype)
