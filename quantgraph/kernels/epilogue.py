"""The fused epilogue: what happens to an int32 accumulator before it leaves the kernel, and its numpy twin.

Exact semantics, per output element (row m, channel n), in this order, float32 throughout (no FMA contraction):

    v  = int32(acc[m, n] + bias_s32[n])                 # wraps; bias_s32 already holds -zp_u8 * col_sum(W)
    out_dtype == "int32":  result = v                   # nothing below applies
    y  = float32(v) * scale[n]                          # per-channel (or per-tensor, broadcast) scale
    y  = y + bias[n]                                    # optional fp32 bias
    y  = y + float32(int32(res[m, n]) - res_zp) * res_scale   # optional int residual (u8/s8), dequantized
         or y + res[m, n]                               # optional float32 residual, added as is
    y  = y if y > 0 else 0                              # activation "relu"
         or lo if y < lo else (hi if y > hi else y)     # activation "clip"
    out_dtype == "float32": result = y
    out_dtype in {"uint8","int8"}: q = rint(y * inv) + float32(out_zp)   # inv = float32(1 / out_scale), ties to even
                                   result = saturate(q) to [0, 255] / [-128, 127]

Requantization multiplies by the float32 reciprocal of ``out_scale`` (computed once, in float64, then rounded to
float32) instead of dividing: a division per output element would cost more than the rest of the epilogue.

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
    """The float32 multiplier every requantization uses for ``1 / out_scale``."""
    return np.float32(1.0 / float(out_scale))


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
        scale: float32 per output channel (shape (N,)) or one float for the tensor.
        bias: optional float32 per-channel bias, added after scaling.
        residual: optional tensor shaped like the output (u8/s8 dequantized with residual_scale/zero_point, or f32).
        activation: ``none`` | ``relu`` | ``clip`` (with clip_min/clip_max).
        out_scale, out_zero_point: requantization parameters for u8/s8 outputs.
    """

    out_dtype: str = "int32"
    scale: np.ndarray | float = 1.0
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
                    or np.any(np.asarray(self.scale) != 1.0)):
                raise bad("with out_dtype 'int32' cannot scale, add a float bias/residual or activate; "
                          "use out_dtype 'float32', 'uint8' or 'int8'")
            return
        scale = np.asarray(self.scale)
        if scale.dtype.kind != "f" or scale.shape not in ((), (1,), (n,)):
            raise bad(f"scale has {scale.dtype}{scale.shape}; expected a float scalar or shape ({n},)")
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

    def runtime_args(self, n: int, bias_s32: np.ndarray, residual2d: np.ndarray | None) -> tuple:
        """The tuple the JIT epilogue reads: fixed dtypes so one compiled signature serves every layer."""
        memo = self.__dict__.get("_channel_args")
        if memo is None or memo[0] != n:
            # NOTE: memoized on the (frozen) instance: a compiled model reuses one Epilogue per layer.
            scale = np.ascontiguousarray(np.broadcast_to(np.asarray(self.scale, np.float32).reshape(-1), (n,)))
            bias = np.zeros(n, np.float32) if self.bias is None else np.ascontiguousarray(self.bias, np.float32)
            memo = (n, scale, bias)
            object.__setattr__(self, "_channel_args", memo)
        _, scale, bias = memo
        res = _NO_RESIDUAL if residual2d is None else residual2d
        return (np.ascontiguousarray(bias_s32, np.int32), scale, bias, res, np.float32(self.residual_scale),
                np.int32(self.residual_zero_point), np.float32(self.clip_min), np.float32(self.clip_max),
                out_inverse(self.out_scale), np.int32(self.out_zero_point))


def apply_epilogue_reference(acc: np.ndarray, bias_s32: np.ndarray, epi: Epilogue) -> np.ndarray:
    """numpy twin of the JIT epilogue: ``acc`` is int32 [..., N], channels on the last axis."""
    with np.errstate(over="ignore"):
        v = (acc.astype(np.int32) + bias_s32.astype(np.int32)).astype(np.int32)
    if epi.out_dtype == "int32":
        return v
    f32 = np.float32
    y = v.astype(f32) * np.asarray(epi.scale, f32)
    if epi.bias is not None:
        y = y + np.asarray(epi.bias, f32)
    if epi.residual is not None:
        r = epi.residual
        if r.dtype == np.float32:
            y = y + r
        else:
            y = y + (r.astype(np.int32) - np.int32(epi.residual_zero_point)).astype(f32) * f32(epi.residual_scale)
    zero = f32(0)
    if epi.activation == "relu":
        y = np.where(y > zero, y, zero)
    elif epi.activation == "clip":
        lo, hi = f32(epi.clip_min), f32(epi.clip_max)
        y = np.where(y < lo, lo, np.where(y > hi, hi, y))
    y = y.astype(f32)
    if epi.out_dtype == "float32":
        return y
    lo, hi = _QRANGE[epi.out_dtype]
    q = np.rint(y * out_inverse(epi.out_scale)) + f32(epi.out_zero_point)
    q = np.where(q < f32(lo), f32(lo), np.where(q > f32(hi), f32(hi), q))
    return q.astype(epi.out_dtype)
