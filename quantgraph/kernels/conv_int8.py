"""Int8 NHWC convolution with the GEMM microkernel and the same fused epilogue.

Layout: activations NHWC (channels innermost, so one output pixel's receptive field is ``kh*kw`` contiguous runs
of C bytes), weights ONNX ``[M, C/group, kH, kW]`` packed once into one ``k4n32`` GEMM panel set per group with K
ordered ``(ky, kx, c)``. Three paths, picked per layer at pack time:

* ``gemm1x1``: 1x1, stride 1, no padding, one group: the input *is* the A matrix (``[N*H*W, C]``), no copy.
* ``im2col``: everything else (stride, padding, dilation, groups): each task copies ``mc`` output pixels' patches
  into a small per-thread buffer (cache-resident) and runs the microkernel over all column panels.
* ``depthwise``: ``group == C == M``: direct per-channel loop (no GEMM structure to exploit).

Padding taps read the activation zero point (in the u8 domain), so the zero-point compensation folded into the
packed bias (``-zp * sum of the filter``) stays exact at the borders.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.kernels import cache, target
from quantgraph.kernels.epilogue import Epilogue
from quantgraph.kernels.gemm_int8 import MR, GemmCall, amx_tasks, check_out, gemm_launch_args, layout_for
from quantgraph.kernels.packing import PackedWeights, pack_weights

_DEFAULT_EPILOGUE = Epilogue()


@dataclass(frozen=True)
class ConvSpec:
    """Geometry of a 2-D convolution (ONNX conventions; ``pads`` = (top, left, bottom, right))."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        pt, pl, pb, pr = self.pads
        return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


@dataclass(frozen=True, eq=False)
class PackedConv:
    """Conv weights packed for one path (see module docstring), with the zero-point-compensated bias.

    Attributes:
        spec: the convolution geometry.
        cin, cout: input / output channels.
        path: ``gemm1x1`` | ``im2col`` | ``depthwise``.
        groups: one PackedWeights per group (GEMM paths).
        dw: int8 [kh, kw, C] (depthwise path).
        bias_s32: int32 [cout] (depthwise path; the GEMM paths keep theirs per group).
        x_dtype, x_zero_point: the activation type and zero point this packing compensates.
    """

    spec: ConvSpec
    cin: int
    cout: int
    path: str
    groups: tuple[PackedWeights, ...]
    dw: np.ndarray | None
    bias_s32: np.ndarray
    x_dtype: str
    x_zero_point: int

    @property
    def xpad(self) -> int:
        """The zero point as the u8 byte the kernel sees (s8 inputs are shifted by 128)."""
        return self.x_zero_point + (128 if self.x_dtype == "int8" else 0)


def _spec_errors(spec: ConvSpec) -> str | None:
    if min(spec.kernel) < 1 or min(spec.strides) < 1 or min(spec.dilations) < 1 or spec.group < 1:
        return "kernel, strides, dilations and group must be positive"
    if min(spec.pads) < 0:
        return "pads must be non-negative"
    return None


