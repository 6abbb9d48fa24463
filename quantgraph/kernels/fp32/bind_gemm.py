"""Kernel records for Conv/FusedConv, MatMul/FusedMatMul and Gemm in float32: the packed AVX-512 GEMM
(``gemm_f32_packed``, one kernel per vector ISA: ``*_f32_avx512`` on the AVX-512 rungs, ``*_f32_avx2`` on the AVX2
rungs; convolutions gather im2col rows inside its tasks) and the numpy/OpenBLAS twins (the portable rung).

Weights are packed once in ``prepack``; ``bind`` returns prebound steps on planned buffers. The epilogue (bias,
residual, activation) is applied in the GEMM's registers where it can be, else by ``eltwise_f32.epilogue``.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.spatial import window
from quantgraph.kernels.checks import const_of, float32_only, layout_of, rank_of, step
from quantgraph.kernels.fp32 import conv_f32, gemm_f32_packed
from quantgraph.kernels.fp32.eltwise_f32 import ACT_CODES, epilogue
from quantgraph.kernels import target
from quantgraph.kernels.registry import Kernel, Shapes, Step, register


def _conv_accepts(n: Node, g: Graph) -> str | None:
    if rank_of(g, n.inputs[0]) != 4:
        return "only 2-D convolutions (4-D X) have a kernel"
    if const_of(g, n.inputs[1]) is None:
        return "W is not a constant"
    b = n.inputs[2] if len(n.inputs) > 2 else ""
    if b and rank_of(g, b) != 1:
        return "B is not 1-D"
    return float32_only(n, g)


def _geom(n: Node, w_shape: tuple[int, ...], x_shape: tuple[int, ...], layout: str) -> conv_f32.ConvGeom | None:
    spatial = x_shape[2:] if layout == "NCHW" else x_shape[1:3]
    win = window(n, w_shape[2:], spatial)
    if any(p is None for p in win.pads):
        return None
    c = x_shape[1] if layout == "NCHW" else x_shape[3]
    pt, pl, pb, pr = win.pads  # type: ignore[misc]
    return conv_f32.ConvGeom(c, w_shape[0], n.attrs["group"], w_shape[2], w_shape[3], *win.strides,
                             *win.dilations, pt, pl, pb, pr)


def _conv_prepack(n: Node, g: Graph) -> dict:
    w = const_of(g, n.inputs[1])
    group = n.attrs["group"]
    c = w.shape[1] * group
    geo = conv_f32.ConvGeom(c, w.shape[0], group, w.shape[2], w.shape[3], 1, 1, 1, 1, 0, 0, 0, 0)
    return {"w": conv_f32.pack_conv(w, geo, layout_of(n)), "w_shape": tuple(w.shape)}


def _conv_scratch(n: Node, packed: dict, ins: Shapes, outs: Shapes, fused: bool = False) -> int | None:
    lay = layout_of(n)
    geo = _geom(n, packed["w_shape"], ins[0], lay)
    if geo is None:
        return None
    oh, ow = (outs[0][2], outs[0][3]) if lay == "NCHW" else (outs[0][1], outs[0][2])
    isa = packed["gemm"][0].isa if fused else ""
    return 4 * conv_f32.scratch_size(geo, lay, oh, ow, ins[0][0] if fused else 0, isa)  # float32 elements -> bytes


def _conv_packed_scratch(n: Node, packed: dict, ins: Shapes, outs: Shapes) -> int | None:
    """Group-1 convs that gather their im2col rows inside the GEMM tasks need no planned scratch."""
    return _conv_scratch(n, packed, ins, outs, fused=True)


def _conv_bind(n: Node, packed: dict, ins: list, outs: list, scratch: np.ndarray | None) -> list[Step]:
    """Conv/FusedConv steps; with ``packed["gemm"]`` (the AVX-512 prepack) the GEMM runs on packed weights."""
    lay = layout_of(n)
    x = ins[0]
    bias = ins[2] if len(ins) > 2 else None
    z = ins[3] if len(ins) > 3 else None
    geo = _geom(n, packed["w_shape"], x.shape, lay)
    act = ACT_CODES[n.attrs.get("activation", "none")]
    extra = {"gemm_packed": packed["gemm"], "node": (n.name, n.op)} if "gemm" in packed else {}
    sc = None if scratch is None else scratch.view(np.float32)
    return conv_f32.conv_steps(geo, lay, x, packed["w"], None if bias is None else bias.reshape(-1), z, outs[0], sc,
                               act, float(n.attrs.get("alpha", 0.0)), float(n.attrs.get("beta", 0.0)), **extra)


# NOTE: the packed GEMM pays off once a GEMM has some work per row; tiny weights stay on numpy/OpenBLAS.
PACKED_MIN_KN = 4096   # K * N of the (per-group) weight matrix


def _packed_ok(k: int, n: int) -> str | None:
    if k * n < PACKED_MIN_KN:
        return f"weights K*N = {k * n} < {PACKED_MIN_KN}: numpy is as fast"
    return None


def _conv_packed_accepts(n: Node, g: Graph) -> str | None:
    why = _conv_accepts(n, g)
    if why:
        return why
    if layout_of(n) != "NHWC":
        return "the packed conv is NHWC only"
    w = const_of(g, n.inputs[1])
    group = n.attrs["group"]
    if group > 1 and group == w.shape[0] and w.shape[1] == 1:
        return "depthwise convolutions have their own kernel"
    return _packed_ok(w.shape[1] * w.shape[2] * w.shape[3], w.shape[0] // group)


def _conv_packed_prepack(isa: str, n: Node, g: Graph) -> dict:
    packed = _conv_prepack(n, g)
    packed["gemm"] = [gemm_f32_packed.pack_b(wg, isa) for wg in packed["w"]]
    packed["w"] = packed["w"][:0]  # the numpy copy is not needed any more; keep dtype/rank for _conv_bind
    return packed


# -- matmul / gemm ----------------------------------------------------------------------------------------------
def _mm_accepts(n: Node, g: Graph) -> str | None:
    ra, rb = rank_of(g, n.inputs[0]), rank_of(g, n.inputs[1])
    if ra is None or rb is None or ra < 2 or rb < 2:
        return "MatMul with 1-D or unknown-rank operands runs the reference"
    return float32_only(n, g)


def _mm_prepack(n: Node, g: Graph) -> dict:
    b = const_of(g, n.inputs[1])
    return {"b": None if b is None else np.ascontiguousarray(b, np.float32)}


def _matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> list[Step]:
    if b.ndim == 2 and a.flags.c_contiguous:  # one GEMM over all leading dims
        return [step(np.matmul, a.reshape(-1, a.shape[-1]), b, out.reshape(-1, b.shape[1]))]
    return [step(_matmul_out, a, b, out)]


def _matmul_out(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=out)


def _epilogue_steps(y: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None, act: int, alpha: float,
                    beta: float) -> list[Step]:
    """Bias (broadcast over rows when it is a row vector), residual and activation over y viewed as 2-D."""
    steps: list[Step] = []
    ncol = y.shape[-1]
    if bias is not None and not (bias.size == ncol and (bias.ndim == 0 or bias.shape[-1] == ncol)):
        steps.append(step(np.add, y, bias, y))
        bias = None
    if z is not None and z.shape != y.shape:
        steps.append(step(np.add, y, z, y))
        z = None
    if bias is not None or z is not None or act:
        steps.append(step(epilogue, y.reshape(-1, ncol), None if bias is None else bias.reshape(ncol), 2,
                          None if z is None else z.reshape(-1, ncol), act, alpha, beta))
    return steps


def _mm_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    b = packed["b"] if packed["b"] is not None else ins[1]
    steps = _matmul_into(ins[0], b, outs[0])
    if n.op == "FusedMatMul":
        bias = ins[2] if len(ins) > 2 else None
        z = ins[3] if len(ins) > 3 else None
        steps += _epilogue_steps(outs[0], bias, z, ACT_CODES[n.attrs["activation"]], float(n.attrs["alpha"]),
                                 float(n.attrs["beta"]))
    return steps


def _mm_packed_accepts(n: Node, g: Graph) -> str | None:
    why = _mm_accepts(n, g)
    if why:
        return why
    b = const_of(g, n.inputs[1])
    if b is None or b.ndim != 2:
        return "B is not a 2-D constant (attention-style MatMul stays on numpy)"
    return _packed_ok(*b.shape)


def _mm_packed_prepack(isa: str, n: Node, g: Graph) -> dict:
    return {"gemm": gemm_f32_packed.pack_b(const_of(g, n.inputs[1]), isa)}


def _rows_view(a: np.ndarray, cols: int) -> np.ndarray | None:
    """``a`` as (rows, cols) without copying (a planned buffer must not be copied at bind time), else None."""
    try:
        v = a.reshape(-1, cols)
    except ValueError:
        return None
    return v if v.size == 0 or np.shares_memory(v, a) else None


def _gemm_packed_steps(n: Node, packed: Any, a: np.ndarray, y: np.ndarray, bias: np.ndarray | None,
                       z: np.ndarray | None, act: int, alpha: float, beta: float) -> list[Step] | None:
    """Steps for y = act(a @ B + bias + z) on the packed GEMM, fusing what fits; None when A/y cannot be viewed 2-D."""
    ncol = packed.n
    a2, y2 = _rows_view(a, packed.k), _rows_view(y, ncol)
    if a2 is None or y2 is None:
        return None
    col_bias = bias is not None and bias.size == ncol and (bias.ndim == 0 or bias.shape[-1] == ncol)
    z2 = _rows_view(z, ncol) if z is not None and z.shape == y.shape else None
    if (bias is None or col_bias) and (z is None or z2 is not None):
        fb = None if bias is None else np.ascontiguousarray(bias.reshape(ncol), np.float32)
        return [gemm_f32_packed.bind(a2, packed, y2, fb, z2, act, alpha, beta, node=n.name, op=n.op)]
    return [gemm_f32_packed.bind(a2, packed, y2, node=n.name, op=n.op)] + \
        _epilogue_steps(y, bias, z, act, alpha, beta)


def _mm_packed_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    bias = z = None
    act, alpha, beta = 0, 0.0, 0.0
    if n.op == "FusedMatMul":
        bias = ins[2] if len(ins) > 2 else None
        z = ins[3] if len(ins) > 3 else None
        act, alpha, beta = ACT_CODES[n.attrs["activation"]], float(n.attrs["alpha"]), float(n.attrs["beta"])
    steps = _gemm_packed_steps(n, packed["gemm"], ins[0], outs[0], bias, z, act, alpha, beta)
    if steps is None:  # A is not viewable as rows (e.g. a broadcast view): unpacked numpy path
        steps = _mm_bind(n, {"b": gemm_f32_packed.unpack_b(packed["gemm"])}, ins, outs, scratch)
    return steps


def _gemm_packed_accepts(n: Node, g: Graph) -> str | None:
    why = _gemm_accepts(n, g)
    if why:
        return why
    if n.attrs["transA"]:
        return "transA Gemm stays on numpy"
    b = const_of(g, n.inputs[1])
    if b is None:
        return "B is not a constant"
    return _packed_ok(*(b.shape[::-1] if n.attrs["transB"] else b.shape))


def _gemm_packed_prepack(isa: str, n: Node, g: Graph) -> dict:
    packed = _gemm_prepack(n, g)
    packed["gemm"] = gemm_f32_packed.pack_b(packed.pop("b"), isa)
    return packed


def _gemm_packed_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    y = outs[0]
    c = packed["c"]
    if c is None and len(ins) > 2 and ins[2] is not None:  # runtime C
        return [gemm_f32_packed.bind(ins[0], packed["gemm"], y, node=n.name, op=n.op),
                step(_add_scaled, y, ins[2], np.float32(n.attrs["beta"]))]
    if c is not None and c.ndim == 0:
        c = c.reshape(1)
    steps = _gemm_packed_steps(n, packed["gemm"], ins[0], y, c, None, 0, 0.0, 0.0)
    assert steps is not None, "Gemm operands are 2-D planned buffers"
    return steps


def _gemm_accepts(n: Node, g: Graph) -> str | None:
    if rank_of(g, n.inputs[0]) != 2 or rank_of(g, n.inputs[1]) != 2:
        return "Gemm needs 2-D A and B"
    return float32_only(n, g)


def _gemm_prepack(n: Node, g: Graph) -> dict:
    b = const_of(g, n.inputs[1])
    alpha, beta = n.attrs["alpha"], n.attrs["beta"]
    if b is not None:
        b = np.ascontiguousarray((b.T if n.attrs["transB"] else b) * np.float32(alpha), np.float32)
    c = const_of(g, n.inputs[2]) if len(n.inputs) > 2 else None
    if c is not None:
        c = np.ascontiguousarray(c * np.float32(beta), np.float32)
    return {"b": b, "c": c}


def _gemm_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    a = ins[0].T if n.attrs["transA"] else ins[0]
    alpha, beta = n.attrs["alpha"], n.attrs["beta"]
    y = outs[0]
    steps: list[Step] = []
    if packed["b"] is not None:
        steps.append(step(_matmul_out, a, packed["b"], y))
    else:
        steps.append(step(_matmul_out, a, ins[1].T if n.attrs["transB"] else ins[1], y))
        if alpha != 1.0:
            steps.append(step(np.multiply, y, np.float32(alpha), y))
    c = packed["c"]
    if c is None and len(ins) > 2 and ins[2] is not None:
        return steps + [step(_add_scaled, y, ins[2], np.float32(beta))]
    if c is not None:
        steps += _epilogue_steps(y, c if c.ndim else c.reshape(1), None, 0, 0.0, 0.0)
    return steps


def _add_scaled(y: np.ndarray, c: np.ndarray, beta: np.float32) -> None:
    y += c * beta


# the packed GEMM, one record per vector ISA (conv_f32_avx512, conv_f32_avx2, ...), each on the rungs of its width
for _isa in gemm_f32_packed.FMA_ISAS.values():
    _on = {"rungs": tuple(r.name for r in target.LADDER if r.lanes == _isa.lanes), "requires": _isa.requires,
           "priority": 20}
    register(Kernel(f"conv_f32_{_isa.name}", ("Conv", "FusedConv"), _conv_packed_accepts, _conv_bind,
                    prepack=partial(_conv_packed_prepack, _isa.name), scratch=_conv_packed_scratch, **_on))
    register(Kernel(f"matmul_f32_{_isa.name}", ("MatMul", "FusedMatMul"), _mm_packed_accepts, _mm_packed_bind,
                    prepack=partial(_mm_packed_prepack, _isa.name), **_on))
    register(Kernel(f"gemm_f32_{_isa.name}", ("Gemm",), _gemm_packed_accepts, _gemm_packed_bind,
                    prepack=partial(_gemm_packed_prepack, _isa.name), **_on))
register(Kernel("conv_f32_im2col", ("Conv", "FusedConv"), _conv_accepts, _conv_bind, prepack=_conv_prepack,
                scratch=_conv_scratch, priority=10))
register(Kernel("matmul_f32_blas", ("MatMul", "FusedMatMul"), _mm_accepts, _mm_bind, prepack=_mm_prepack,
                priority=10))
register(Kernel("gemm_f32_blas", ("Gemm",), _gemm_accepts, _gemm_bind, prepack=_gemm_prepack, priority=10))
