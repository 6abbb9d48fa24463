"""Int8 NHWC pooling: max, average (with requantization) and global average.

Max pooling keeps the input's quantization (it commutes with any monotonic affine map), so its output has the
input's dtype, scale and zero point. Average pooling sums ``x - x_zp`` in int32 and requantizes with

    q = saturate(rint(float32(sum) / float32(count) * x_scale / out_scale) + out_zp)

(float32 throughout, the order written here, round half to even as ONNX ``QuantizeLinear``; ``count`` includes
padded taps only with ``count_include_pad``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.kernels import cache

_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


@dataclass(frozen=True)
class PoolSpec:
    """Geometry of a 2-D pooling window (ONNX conventions; ``pads`` = (top, left, bottom, right))."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    count_include_pad: bool = False

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        pt, pl, pb, pr = self.pads
        return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def _check_x(x: np.ndarray, name: str, node: str | None, op: str | None) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype not in _QRANGE:
        found = f"{x.dtype}{x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise KernelError(f"kernel '{name}': X is {found}; expected 4-D NHWC uint8 or int8", node, op)
    return np.ascontiguousarray(x)


def _geometry(x: np.ndarray, spec: PoolSpec, name: str, node: str | None, op: str | None) -> tuple[int, int]:
    if min(spec.kernel) < 1 or min(spec.strides) < 1 or min(spec.dilations) < 1 or min(spec.pads) < 0:
        raise KernelError(f"kernel '{name}': invalid pooling geometry {spec}", node, op)
    if max(spec.pads[0], spec.pads[2]) >= spec.kernel[0] or max(spec.pads[1], spec.pads[3]) >= spec.kernel[1]:
        raise KernelError(f"kernel '{name}': pads {spec.pads} must be smaller than the kernel {spec.kernel}",
                          node, op)
    oh, ow = spec.out_hw(x.shape[1], x.shape[2])
    if oh < 1 or ow < 1:
        raise KernelError(f"kernel '{name}': input {x.shape[1]}x{x.shape[2]} is too small for {spec}", node, op)
    return oh, ow


def max_pool(x: np.ndarray, spec: PoolSpec, *, out: np.ndarray | None = None, node: str | None = None,
             op: str | None = "QMaxPool") -> np.ndarray:
    """NHWC int8 max pooling; the output keeps the input's dtype and quantization."""
    name = "max_pool_int8_portable"
    x = _check_x(x, name, node, op)
    oh, ow = _geometry(x, spec, name, node, op)
    from quantgraph.kernels.gemm_int8 import check_out

    out = check_out(out, (x.shape[0], oh, ow, x.shape[3]), x.dtype.name, name, node, op)
    fn = cache.primitive("int_pool", {"VERSION": 1}, "max_pool", parallel=True)
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.strides, spec.dilations
    fn(x, kh, kw, sh, sw, spec.pads[0], spec.pads[1], dh, dw, oh, ow, x.dtype.type(_QRANGE[x.dtype][0]), out)
    return out


def avg_pool(x: np.ndarray, spec: PoolSpec, *, x_scale: float, x_zero_point: int, out_scale: float,
             out_zero_point: int, out_dtype: str | None = None, out: np.ndarray | None = None,
             node: str | None = None, op: str | None = "QAveragePool") -> np.ndarray:
    """NHWC int8 average pooling with requantization (see the module docstring for the exact arithmetic)."""
    name = "avg_pool_int8_portable"
    x = _check_x(x, name, node, op)
    oh, ow = _geometry(x, spec, name, node, op)
    odt = np.dtype(out_dtype or x.dtype)
    if odt not in _QRANGE or not out_scale > 0:
        raise KernelError(f"kernel '{name}': out dtype {odt} / out_scale {out_scale}; expected uint8/int8 and a "
                          "positive scale", node, op)
    from quantgraph.kernels.gemm_int8 import check_out

    out = check_out(out, (x.shape[0], oh, ow, x.shape[3]), odt.name, name, node, op)
    qlo, qhi = _QRANGE[odt]
    fn = cache.primitive("int_pool", {"VERSION": 1}, "avg_pool", parallel=True)
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.strides, spec.dilations
    f32 = np.float32
    fn(x, kh, kw, sh, sw, spec.pads[0], spec.pads[1], dh, dw, oh, ow, bool(spec.count_include_pad),
       np.int32(x_zero_point), f32(x_scale), f32(out_scale), f32(out_zero_point), f32(qlo), f32(qhi), out)
    return out


def global_avg_pool(x: np.ndarray, *, x_scale: float, x_zero_point: int, out_scale: float, out_zero_point: int,
                    out_dtype: str | None = None, node: str | None = None,
                    op: str | None = "QGlobalAveragePool") -> np.ndarray:
    """NHWC global average pooling -> [N, 1, 1, C] (average pooling over the whole plane)."""
    x = _check_x(x, "global_avg_pool_int8_portable", node, op)
    return avg_pool(x, PoolSpec((x.shape[1], x.shape[2])), x_scale=x_scale, x_zero_point=x_zero_point,
                    out_scale=out_scale, out_zero_point=out_zero_point, out_dtype=out_dtype, node=node, op=op)
