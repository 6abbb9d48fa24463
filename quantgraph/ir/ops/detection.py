"""Detector and vision ops: NonMaxSuppression, RoiAlign, GridSample, AffineGrid, DeformConv, MaxUnpool, Col2Im.

The sampling ops share one interpolation core (:func:`_interpolate`): per spatial axis it turns a coordinate into
taps (indices and weights: 1 for nearest, 2 for linear, 4 for cubic) with the padding mode applied to the indices,
then sums over the tap combinations with vectorized gathers. GridSample uses it directly; DeformConv samples its
offset kernel positions bilinearly with zero padding through it. Semantics follow the ONNX reference
implementations, including their corner cases (RoiAlign's max mode takes the max of weighted corners; MaxUnpool's
indices address the unpadded inferred output).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import Fusion, op
from quantgraph.ir.ops.spatial import out_dim, out_dims, prod, resolved_pads, window
from quantgraph.ir.shapes import Dim
from quantgraph.ir.tensor import TensorInfo, TensorType

nms = op("NonMaxSuppression", inputs="boxes scores max_output_boxes_per_class? iou_threshold? score_threshold?",
         outputs="selected_indices", attrs={"center_point_box": 0})
roi_align = op("RoiAlign", inputs="X rois batch_indices", outputs="Y",
               attrs={"coordinate_transformation_mode": "half_pixel", "mode": "avg", "output_height": 1,
                      "output_width": 1, "sampling_ratio": 0, "spatial_scale": 1.0})
grid_sample = op("GridSample", inputs="X grid", outputs="Y",
                 attrs={"align_corners": 0, "mode": "linear", "padding_mode": "zeros"})
affine_grid = op("AffineGrid", inputs="theta size", outputs="grid", attrs={"align_corners": 0})
deform_conv = op("DeformConv", inputs="X W offset B? mask?", outputs="Y",
                 attrs={"dilations": (), "group": 1, "kernel_shape": (), "offset_group": 1, "pads": (),
                        "strides": ()})
max_unpool = op("MaxUnpool", inputs="X I output_shape?", outputs="output", fusion=Fusion.INJECTIVE,
                attrs={"kernel_shape": (), "pads": (), "strides": ()})
col2im = op("Col2Im", inputs="input image_shape block_shape", outputs="output",
            attrs={"dilations": (), "pads": (), "strides": ()})

GRID_MODES = ("nearest", "linear", "cubic")
GRID_PADDINGS = ("zeros", "border", "reflection")


# -- shared inference helpers ------------------------------------------------------------------------------------
def _dim(shape: tuple[Dim, ...] | None, i: int) -> Dim:
    return shape[i] if shape is not None and len(shape) > i else None


def _check_rank(n: Node, name: str, t: TensorInfo | None, ranks: Sequence[int], layout: str) -> None:
    if t is not None and t.rank is not None and t.rank not in ranks:
        raise n.error(f"{name} has shape {t.shape}; {n.op} expects {layout}")


def _const_ints(t: TensorInfo | None) -> tuple[int, ...] | None:
    return None if t is None or t.const is None else tuple(int(v) for v in np.asarray(t.const).reshape(-1))


def _choice(n: Node, attr: str, allowed: Sequence[str]) -> str:
    value = n.attrs[attr]
    if value not in allowed:
        raise n.unsupported(f"{attr} '{value}' is not supported; supported: {', '.join(allowed)}")
    return value


# -- NonMaxSuppression -------------------------------------------------------------------------------------------
@nms.infer
def _(n: Node, boxes: TensorInfo, scores: TensorInfo, *limits: TensorInfo | None) -> TensorType:
    _check_rank(n, "boxes", boxes, (3,), "(batch, boxes, 4)")
    _check_rank(n, "scores", scores, (3,), "(batch, classes, boxes)")
    if isinstance(_dim(boxes.shape, 2), int) and boxes.shape[2] != 4:  # type: ignore[index]
        raise n.error(f"boxes has shape {boxes.shape}; NonMaxSuppression expects 4 coordinates per box")
    if n.attrs["center_point_box"] not in (0, 1):
        raise n.error(f"center_point_box is {n.attrs['center_point_box']}; expected 0 (corners) or 1 (centers)")
    return TensorType((None, 3), "int64")  # one (batch, class, box) row per selected box: data-dependent


def _corners(boxes: np.ndarray, center: int) -> tuple[np.ndarray, ...]:
    """(y_min, x_min, y_max, x_max) columns; corner boxes may list either corner first."""
    if center:
        x, y, half_w, half_h = boxes[:, 0], boxes[:, 1], boxes[:, 2] / 2, boxes[:, 3] / 2
        return y - half_h, x - half_w, y + half_h, x + half_w
    return (np.minimum(boxes[:, 0], boxes[:, 2]), np.minimum(boxes[:, 1], boxes[:, 3]),
            np.maximum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 1], boxes[:, 3]))


def _suppresses(boxes: np.ndarray, center: int, threshold: float) -> np.ndarray:
    """(boxes, boxes) bool: box i suppresses box j (IoU above ``threshold``, positive areas)."""
    y0, x0, y1, x1 = _corners(boxes, center)
    ih = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
    iw = np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :])
    inter = ih * iw
    area = (y1 - y0) * (x1 - x0)
    union = area[:, None] + area[None, :] - inter
    ok = (ih > 0) & (iw > 0) & (inter > 0) & (area[:, None] > 0) & (area[None, :] > 0) & (union > 0)
    return ok & (inter / np.where(ok, union, 1) > threshold)


@nms.reference
def _(n: Node, boxes: np.ndarray, scores: np.ndarray, max_out: np.ndarray | None, iou: np.ndarray | None,
      score_min: np.ndarray | None) -> np.ndarray:
    limit = max(int(max_out.reshape(-1)[0]), 0) if max_out is not None and max_out.size else 0
    iou_thr = iou.reshape(-1)[0] if iou is not None and iou.size else 0.0
    selected: list[tuple[int, int, int]] = []
    for b, c in itertools.product(range(scores.shape[0]), range(scores.shape[1])):
        s = scores[b, c]
        # best score first, ties by lower box index (stable sort of the negated scores)
        order = np.argsort(-s, kind="stable")
        if score_min is not None and score_min.size:
            order = order[s[order] > score_min.reshape(-1)[0]]
        if not limit or not order.size:
            continue
        beats = _suppresses(boxes[b], n.attrs["center_point_box"], iou_thr)
        alive = np.ones(boxes.shape[1], dtype=bool)
        kept = 0
        for i in order:  # greedy: the loop runs once per candidate, the suppression test is vectorized
            if not alive[i]:
                continue
            selected.append((b, c, int(i)))
            alive &= ~beats[i]
            kept += 1
            if kept == limit:
                break
    return np.array(selected, dtype=np.int64).reshape(-1, 3)


# -- RoiAlign ------------------------------------------------------------------------------------------------------
@roi_align.infer
def _(n: Node, x: TensorInfo, rois: TensorInfo, idx: TensorInfo) -> TensorType:
    _check_rank(n, "X", x, (4,), "(N, C, H, W)")
    _check_rank(n, "rois", rois, (2,), "(num_rois, 4)")
    _check_rank(n, "batch_indices", idx, (1,), "(num_rois,)")
    _choice(n, "mode", ("avg", "max"))
    _choice(n, "coordinate_transformation_mode", ("half_pixel", "output_half_pixel"))
    r = _dim(rois.shape, 0) if _dim(rois.shape, 0) is not None else _dim(idx.shape, 0)
    return TensorType((r, _dim(x.shape, 1), n.attrs["output_height"], n.attrs["output_width"]), x.dtype)


def _roi_taps(start: float, bin_size: float, pooled: int, grid: int, size: int) -> tuple[np.ndarray, ...]:
    """Per output bin and sample along one axis: low/high indices and weights (zeros outside [-1, size])."""
    pos = start + np.arange(pooled)[:, None] * bin_size + (np.arange(grid)[None, :] + 0.5) * bin_size / grid
    outside = (pos < -1.0) | (pos > size)
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    edge = low >= size - 1
    low = np.where(edge, size - 1, low)
    high = np.where(edge, size - 1, low + 1)
    frac = np.where(edge, 0.0, pos - low)
    keep = ~outside
    return low, high, (1.0 - frac) * keep, frac * keep


@roi_align.reference
def _(n: Node, x: np.ndarray, rois: np.ndarray, idx: np.ndarray) -> np.ndarray:
    a = n.attrs
    ph, pw, height, width = a["output_height"], a["output_width"], x.shape[2], x.shape[3]
    half = 0.5 if a["coordinate_transformation_mode"] == "half_pixel" else 0.0
    y = np.zeros((rois.shape[0], x.shape[1], ph, pw), dtype=np.float64)
    for r in range(rois.shape[0]):  # per ROI: the sampling grid size depends on the ROI's extent
        x0, y0, x1, y1 = (float(v) * a["spatial_scale"] - half for v in rois[r])
        rh, rw = y1 - y0, x1 - x0
        if not half:
            rh, rw = max(rh, 1.0), max(rw, 1.0)
        gh = a["sampling_ratio"] if a["sampling_ratio"] > 0 else int(np.ceil(rh / ph))
        gw = a["sampling_ratio"] if a["sampling_ratio"] > 0 else int(np.ceil(rw / pw))
        ylo, yhi, wylo, wyhi = _roi_taps(y0, rh / ph, ph, gh, height)
        xlo, xhi, wxlo, wxhi = _roi_taps(x0, rw / pw, pw, gw, width)
        img = x[int(idx[r])].astype(np.float64)
        # corners[k]: (C, ph, gh, pw, gw) weighted values of the four bilinear neighbours
        corners = [img[:, yi[:, :, None, None], xi[None, None, :, :]] * (wy[:, :, None, None] * wx[None, None])
                   for yi, wy in ((ylo, wylo), (yhi, wyhi)) for xi, wx in ((xlo, wxlo), (xhi, wxhi))]
        if a["mode"] == "avg":
            y[r] = sum(corners).sum(axis=(2, 4)) / max(gh * gw, 1)
        else:
            y[r] = np.max(np.stack(corners), axis=(0, 3, 5)) if gh * gw else 0.0
    return y.astype(x.dtype)


# -- interpolation core (GridSample, DeformConv) -------------------------------------------------------------------
def _reflect(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates at the borders until they fall inside [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return np.full_like(v, lo)
    below, above = v < lo, v > hi
    d = np.where(below, lo - v, v - hi)
    flips = np.floor(d / span)
    r = d - flips * span
    even = flips % 2 == 0
    return np.where(below, np.where(even, lo + r, hi - r), np.where(above, np.where(even, hi - r, lo + r), v))


def _cubic(t: np.ndarray) -> list[np.ndarray]:
    """Keys cubic convolution weights (alpha = -0.75) of the taps at -1, 0, 1, 2 for fraction ``t``."""
    a = -0.75

    def near(d: np.ndarray) -> np.ndarray:
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: np.ndarray) -> np.ndarray:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _taps(v: np.ndarray, size: int, mode: str, padding: str, lo: float, hi: float) -> list[tuple[np.ndarray, ...]]:
    """(index, weight) taps of coordinate ``v`` along an axis of ``size``, indices resolved by ``padding``."""
    if mode == "nearest":
        taps = [(v.astype(np.int64), np.ones_like(v))]
    else:
        base = np.floor(v)
        t = v - base
        base = base.astype(np.int64)
        weights = [1 - t, t] if mode == "linear" else _cubic(t)
        first = 0 if mode == "linear" else -1
        taps = [(base + first + k, w) for k, w in enumerate(weights)]
    out = []
    for idx, w in taps:
        if padding == "zeros":
            w = w * ((idx >= 0) & (idx < size))
        elif padding == "reflection":
            idx = np.trunc(_reflect(idx.astype(np.float64), lo, hi)).astype(np.int64)
        out.append((np.clip(idx, 0, size - 1), w))
    return out


def _interpolate(x: np.ndarray, coords: Sequence[np.ndarray], mode: str, padding: str,
                 borders: Sequence[tuple[float, float]]) -> np.ndarray:
    """Sample ``x`` (N, C, *D) at pixel coordinates (one (N, *O) array per spatial axis); returns (N, *O, C)."""
    taps = [_taps(v, x.shape[2 + i], mode, padding, *borders[i]) for i, v in enumerate(coords)]
    batch = np.arange(x.shape[0]).reshape((-1,) + (1,) * (coords[0].ndim - 1))
    out = np.zeros(coords[0].shape + (x.shape[1],), dtype=np.float64)
    for combo in itertools.product(*taps):
        weight = np.prod([w for _, w in combo], axis=0)
        # advanced indices around the channel slice put the sample dims first: (N, *O, C)
        out += weight[..., None] * x[(batch, slice(None)) + tuple(i for i, _ in combo)]
    return out


# -- GridSample / AffineGrid ---------------------------------------------------------------------------------------
@grid_sample.infer
def _(n: Node, x: TensorInfo, grid: TensorInfo) -> TensorType:
    _choice(n, "mode", GRID_MODES)
    _choice(n, "padding_mode", GRID_PADDINGS)
    _check_rank(n, "X", x, (4, 5), "(N, C, H, W) or (N, C, D, H, W)")
    if x.rank is not None and grid.rank is not None and grid.rank != x.rank:
        raise n.error(f"grid has shape {grid.shape} for X {x.shape}; expected (N, *out_spatial, {x.rank - 2})")
    last = _dim(grid.shape, (grid.rank or 1) - 1)
    if x.rank is not None and isinstance(last, int) and last != x.rank - 2:
        raise n.error(f"grid has shape {grid.shape}; its last dim must be {x.rank - 2} (one coordinate per axis)")
    if n.attrs["mode"] == "cubic" and x.rank == 5:
        raise n.unsupported("cubic mode on 3-D (volumetric) input is not supported; ONNX defines it for 2-D")
    spatial = grid.shape[1:-1] if grid.shape is not None else None
    return TensorType(None if spatial is None else (_dim(x.shape, 0), _dim(x.shape, 1), *spatial), x.dtype)


@grid_sample.reference
def _(n: Node, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    a = n.attrs
    align, mode, padding = a["align_corners"], a["mode"], a["padding_mode"]
    dims = x.shape[2:]
    coords, borders = [], []
    for i, size in enumerate(dims):
        g = grid[..., len(dims) - 1 - i]  # the grid lists x (innermost axis) first
        v = (g + 1) / 2 * (size - 1) if align else ((g + 1) * size - 1) / 2
        lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
        v = v.astype(np.float64)
        if mode == "nearest":
            v = np.rint(v)
        outside = (v < lo) | (v > hi)
        if padding == "border":
            v = np.where(outside, np.clip(v, 0, size - 1), v)
        elif padding == "reflection":
            v = np.where(outside, _reflect(v, lo, hi), v)
        coords.append(v)
        borders.append((lo, hi))
    y = _interpolate(x, coords, mode, padding, borders)
    return np.moveaxis(y, -1, 1).astype(x.dtype)


@affine_grid.infer
def _(n: Node, theta: TensorInfo, size: TensorInfo) -> TensorType:
    _check_rank(n, "theta", theta, (3,), "(N, 2, 3) for 2-D or (N, 3, 4) for 3-D")
    dims = _const_ints(size)
    nd = _dim(theta.shape, 1)
    if dims is not None:
        if len(dims) not in (4, 5):
            raise n.error(f"size is {dims}; AffineGrid expects (N, C, H, W) or (N, C, D, H, W)")
        if isinstance(nd, int) and nd != len(dims) - 2:
            raise n.error(f"theta has shape {theta.shape} but size {dims} is {len(dims) - 2}-D")
        return TensorType((dims[0], *dims[2:], len(dims) - 2), theta.dtype)
    if not isinstance(nd, int):
        return TensorType(None, theta.dtype)
    return TensorType((_dim(theta.shape, 0),) + (None,) * nd + (nd,), theta.dtype)


def _base_coords(size: int, align: int) -> np.ndarray:
    """Normalized [-1, 1] pixel centres (or corners with align_corners) along one axis."""
    if align:
        return np.linspace(-1.0, 1.0, size) if size > 1 else np.array([-1.0])
    return (2 * np.arange(size) + 1) / size - 1


@affine_grid.reference
def _(n: Node, theta: np.ndarray, size: np.ndarray) -> np.ndarray:
    spatial = [int(d) for d in size[2:]]
    axes = np.meshgrid(*[_base_coords(d, n.attrs["align_corners"]) for d in spatial], indexing="ij")
    # homogeneous (x, y[, z], 1) per output point: the innermost axis is x
    points = np.stack(list(axes[::-1]) + [np.ones(spatial)], axis=-1).reshape(-1, len(spatial) + 1)
    grid = np.einsum("nij,pj->npi", theta.astype(np.float64), points)
    return grid.reshape((theta.shape[0], *spatial, len(spatial))).astype(theta.dtype)


# -- DeformConv ----------------------------------------------------------------------------------------------------
@deform_conv.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, offset: TensorInfo, b: TensorInfo | None,
      mask: TensorInfo | None) -> TensorType:
    for name, t in (("X", x), ("W", w), ("offset", offset), ("mask", mask)):
        _check_rank(n, name, t, (4,), "4-D tensors (2-D deformable convolution)")
    kernel = n.attrs["kernel_shape"] or (w.shape[2:] if w.shape is not None else None)
    group, og = n.attrs["group"], n.attrs["offset_group"]
    c, per_group = _dim(x.shape, 1), _dim(w.shape, 1)
    if isinstance(c, int) and isinstance(per_group, int) and c != per_group * group:
        raise n.error(f"X has {c} channels but W {w.shape} with group {group} expects {per_group * group}")
    if isinstance(c, int) and c % og:
        raise n.error(f"X has {c} channels; expected a multiple of offset_group {og}")
    out: tuple[Dim, ...] = (None, None)
    if kernel is not None and all(isinstance(k, int) for k in kernel):
        if isinstance(_dim(offset.shape, 1), int) and offset.shape[1] != og * prod(kernel) * 2:  # type: ignore
            raise n.error(f"offset has shape {offset.shape}; expected {og * prod(kernel) * 2} channels "
                          f"(offset_group * kH * kW * 2)")
        spatial = (_dim(x.shape, 2), _dim(x.shape, 3))
        out = out_dims(n, window(n, kernel, spatial), spatial)
    return TensorType((_dim(x.shape, 0), _dim(w.shape, 0), *out), x.dtype)


@deform_conv.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, offset: np.ndarray, b: np.ndarray | None,
      mask: np.ndarray | None) -> np.ndarray:
    kernel = tuple(n.attrs["kernel_shape"]) or w.shape[2:]
    win = window(n, kernel, x.shape[2:])
    pads, group, og = resolved_pads(win), n.attrs["group"], n.attrs["offset_group"]
    batch, chans, (oh, ow) = x.shape[0], x.shape[1], offset.shape[2:]
    kh, kw = kernel
    off = offset.reshape(batch, og, kh, kw, 2, oh, ow).astype(np.float64)
    # sampling positions (N, og, kh, kw, oh, ow): window origin + dilated kernel tap + learned offset
    ys = (np.arange(oh) * win.strides[0] - pads[0])[None, None, None, None, :, None] + \
        (np.arange(kh) * win.dilations[0])[None, None, :, None, None, None] + off[:, :, :, :, 0]
    xs = (np.arange(ow) * win.strides[1] - pads[1])[None, None, None, None, None, :] + \
        (np.arange(kw) * win.dilations[1])[None, None, None, :, None, None] + off[:, :, :, :, 1]
    grouped = x.reshape(batch * og, chans // og, *x.shape[2:])
    flat = [v.reshape(batch * og, kh, kw, oh, ow) for v in (ys, xs)]
    cols = _interpolate(grouped, flat, "linear", "zeros", [(0.0, 0.0)] * 2)  # (N*og, kh, kw, oh, ow, C/og)
    cols = cols.reshape(batch, og, kh, kw, oh, ow, chans // og)
    if mask is not None:
        cols = cols * mask.reshape(batch, og, kh, kw, oh, ow)[..., None]
    cols = np.moveaxis(cols, -1, 2).reshape(batch, chans, kh, kw, oh, ow)  # channel = og_index * C/og + c
    cg, mg = chans // group, w.shape[0] // group
    y = np.concatenate([np.einsum("nckhij,mckh->nmij", cols[:, g * cg:(g + 1) * cg], w[g * mg:(g + 1) * mg])
                        for g in range(group)], axis=1)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y.astype(x.dtype)


# -- MaxUnpool / Col2Im --------------------------------------------------------------------------------------------
@max_unpool.infer
def _(n: Node, x: TensorInfo, idx: TensorInfo, shape: TensorInfo | None) -> TensorType:
    kernel = n.attrs["kernel_shape"]
    if not kernel:
        raise n.error("kernel_shape is missing; MaxUnpool needs the pooling window")
    _check_rank(n, "X", x, (len(kernel) + 2,), f"(N, C, {len(kernel)} spatial dims) for kernel_shape {kernel}")
    if x.shape is not None and idx.shape is not None and len(idx.shape) != len(x.shape):
        raise n.error(f"I has shape {idx.shape}; expected the shape of X {x.shape}")
    if shape is not None:
        dims = _const_ints(shape)
        rank = len(kernel) + 2
        return TensorType(dims if dims is not None else (None,) * rank, x.dtype)
    return TensorType(_unpooled_shape(n, x.shape, kernel), x.dtype)


def _unpooled_shape(n: Node, shape: tuple[Dim, ...] | None, kernel: Sequence[int]) -> tuple[Dim, ...]:
    """The default output shape: (in - 1) * stride - pad_begin - pad_end + kernel per spatial axis."""
    win = window(n, kernel, (None,) * len(kernel))
    pads = resolved_pads(win)
    spatial = [_dim(shape, 2 + i) for i in range(len(kernel))]
    return (_dim(shape, 0), _dim(shape, 1), *[
        (d - 1) * win.strides[i] - pads[i] - pads[len(kernel) + i] + kernel[i] if isinstance(d, int) else None
        for i, d in enumerate(spatial)])


@max_unpool.reference
def _(n: Node, x: np.ndarray, idx: np.ndarray, shape: np.ndarray | None) -> np.ndarray:
    full = tuple(int(d) for d in _unpooled_shape(n, x.shape, n.attrs["kernel_shape"]))  # type: ignore[arg-type]
    # NOTE: indices address the flattened default-shaped output (as MaxPool produced them); an explicit, larger
    # output_shape receives that block in its leading corner, as the ONNX reference does.
    flat = np.zeros(prod(full), dtype=x.dtype)
    flat[idx.reshape(-1)] = x.reshape(-1)
    if shape is None:
        return flat.reshape(full)
    out = np.zeros(tuple(int(d) for d in shape), dtype=x.dtype)
    out[tuple(slice(0, d) for d in full)] = flat.reshape(full)
    return out


@col2im.infer
def _(n: Node, x: TensorInfo, image: TensorInfo, block: TensorInfo) -> TensorType:
    _check_rank(n, "input", x, (3,), "(N, C * prod(block_shape), L)")
    dims, blk = _const_ints(image), _const_ints(block)
    nd = len(dims) if dims is not None else len(blk) if blk is not None else _dim(image.shape, 0)
    if not isinstance(nd, int):
        return TensorType(None, x.dtype)
    chans = _dim(x.shape, 1)
    c = None
    if blk is not None and isinstance(chans, int):
        if chans % prod(blk):
            raise n.error(f"input has {chans} rows; expected a multiple of prod(block_shape {blk}) = {prod(blk)}")
        c = chans // prod(blk)
    length = _dim(x.shape, 2)
    if dims is not None and blk is not None and isinstance(length, int):
        win = window(n, blk, dims)
        blocks = prod([out_dim(win, i, d) for i, d in enumerate(dims)])  # type: ignore[misc]
        if blocks != length:
            raise n.error(f"input has {length} blocks; image_shape {dims} with block_shape {blk} and these "
                          f"pads/strides/dilations gives {blocks}")
    return TensorType((_dim(x.shape, 0), c, *(dims if dims is not None else (None,) * nd)), x.dtype)


@col2im.reference
def _(n: Node, x: np.ndarray, image: np.ndarray, block: np.ndarray) -> np.ndarray:
    dims, blk = tuple(int(d) for d in image), tuple(int(k) for k in block)
    win = window(n, blk, dims)
    pads = resolved_pads(win)
    nblocks = tuple(int(out_dim(win, i, d)) for i, d in enumerate(dims))  # type: ignore[arg-type]
    cols = x.reshape(x.shape[0], -1, *blk, *nblocks)
    padded = np.zeros(cols.shape[:2] + tuple(d + pads[i] + pads[len(dims) + i] for i, d in enumerate(dims)),
                      dtype=x.dtype)
    for k in itertools.product(*[range(kk) for kk in blk]):  # one strided scatter-add per kernel tap
        region = tuple(slice(k[i] * win.dilations[i], k[i] * win.dilations[i] + (nblocks[i] - 1) * win.strides[i] + 1,
                             win.strides[i]) for i in range(len(dims)))
        padded[(slice(None), slice(None)) + region] += cols[(slice(None), slice(None)) + k]
    crop = tuple(slice(pads[i], pads[i] + d) for i, d in enumerate(dims))
    return padded[(slice(None), slice(None)) + crop]
