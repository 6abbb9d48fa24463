"""PrepareB-style weight packing: B[K, N] -> the microkernel's panel layout, done once at compile time.

Layout ``k4n32`` (int8) / ``k2n32`` (int16): ``[N/32 panels][K/G groups][32 columns][G]`` with G = 4 (int8) or 2
(int16), zero-padded in K (to a multiple of G) and N (to a multiple of 32). One panel is what one microkernel tile
multiplies; its G-element groups line up with the 4-byte group of A broadcast per row.

Layout ``amx`` (int8, for the AMX rung): ``[N/32 panels][K/64 steps][2 halves][16 groups][16 columns][4]``, K
zero-padded to a multiple of 64: every AMX B tile (16 groups x 16 columns x 4 bytes) is one contiguous, 64-byte
aligned KiB, which the tile loads stream at full speed (the k4n32 order would interleave the two halves). The
same bytes as k4n32 in another order, so ``PackedWeights.as_layout`` converts either way.

Packed data is 64-byte aligned (``aligned_empty``): a vector or tile row that straddles two cache lines costs two.

The packed object also carries the *compensated bias*: GEMM kernels multiply u8 activations, so an activation with a
zero point ``zp`` (or an s8 activation, shifted to u8 by ``a ^ 0x80`` i.e. ``a + 128``) is handled by

    sum_k (a[k] - zp) * w[k, n] = sum_k a_u8[k] * w[k, n] - zp_u8 * col_sum[n]

where ``zp_u8`` is ``zp`` (u8 activations) or ``zp + 128`` (s8 activations). ``-zp_u8 * col_sum`` is folded into
``bias_s32`` here, so the kernels add one int32 vector and pay nothing at run time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.kernels.intrinsics.x86 import NR

LAYOUTS = {"k4n32": ("uint8", "int8", 4), "k2n32": ("int16", "int16", 2), "amx": ("uint8", "int8", 4)}
_A_DTYPES = {"k4n32": ("uint8", "int8"), "k2n32": ("int16",), "amx": ("uint8", "int8")}
K_ALIGN = {"k4n32": 4, "k2n32": 2, "amx": 64}  # K is zero-padded to a multiple of this
ALIGN = 64


def aligned_empty(shape: int | tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on a 64-byte boundary."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes].view(dt).reshape(shape)


def aligned_zeros(shape: int | tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
    out = aligned_empty(shape, dtype)
    out[...] = 0
    return out


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """B packed for the GEMM microkernel, with the bias that compensates the activation zero point.

    Attributes:
        data: 1-D packed array (int8 for ``k4n32``, int16 for ``k2n32``).
        layout: ``"k4n32"`` or ``"k2n32"``.
        k, n: logical shape of B.
        col_sum: int32[n], sum over k of B (before padding).
        a_dtype: the activation dtype this packing was prepared for (``uint8``/``int8``/``int16``).
        a_zero_point: the activation zero point folded into ``bias_s32``.
        bias_s32: int32[n] = user int32 bias - zp_u8 * col_sum (wrapping int32 arithmetic).
    """

    data: np.ndarray
    layout: str
    k: int
    n: int
    col_sum: np.ndarray
    a_dtype: str
    a_zero_point: int
    bias_s32: np.ndarray

    @property
    def group(self) -> int:
        return LAYOUTS[self.layout][2]

    @property
    def kg(self) -> int:
        """Number of G-element groups along K (K rounded up to the layout's K multiple, divided by G)."""
        step = K_ALIGN[self.layout]
        return -(-self.k // step) * step // self.group

    def as_layout(self, layout: str) -> "PackedWeights":
        """The same weights in ``layout`` (``k4n32`` <-> ``amx``); converted once and memoized on this object."""
        if layout == self.layout:
            return self
        memo = self.__dict__.setdefault("_layouts", {})
        found = memo.get(layout)
        if found is None:
            if layout not in _A_DTYPES or self.a_dtype not in _A_DTYPES[layout]:
                raise KernelError(f"packed weights ({self.layout!r}, {self.a_dtype} activations) cannot be "
                                  f"converted to layout {layout!r}")
            data = _pack_data(unpack_weights(self), layout)
            # NOTE: frozen dataclass; the memo is a cache, not state (both objects describe the same weights).
            found = PackedWeights(data, layout, self.k, self.n, self.col_sum, self.a_dtype, self.a_zero_point,
                                  self.bias_s32)
            memo[layout] = found
        return found

    @property
    def n_panels(self) -> int:
        return -(-self.n // NR)

    @property
    def a_shift(self) -> int:
        """XOR applied to activation bytes before the u8 kernel (0x80 turns s8 into u8), else 0."""
        return 0x80 if self.a_dtype == "int8" else 0

    def check(self, kernel: str, node: str | None = None, op: str | None = None) -> None:
        """Refuse a mis-built object (wrong layout/dtype/size) with a KernelError naming what was expected."""
        want_b = np.dtype(LAYOUTS[self.layout][1]) if self.layout in LAYOUTS else None
        size = self.n_panels * self.kg * NR * self.group
        if (want_b is None or self.data.dtype != want_b or self.data.ndim != 1 or self.data.size != size
                or not self.data.flags.c_contiguous or self.bias_s32.shape != (self.n,)
                or self.bias_s32.dtype != np.int32):
            raise KernelError(f"kernel '{kernel}': packed weights are malformed (layout {self.layout!r}, "
                              f"data {self.data.dtype}{self.data.shape}); rebuild them with pack_weights", node, op)


def _as_bias(bias_s32: np.ndarray | None, n: int) -> np.ndarray:
    if bias_s32 is None:
        return np.zeros(n, np.int64)
    bias = np.asarray(bias_s32)
    if bias.shape != (n,) or bias.dtype.kind not in "iu":
        raise KernelError(f"bias_s32 has {bias.dtype}{bias.shape}; expected an integer vector of shape ({n},)")
    return bias.astype(np.int64)


def default_layout(dtype: np.dtype) -> str:
    """``amx`` for int8 weights when the selected ISA is the AMX rung, else ``k4n32`` / ``k2n32``."""
    from quantgraph.kernels import target

    if dtype == np.int16:
        return "k2n32"
    return "amx" if target.select_isa("pack_weights") == "amx" else "k4n32"


def _pack_data(w: np.ndarray, layout: str) -> np.ndarray:
    """B[K, N] -> the 1-D packed, zero-padded, 64-byte aligned data of ``layout``."""
    k, n = w.shape
    g, step = LAYOUTS[layout][2], K_ALIGN[layout]
    kpad, npan = -(-k // step) * step, -(-n // NR)
    padded = np.zeros((kpad, npan * NR), w.dtype)
    padded[:k, :n] = w
    if layout == "amx":
        tiled = padded.reshape(kpad // 64, 16, g, npan, 2, NR // 2).transpose(3, 0, 4, 1, 5, 2)
    else:
        tiled = padded.reshape(kpad // g, g, npan, NR).transpose(2, 0, 3, 1)
    data = aligned_empty(padded.size, w.dtype)
    data.reshape(tiled.shape)[...] = tiled
    return data


def pack_weights(w: np.ndarray, *, a_dtype: str = "uint8", a_zero_point: int = 0,
                 bias_s32: np.ndarray | None = None, layout: str | None = None) -> PackedWeights:
    """Pack B[K, N] (int8 -> ``k4n32`` or ``amx``, int16 -> ``k2n32``) and fold the activation zero point into
    the bias.

    Args:
        w: weights, shape (K, N), dtype int8 or int16.
        a_dtype: dtype of the activations the GEMM will see: ``uint8``/``int8`` for int8 weights, ``int16``.
        a_zero_point: activation zero point (compensated through ``bias_s32``).
        bias_s32: optional int32 bias added to every accumulator.
        layout: force a layout; default: the one the host's selected ISA runs (kernels convert a mismatch once).
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype not in (np.int8, np.int16):
        raise KernelError(f"pack_weights: W has {w.dtype}{w.shape}; expected a 2-D int8 or int16 array (K, N)")
    layout = layout or default_layout(w.dtype)
    if layout not in LAYOUTS or np.dtype(LAYOUTS[layout][1]) != w.dtype:
        raise KernelError(f"pack_weights: layout {layout!r} does not hold {w.dtype} weights; expected one of "
                          f"{[name for name, spec in LAYOUTS.items() if np.dtype(spec[1]) == w.dtype]}")
    if a_dtype not in _A_DTYPES[layout]:
        raise KernelError(f"pack_weights: activations {a_dtype!r} cannot multiply {w.dtype} weights; "
                          f"expected one of {_A_DTYPES[layout]}")
    k, n = w.shape
    if k == 0 or n == 0:
        raise KernelError(f"pack_weights: W has shape {w.shape}; K and N must be positive")
    data = _pack_data(w, layout)
    col_sum = w.astype(np.int64).sum(axis=0)
    zp_u = int(a_zero_point) + (128 if a_dtype == "int8" else 0)
    bias = (_as_bias(bias_s32, n) - zp_u * col_sum).astype(np.int32)  # NOTE: wraps like the kernels' int32 sums
    return PackedWeights(data, layout, k, n, col_sum.astype(np.int32), a_dtype, int(a_zero_point), bias)


def unpack_weights(p: PackedWeights) -> np.ndarray:
    """Inverse of :func:`pack_weights` (tests and debugging)."""
    g, npan = p.group, p.n_panels
    if p.layout == "amx":
        ks = p.kg * g // 64
        arr = p.data.reshape(npan, ks, 2, 16, NR // 2, g).transpose(1, 3, 5, 0, 2, 4).reshape(ks * 64, npan * NR)
    else:
        arr = p.data.reshape(npan, p.kg, NR, g).transpose(1, 3, 0, 2).reshape(p.kg * g, npan * NR)
    return np.ascontiguousarray(arr[:p.k, :p.n])