def pack_conv_weights(w: np.ndarray, spec: ConvSpec, *, x_dtype: str = "uint8", x_zero_point: int = 0,
                      bias_s32: np.ndarray | None = None) -> PackedConv:
    """Pack ONNX-order int8 conv weights ``[M, C/group, kH, kW]`` for :func:`conv_u8s8`."""
    w = np.asarray(w)
    if w.ndim != 4 or w.dtype != np.int8:
        raise KernelError(f"pack_conv_weights: W has {w.dtype}{w.shape}; expected 4-D int8 (M, C/group, kH, kW)")
    if _spec_errors(spec):
        raise KernelError(f"pack_conv_weights: {_spec_errors(spec)}; got {spec}")
    mo, cg, kh, kw = w.shape
    if (kh, kw) != tuple(spec.kernel) or mo % spec.group:
        raise KernelError(f"pack_conv_weights: W has shape {w.shape}; expected kernel {spec.kernel} and M "
                          f"divisible by group={spec.group}")
    if x_dtype not in ("uint8", "int8"):
        raise KernelError(f"pack_conv_weights: x_dtype {x_dtype!r}; expected 'uint8' or 'int8'")
    bias = np.zeros(mo, np.int64) if bias_s32 is None else np.asarray(bias_s32, np.int64)
    if bias.shape != (mo,):
        raise KernelError(f"pack_conv_weights: bias_s32 has shape {bias.shape}; expected ({mo},)")
    cin, g = cg * spec.group, spec.group
    if g == cin == mo and cg == 1:
        dw = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
        zp_u = int(x_zero_point) + (128 if x_dtype == "int8" else 0)
        comp = (bias - zp_u * dw.astype(np.int64).sum(axis=(0, 1))).astype(np.int32)
        return PackedConv(spec, cin, mo, "depthwise", (), dw, comp, x_dtype, int(x_zero_point))
    mg = mo // g
    packs = []
    for gi in range(g):
        wg = w[gi * mg:(gi + 1) * mg].transpose(2, 3, 1, 0).reshape(kh * kw * cg, mg)  # K = (ky, kx, c)
        packs.append(pack_weights(np.ascontiguousarray(wg), a_dtype=x_dtype, a_zero_point=x_zero_point,
                                  bias_s32=bias[gi * mg:(gi + 1) * mg]))
    simple = (kh, kw) == (1, 1) and spec.strides == (1, 1) and spec.pads == (0, 0, 0, 0) and g == 1
    comp = np.concatenate([p.bias_s32 for p in packs])
    return PackedConv(spec, cin, mo, "gemm1x1" if simple else "im2col", tuple(packs), None, comp, x_dtype,
                      int(x_zero_point))


