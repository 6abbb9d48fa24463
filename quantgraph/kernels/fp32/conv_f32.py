"""2-D convolution in fp32: im2col in Numba + numpy/OpenBLAS GEMM + a fused epilogue, NCHW or NHWC.

* NCHW: per image and group, cols (C/g*kH*kW, OH*OW) = im2col(x); Y[n, g] (M/g, OH*OW) = W2 @ cols.
  A 1x1 stride-1 unpadded conv skips im2col: Y[n] = W2 @ X[n] (C, H*W).
* NHWC: per image, cols (OH*OW, kH*kW*C/g) = im2col(x); Y[n] (OH*OW, M) = cols @ Wt. A 1x1 stride-1 unpadded
  conv is one GEMM over the whole batch: Y (N*H*W, M) = X (N*H*W, C) @ Wt.
* Depthwise (group == C == M): a direct Numba loop, no GEMM.

Weights are packed once (``pack_conv``); the epilogue (bias, residual Z, activation) runs once over each output
block while it is still in cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from quantgraph.kernels.fp32.eltwise_f32 import epilogue


@dataclass(frozen=True)
class ConvGeom:
    """Static geometry of one 2-D convolution (all ints)."""

    c: int
    m: int
    group: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    pb: int
    pr: int

    @property
    def pointwise(self) -> bool:
        return (self.kh, self.kw, self.sh, self.sw, self.pt, self.pl, self.pb, self.pr) == (1, 1, 1, 1, 0, 0, 0, 0)

    @property
    def depthwise(self) -> bool:
        return self.group == self.c == self.m and self.group > 1


@njit(error_model="numpy", parallel=True, cache=True)
def im2col_nchw(x, cols, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl):
    """x (C, H, W) -> cols (C*kh*kw, oh*ow); zeros where the window reads padding."""
    c, h, w = x.shape
    for r in prange(c * kh * kw):
        ci = r // (kh * kw)
        ki = (r // kw) % kh
        kj = r % kw
        row = cols[r]
        for oy in range(oh):
            iy = oy * sh - pt + ki * dh
            base = oy * ow
            if iy < 0 or iy >= h:
                for ox in range(ow):
                    row[base + ox] = np.float32(0.0)
            elif sw == 1 and dw == 1:
                xr = x[ci, iy]
                lo = min(max(pl - kj, 0), ow)
                hi = max(min(w + pl - kj, ow), lo)
                for ox in range(lo):
                    row[base + ox] = np.float32(0.0)
                for ox in range(lo, hi):
                    row[base + ox] = xr[ox - pl + kj]
                for ox in range(hi, ow):
                    row[base + ox] = np.float32(0.0)
            else:
                xr = x[ci, iy]
                for ox in range(ow):
                    ix = ox * sw - pl + kj * dw
                    row[base + ox] = xr[ix] if 0 <= ix < w else np.float32(0.0)


@njit(error_model="numpy", parallel=True, cache=True)
def im2col_nhwc(x, cols, c0, cg, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl):
    """x (H, W, C) -> cols (oh*ow, kh*kw*cg) for channels [c0, c0+cg); the (ki, kj, c) order matches ``pack_conv``."""
    h, w, _ = x.shape
    for oy in prange(oh):
        for ox in range(ow):
            row = cols[oy * ow + ox]
            for ki in range(kh):
                iy = oy * sh - pt + ki * dh
                for kj in range(kw):
                    ix = ox * sw - pl + kj * dw
                    base = (ki * kw + kj) * cg
                    if 0 <= iy < h and 0 <= ix < w:
                        xp = x[iy, ix]
                        for c in range(cg):
                            row[base + c] = xp[c0 + c]
                    else:
                        for c in range(cg):
                            row[base + c] = np.float32(0.0)


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def depthwise_nchw(x, w, y, sh, sw, dh, dw, pt, pl):
    """y[n, c] = sum_k x[n, c, window] * w[c, 0, k]; x (N, C, H, W), w (C, 1, kh, kw), y (N, C, OH, OW)."""
    n_, c_, h, wd = x.shape
    oh, ow = y.shape[2], y.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    for p in prange(n_ * c_):
        n = p // c_
        c = p % c_
        yo = y[n, c]
        xi = x[n, c]
        for oy in range(oh):
            for ox in range(ow):
                yo[oy, ox] = 0.0
        for ki in range(kh):
            for kj in range(kw):
                wv = w[c, 0, ki, kj]
                for oy in range(oh):
                    iy = oy * sh - pt + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    for ox in range(ow):
                        ix = ox * sw - pl + kj * dw
                        if 0 <= ix < wd:
                            yo[oy, ox] += xi[iy, ix] * wv


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def depthwise_nhwc(x, w, y, sh, sw, dh, dw, pt, pl):
    """NHWC depthwise: x (N, H, W, C), w packed (kh, kw, C), y (N, OH, OW, C); vectorized over C."""
    n_, h, wd, c_ = x.shape
    oh, ow = y.shape[1], y.shape[2]
    kh, kw = w.shape[0], w.shape[1]
    for p in prange(n_ * oh):
        n = p // oh
        oy = p % oh
        for ox in range(ow):
            yo = y[n, oy, ox]
            for c in range(c_):
                yo[c] = 0.0
            for ki in range(kh):
                iy = oy * sh - pt + ki * dh
                if iy < 0 or iy >= h:
                    continue
                for kj in range(kw):
                    ix = ox * sw - pl + kj * dw
                    if ix < 0 or ix >= wd:
                        continue
                    xp = x[n, iy, ix]
                    wp = w[ki, kj]
                    for c in range(c_):
                        yo[c] += xp[c] * wp[c]


def pack_conv(w: np.ndarray, g: ConvGeom, layout: str) -> np.ndarray:
    """Pre-pack W (M, C/g, kh, kw) once: NCHW -> (g, M/g, C/g*kh*kw); NHWC -> (g, kh*kw*C/g, M/g);
    depthwise NHWC -> (kh, kw, C)."""
    w = np.asarray(w, np.float32)
    mg = g.m // g.group
    if g.depthwise:
        return np.ascontiguousarray(w.reshape(g.m, g.kh, g.kw).transpose(1, 2, 0)) if layout == "NHWC" \
            else np.ascontiguousarray(w)
    wg = w.reshape(g.group, mg, -1, g.kh, g.kw)
    if layout == "NCHW":
        return np.ascontiguousarray(wg.reshape(g.group, mg, -1))
    return np.ascontiguousarray(wg.transpose(0, 3, 4, 2, 1).reshape(g.group, -1, mg))


def scratch_size(g: ConvGeom, layout: str, oh: int, ow: int, packed_batch: int = 0, packed_isa: str = "") -> int:
    """float32 elements of the im2col buffer one image needs (0 when the conv needs none). ``packed_batch`` (> 0):
    the batch of a conv on the packed GEMM of ISA ``packed_isa``, which needs none when it gathers im2col rows
    inside its GEMM tasks."""
    if g.depthwise or (g.pointwise and (layout == "NCHW" or g.group == 1)):
        return 0
    if packed_batch > 0 and g.group == 1 and layout == "NHWC":
        from quantgraph.kernels.fp32.gemm_f32_packed import conv_fusable

        if conv_fusable(packed_batch * oh * ow, g.m, g.c * g.kh * g.kw, g.c, packed_isa):
            return 0
    k = (g.c // g.group) * g.kh * g.kw
    if layout == "NCHW":
        return k * oh * ow
    return oh * ow * (k + (0 if g.group == 1 else g.m // g.group))


def conv_steps(g: ConvGeom, layout: str, x: np.ndarray, wp: np.ndarray, bias: np.ndarray | None,
               z: np.ndarray | None, y: np.ndarray, cols: np.ndarray | None, act: int, alpha: float,
               beta: float, gemm_packed: list | None = None, node: tuple[str, str] | None = None) -> list:
    """Prebound ``(fn, args)`` steps computing y = act(conv(x, W) + bias + z) into ``y``.

    With ``gemm_packed`` (one ``gemm_f32_packed.PackedB`` per group, NHWC, not depthwise) every GEMM runs the
    packed kernel (AVX-512 or AVX2) with bias, residual and activation fused into it, writing group slices in
    place.
    """
    if gemm_packed is not None:
        return _conv_steps_packed(g, x, gemm_packed, bias, z, y, cols, act, alpha, beta, node)
    steps: list = []
    n = x.shape[0]
    mg, cg = g.m // g.group, g.c // g.group
    geo = (g.sh, g.sw, g.dh, g.dw, g.pt, g.pl)
    if layout == "NCHW":
        oh, ow = y.shape[2], y.shape[3]
        if g.depthwise:
            steps.append((depthwise_nchw, (x, wp, y) + geo))
            for i in range(n):
                zi = None if z is None else z[i].reshape(g.m, oh * ow)
                if bias is not None or zi is not None or act:
                    steps.append((epilogue, (y[i].reshape(g.m, oh * ow), bias, 1, zi, act, alpha, beta)))
            return steps
        for i in range(n):
            yi = y[i].reshape(g.m, oh * ow)
            for gi in range(g.group):
                yg = yi[gi * mg:(gi + 1) * mg]
                if g.pointwise:
                    src = x[i, gi * cg:(gi + 1) * cg].reshape(cg, -1)
                else:
                    src = cols[:cg * g.kh * g.kw * oh * ow].reshape(cg * g.kh * g.kw, oh * ow)
                    steps.append((im2col_nchw, (x[i, gi * cg:(gi + 1) * cg], src, oh, ow, g.kh, g.kw) + geo))
                steps.append((_matmul, (wp[gi], src, yg)))
            zi = None if z is None else z[i].reshape(g.m, oh * ow)
            if bias is not None or zi is not None or act:
                steps.append((epilogue, (yi, bias, 1, zi, act, alpha, beta)))
        return steps
    oh, ow = y.shape[1], y.shape[2]
    if g.depthwise:
        steps.append((depthwise_nhwc, (x, wp, y) + geo))
        rows = [(y.reshape(-1, g.m), None if z is None else z.reshape(-1, g.m))]
    elif g.pointwise and g.group == 1:
        steps.append((_matmul, (x.reshape(-1, g.c), wp[0], y.reshape(-1, g.m))))
        rows = [(y.reshape(-1, g.m), None if z is None else z.reshape(-1, g.m))]
    else:
        rows = []
        k = cg * g.kh * g.kw
        for i in range(n):
            yi = y[i].reshape(oh * ow, g.m)
            for gi in range(g.group):
                c2 = cols[:oh * ow * k].reshape(oh * ow, k)
                steps.append((im2col_nhwc, (x[i], c2, gi * cg, cg, oh, ow, g.kh, g.kw) + geo))
                if g.group == 1:
                    steps.append((_matmul, (c2, wp[0], yi)))
                else:
                    tmp = cols[oh * ow * k:oh * ow * (k + mg)].reshape(oh * ow, mg)
                    steps.append((_matmul_strided, (c2, wp[gi], tmp, yi[:, gi * mg:(gi + 1) * mg])))
            rows.append((yi, None if z is None else z[i].reshape(oh * ow, g.m)))
    if bias is not None or z is not None or act:
        for yr, zr in rows:
            steps.append((epilogue, (yr, bias, 2, zr, act, alpha, beta)))
    return steps


def _conv_steps_packed(g: ConvGeom, x: np.ndarray, gp: list, bias: np.ndarray | None, z: np.ndarray | None,
                       y: np.ndarray, cols: np.ndarray | None, act: int, alpha: float, beta: float,
                       node: tuple[str, str] | None) -> list:
    """NHWC conv on the packed GEMM (see ``conv_steps``): a 1x1 stride-1 conv is one GEMM reading the
    activation in place; other group-1 convs gather their im2col rows inside the GEMM tasks (one parallel region,
    ``gemm_f32_packed.bind_conv``) when ``conv_fusable`` says so; the rest run im2col per image, then the GEMM."""
    from quantgraph.kernels.fp32.gemm_f32_packed import bind, bind_conv, conv_fusable

    name, op = node if node is not None else (None, None)
    n = x.shape[0]
    mg, cg = g.m // g.group, g.c // g.group
    oh, ow = y.shape[1], y.shape[2]
    ep = (act, alpha, beta)
    y2 = _rows_view(y, g.m)
    z2 = None if z is None else _rows_view(z, g.m)
    if g.pointwise and g.group == 1 and np.shares_memory(x2 := x.reshape(-1, g.c), x):
        # 1x1 stride 1: the GEMM reads the activation in place (no im2col, no copy)
        return [bind(x2, gp[0], y2, bias, z2, *ep, node=name, op=op)]
    geo = (g.sh, g.sw, g.dh, g.dw, g.pt, g.pl)
    k = cg * g.kh * g.kw
    if g.group == 1 and (conv_fusable(n * oh * ow, g.m, k, cg, gp[0].isa) or cols is None or cols.size < oh * ow * k):
        # im2col fused into the GEMM tasks: one parallel region, no scratch matrix
        return [bind_conv(x, gp[0], y2, bias, z2, *ep, oh, ow, g.kh, g.kw, geo, node=name, op=op)]
    steps: list = []
    for i in range(n):
        yi = y[i].reshape(oh * ow, g.m)
        zi = None if z is None else z[i].reshape(oh * ow, g.m)
        for gi in range(g.group):
            c2 = cols[:oh * ow * k].reshape(oh * ow, k)
            steps.append((im2col_nhwc, (x[i], c2, gi * cg, cg, oh, ow, g.kh, g.kw) + geo))
            sl = slice(gi * mg, (gi + 1) * mg)
            steps.append(bind(c2, gp[gi], yi[:, sl], None if bias is None else bias[sl],
                              None if zi is None else zi[:, sl], *ep, node=name, op=op))
    return steps


def _rows_view(a: np.ndarray, m: int) -> np.ndarray:
    """``a`` (N, OH, OW, M) as (N*OH*OW, M), which must be a view: steps are bound once and write in place."""
    v = a.reshape(-1, m)
    if v.size and not np.shares_memory(v, a):
        from quantgraph.errors import KernelError

        raise KernelError(f"conv output/residual of strides {a.strides} cannot be viewed as rows")
    return v


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=out)


def _matmul_strided(a: np.ndarray, b: np.ndarray, tmp: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=tmp)
    out[...] = tmp
