"""Sliding-window geometry shared by Conv, ConvTranspose and the pooling ops (helpers only; registers no op).

Attributes follow ONNX: ``strides``/``dilations`` per spatial axis, ``pads`` as ``(b1, .., bn, e1, .., en)``,
``auto_pad`` in NOTSET | SAME_UPPER | SAME_LOWER | VALID. An empty tuple means "the ONNX default" (all ones /
all zeros), so one IR attribute set serves 1-D, 2-D and 3-D windows. ``auto_pad`` is resolved into explicit
pads at import when the input's spatial shape is known; otherwise inference and the reference resolve it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from quantgraph.ir.node import Node
from quantgraph.ir.shapes import Dim

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class Window:
    """Geometry of one sliding-window op over ``rank`` spatial axes; pads are None where they depend on an
    unknown input dim (SAME_* padding)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int | None, ...]  # begin..., end...

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def extent(self, i: int) -> int:
        """Span of the dilated kernel along axis i."""
        return (self.kernel[i] - 1) * self.dilations[i] + 1


def _per_axis(n: Node, name: str, value: Sequence[int], rank: int, default: int) -> tuple[int, ...]:
    if not value:
        return (default,) * rank
    if len(value) != rank:
        raise n.error(f"{name} has {len(value)} values {tuple(value)}; expected {rank} (one per spatial axis)")
    if default == 1 and any(v < 1 for v in value):
        raise n.error(f"{name} {tuple(value)} must be positive")
    return tuple(int(v) for v in value)


def window(n: Node, kernel: Sequence[int], in_dims: Sequence[Dim]) -> Window:
    """Validate ``n``'s window attributes for ``kernel`` and resolve ``auto_pad`` against the spatial ``in_dims``."""
    rank = len(kernel)
    a = n.attrs
    strides = _per_axis(n, "strides", a.get("strides", ()), rank, 1)
    dilations = _per_axis(n, "dilations", a.get("dilations", ()), rank, 1)
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise n.error(f"auto_pad is '{auto_pad}'; expected one of {', '.join(AUTO_PADS)}")
    pads: tuple[int | None, ...] = _per_axis(n, "pads", a.get("pads", ()), 2 * rank, 0)
    if auto_pad == "VALID":
        pads = (0,) * (2 * rank)
    elif auto_pad != "NOTSET":
        w = Window(tuple(kernel), strides, dilations, pads)
        pads = same_pads(w, in_dims, upper=auto_pad == "SAME_UPPER")
    return Window(tuple(int(k) for k in kernel), strides, dilations, pads)


def same_pads(w: Window, in_dims: Sequence[Dim], upper: bool) -> tuple[int | None, ...]:
    """SAME_* padding: output = ceil(in / stride); the odd pixel goes at the end (UPPER) or the beginning."""
    begin: list[int | None] = []
    end: list[int | None] = []
    for i, d in enumerate(in_dims):
        if not isinstance(d, int):
            begin.append(None)
            end.append(None)
            continue
        out = -(-d // w.strides[i])
        total = max(0, (out - 1) * w.strides[i] + w.extent(i) - d)
        small, big = total // 2, total - total // 2
        begin.append(small if upper else big)
        end.append(big if upper else small)
    return tuple(begin + end)


def out_dim(w: Window, i: int, d: Dim, ceil_mode: bool = False) -> Dim:
    """Output length along spatial axis i (None when unknown)."""
    pb, pe = w.pads[i], w.pads[w.rank + i]
    if not isinstance(d, int) or pb is None or pe is None:
        return None
    span = d + pb + pe - w.extent(i)
    if span < 0:
        return -1  # the caller reports it with the node's context
    out = (-(-span // w.strides[i]) if ceil_mode else span // w.strides[i]) + 1
    # NOTE: with ceil_mode the last window must still start inside the input or its begin padding (ONNX/PyTorch).
    if ceil_mode and (out - 1) * w.strides[i] >= d + pb:
        out -= 1
    return out


def out_dims(n: Node, w: Window, in_dims: Sequence[Dim], ceil_mode: bool = False) -> tuple[Dim, ...]:
    outs = tuple(out_dim(w, i, d, ceil_mode) for i, d in enumerate(in_dims))
    for i, o in enumerate(outs):
        if isinstance(o, int) and o <= 0:
            raise n.error(f"spatial axis {i} of size {in_dims[i]} with pads {w.pads[i]},{w.pads[w.rank + i]} is "
                          f"smaller than the window ({w.extent(i)}); expected a larger input or more padding")
    return outs


def pad_for_windows(x: np.ndarray, w: Window, out: Sequence[int], value: float) -> np.ndarray:
    """Pad the spatial axes of ``x`` (N, C, ...) by ``w.pads``, plus what ceil_mode's last windows need at the end,
    with ``value``. A tail the windows never reach (strides that skip it) is left in place, not cropped."""
    widths = [(0, 0), (0, 0)]
    for i in range(w.rank):
        need = (out[i] - 1) * w.strides[i] + w.extent(i)
        pb = int(w.pads[i])  # type: ignore[arg-type]
        widths.append((pb, max(0, need - pb - x.shape[2 + i])))
    if any(p for pair in widths for p in pair):
        x = np.pad(x, widths, mode="constant", constant_values=value)
    return x


def sliding_windows(xp: np.ndarray, w: Window, out: Sequence[int]) -> np.ndarray:
    """A read-only view (N, C, *out, *kernel) of the windows of the padded input ``xp`` (no copy)."""
    lead = xp.strides[:2]
    sp = xp.strides[2:]
    strides = lead + tuple(sp[i] * w.strides[i] for i in range(w.rank)) + tuple(
        sp[i] * w.dilations[i] for i in range(w.rank))
    return as_strided(xp, xp.shape[:2] + tuple(out) + w.kernel, strides, writeable=False)


def resolved_pads(w: Window) -> tuple[int, ...]:
    assert all(p is not None for p in w.pads), "pads are resolved once the input shape is known"
    return tuple(int(p) for p in w.pads)  # type: ignore[arg-type]


def prod(values: Sequence[int]) -> int:
    return int(math.prod(values))