def _conv_chunk(m: int, kp: int, rows: int = MR) -> int:
    """Output pixels per im2col task: ~128 KiB of patches, at least 2 tasks per thread, multiple of ``rows`` (the
    microkernel's row block: 8 for VNNI, 32 for AMX)."""
    mc = max(2 * rows, min(512, (128 * 1024) // max(kp, 1)))
    threads = cache._threads()
    mc = min(mc, -(-m // (2 * threads)))
    return max(rows, -(-mc // rows) * rows)


def conv_u8s8(x: np.ndarray, w: PackedConv, epilogue: Epilogue = _DEFAULT_EPILOGUE, *,
              out: np.ndarray | None = None, node: str | None = None, op: str | None = "QConv") -> np.ndarray:
    """Int8 convolution ``epilogue(conv(x - x_zp, W) + bias_s32)`` on NHWC tensors.

    Args:
        x: activations NHWC ``[N, H, W, C]``, dtype ``w.x_dtype`` (uint8 or int8).
        w: weights from :func:`pack_conv_weights`.
        epilogue: as for GEMM; a residual must have the output shape ``[N, OH, OW, M]``.
        out: optional preallocated C-contiguous NHWC output of ``epilogue.out_dtype``.
        node, op: names used in error messages.

    Returns:
        NHWC output ``[N, OH, OW, M]``.
    """
    out, steps = conv_steps(np.ascontiguousarray(x), w, epilogue, out=out, node=node, op=op, copy_residual=True)
    for fn, args in steps:
        fn(*args)
    return out


def conv_steps(x: np.ndarray, w: PackedConv, epilogue: Epilogue = _DEFAULT_EPILOGUE, *,
               out: np.ndarray | None = None, node: str | None = None, op: str | None = "QConv",
               copy_residual: bool = False) -> tuple[np.ndarray, list[tuple]]:
    """Check everything and bind :func:`conv_u8s8` to these buffers: ``(out, [(fn, args), ...])``.

    Running the steps computes the convolution of whatever ``x`` (and the epilogue's residual) hold at that time,
    so a compiled model binds each layer once and then only runs the steps. ``x`` and the residual must be
    C-contiguous (the steps read their memory; a copy made here would miss later writes) unless ``copy_residual``
    (the steps run once, right away).
    """
    isa = target.select_isa("conv_u8s8s32_<isa>")
    kernel = f"conv_u8s8s32_{isa}"
    if not isinstance(w, PackedConv):
        found = f"{w.dtype}{w.shape} array" if isinstance(w, np.ndarray) else type(w).__name__
        raise KernelError(f"kernel '{kernel}': W is not pre-packed (got a {found}); run pack_conv_weights", node, op)
    if not isinstance(x, np.ndarray) or x.dtype != np.dtype(w.x_dtype) or x.ndim != 4:
        found = f"{x.dtype}{x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise KernelError(f"kernel '{kernel}': X is {found}; expected 4-D NHWC {w.x_dtype} "
                          f"(N, H, W, C={w.cin})", node, op)
    nb, h, wd, c = x.shape
    if c != w.cin or nb < 1:
        raise KernelError(f"kernel '{kernel}': X has shape {x.shape}; expected (N>=1, H, W, C={w.cin}) NHWC",
                          node, op)
    oh, ow = w.spec.out_hw(h, wd)
    if oh < 1 or ow < 1:
        raise KernelError(f"kernel '{kernel}': input {h}x{wd} is too small for {w.spec}", node, op)
    oshape = (nb, oh, ow, w.cout)
    epilogue.validate(w.cout, oshape, kernel, node, op)
    out = check_out(out, oshape, epilogue.out_dtype, kernel, node, op)
    if not x.flags.c_contiguous:
        raise KernelError(f"kernel '{kernel}': X must be C-contiguous", node, op)
    m = nb * oh * ow
    out2d = out.reshape(m, w.cout)
    res = epilogue.residual
    if res is not None and copy_residual:
        res = np.ascontiguousarray(res)
    if res is not None and not res.flags.c_contiguous:
        raise KernelError(f"kernel '{kernel}': the residual must be C-contiguous", node, op)
    res2d = None if res is None else res.reshape(m, w.cout)
    ep = epilogue.runtime_args(w.cout, w.bias_s32, res2d)
    params = {"ISA": isa, "KIND": "u8s8", **epilogue.kind.codes()}
    s = w.spec
    (kh, kw), (sh, sw), (dh, dw) = s.kernel, s.strides, s.dilations
    pt, pl = s.pads[0], s.pads[1]
    xu = x.view(np.uint8)
    xorv = np.uint8(0x80 if w.x_dtype == "int8" else 0)
    if w.path == "depthwise":
        fn = cache.primitive("int_gemm", params, "conv_depthwise", parallel=True)
        return out, [(fn, (xu, np.uint8(w.xpad), xorv, w.dw, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, ep, out2d))]
    layout = layout_for("u8s8", isa)
    if w.path == "gemm1x1":
        p = w.groups[0].as_layout(layout)
        a2 = x.reshape(m, c)
        if p.a_shift or (p.layout != "amx" and p.kg * p.group != p.k):  # A needs a prepared copy per call
            call = GemmCall("u8s8", "u8s8s32", a2, p, epilogue, out2d, node, op)
            return out, [(call, (a2, out2d))]
        fn, head, tail = gemm_launch_args(isa, params, c, m, p)
        return out, [(fn, (a2.reshape(-1), *head, ep, out2d, *tail))]
    fn = cache.primitive("int_gemm", params, "conv_im2col", parallel=True)
    cg = w.cin // s.group
    steps = []
    for gi, p in enumerate(w.groups):
        p = p.as_layout(layout)
        lo, hi = gi * p.n, (gi + 1) * p.n
        ep_g = (np.ascontiguousarray(ep[0][lo:hi]), np.ascontiguousarray(ep[1][lo:hi]),
                np.ascontiguousarray(ep[2][lo:hi])) + ep[3:]
        kp = p.kg * p.group
        rows = 32 if layout == "amx" else MR
        pblk = amx_tasks(m, p.n_panels, kp // 64)[2] if layout == "amx" else 1
        steps.append((fn, (xu.reshape(-1), nb, h, wd, c, np.uint8(w.xpad), xorv, gi * cg, cg, kh, kw, sh, sw, pt, pl,
                           dh, dw, oh, ow, p.data, p.kg, p.n, ep_g, out2d, lo, _conv_chunk(m, kp, rows), pblk)))
    return out, steps
