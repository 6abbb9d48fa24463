"""lower: pick a kernel per node and pre-pack its constant weights once.

The kernel table ``KERNELS`` maps an op to candidates, highest priority first; each candidate's ``accepts`` says
why it refuses (or None). A node no kernel accepts runs its registry reference (``get_op(op).run_reference``), so
any graph runs. Binding to concrete buffers happens per input-shape signature in ``plan.py``; packing does not
depend on shapes, so it happens here, once per compiled model.

A kernel's ``bind(node, packed, ins, outs, scratch)`` returns prebound ``(fn, args)`` steps; ``ins``/``outs`` are
arrays (planned buffers or constants, None for an omitted optional input), ``scratch`` a float32 1-D buffer of
``scratch(...)`` elements. ``view`` kernels produce no step: the output is the input buffer reshaped.
``inplace`` kernels may be given the same buffer for input 0 and the output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.spatial import window
from quantgraph.ir.shapes import normalize_axis
from quantgraph.kernels import bind_int8
from quantgraph.kernels.fp32 import attention_f32, conv_f32, gemm_f32_avx512, norm_f32, pool_f32
from quantgraph.kernels.fp32.eltwise_f32 import ACT_CODES, ERF, epilogue, unary_2d

Step = tuple[Callable[..., Any], tuple]
Shapes = Sequence[tuple[int, ...] | None]


@dataclass(frozen=True)
class KernelDef:
    """One fp32 kernel: which nodes it serves and how it binds to buffers."""

    name: str
    accepts: Callable[[Node, Graph], str | None]
    bind: Callable[..., list[Step]]
    prepack: Callable[[Node, Graph], Any] | None = None
    scratch: Callable[[Node, Any, Shapes, Shapes], int | None] | None = None   # None = refuse these shapes
    view: bool = False
    inplace: bool = False
    priority: int = 0


@dataclass
class LoweredNode:
    node: Node
    kernel: KernelDef | None      # None: registry reference
    packed: Any = None
    reason: str = ""              # why the best candidate refused (for the report)


# -- helpers ----------------------------------------------------------------------------------------------------
def _dt(g: Graph, t: str) -> str | None:
    return g.tensors[t].dtype if t else None


def _f32(n: Node, g: Graph, inputs: int | None = None) -> str | None:
    ts = [t for t in (n.inputs if inputs is None else n.inputs[:inputs]) if t] + [t for t in n.outputs[:1] if t]
    bad = [t for t in ts if _dt(g, t) != "float32"]
    return f"tensor '{bad[0]}' is {_dt(g, bad[0])}, kernel is float32 only" if bad else None


def _rank(g: Graph, t: str) -> int | None:
    s = g.tensors[t].shape
    return None if s is None else len(s)


def _const(g: Graph, t: str) -> np.ndarray | None:
    return g.tensors[t].const if t else None


def _single_output(n: Node, g: Graph | None = None) -> str | None:
    extra = [t for t in n.outputs[1:] if t]
    if g is not None:  # extra outputs nobody reads are fine: the kernel just does not write them
        extra = [t for t in extra if g.consumers(t) or t in g.outputs]
    return None if n.outputs and n.outputs[0] and not extra else f"optional extra output '{extra[0]}' is used"


def _all(*checks: Callable[[Node, Graph], str | None]) -> Callable[[Node, Graph], str | None]:
    def run(n: Node, g: Graph) -> str | None:
        for c in checks:
            r = c(n, g)
            if r:
                return r
        return None
    return run


def _call(fn: Callable[..., Any], *args: Any) -> Step:
    return (fn, args)


# -- convolution ------------------------------------------------------------------------------------------------
def _conv_accepts(n: Node, g: Graph) -> str | None:
    if _rank(g, n.inputs[0]) != 4:
        return "only 2-D convolutions (4-D X) have a kernel"
    if _const(g, n.inputs[1]) is None:
        return "W is not a constant"
    b = n.inputs[2] if len(n.inputs) > 2 else ""
    if b and _rank(g, b) != 1:
        return "B is not 1-D"
    return _f32(n, g)


def _geom(n: Node, w_shape: tuple[int, ...], x_shape: tuple[int, ...], layout: str) -> conv_f32.ConvGeom | None:
    spatial = x_shape[2:] if layout == "NCHW" else x_shape[1:3]
    win = window(n, w_shape[2:], spatial)
    if any(p is None for p in win.pads):
        return None
    c = x_shape[1] if layout == "NCHW" else x_shape[3]
    pt, pl, pb, pr = win.pads  # type: ignore[misc]
    return conv_f32.ConvGeom(c, w_shape[0], n.attrs["group"], w_shape[2], w_shape[3], *win.strides,
                             *win.dilations, pt, pl, pb, pr)


def _layout(n: Node) -> str:
    return n.attrs.get("layout", "NCHW")


def _conv_prepack(n: Node, g: Graph) -> dict:
    w = _const(g, n.inputs[1])
    group = n.attrs["group"]
    c = w.shape[1] * group
    geo = conv_f32.ConvGeom(c, w.shape[0], group, w.shape[2], w.shape[3], 1, 1, 1, 1, 0, 0, 0, 0)
    return {"w": conv_f32.pack_conv(w, geo, _layout(n)), "w_shape": tuple(w.shape)}


def _conv_scratch(n: Node, packed: dict, ins: Shapes, outs: Shapes, fused: bool = False) -> int | None:
    lay = _layout(n)
    geo = _geom(n, packed["w_shape"], ins[0], lay)
    if geo is None:
        return None
    oh, ow = (outs[0][2], outs[0][3]) if lay == "NCHW" else (outs[0][1], outs[0][2])
    return conv_f32.scratch_size(geo, lay, oh, ow, ins[0][0] if fused else 0)


def _conv_avx512_scratch(n: Node, packed: dict, ins: Shapes, outs: Shapes) -> int | None:
    """Group-1 convs that gather their im2col rows inside the GEMM tasks need no planned scratch."""
    return _conv_scratch(n, packed, ins, outs, fused=True)


def _conv_bind(n: Node, packed: dict, ins: list, outs: list, scratch: np.ndarray | None) -> list[Step]:
    """Conv/FusedConv steps; with ``packed["gemm"]`` (the AVX-512 prepack) the GEMM runs on packed weights."""
    lay = _layout(n)
    x = ins[0]
    bias = ins[2] if len(ins) > 2 else None
    z = ins[3] if len(ins) > 3 else None
    geo = _geom(n, packed["w_shape"], x.shape, lay)
    act = ACT_CODES[n.attrs.get("activation", "none")]
    extra = {"gemm_packed": packed["gemm"], "node": (n.name, n.op)} if "gemm" in packed else {}
    return conv_f32.conv_steps(geo, lay, x, packed["w"], None if bias is None else bias.reshape(-1), z, outs[0],
                               scratch, act, float(n.attrs.get("alpha", 0.0)), float(n.attrs.get("beta", 0.0)),
                               **extra)


# NOTE: the packed AVX-512 GEMM pays off once a GEMM has some work per row; tiny weights stay on numpy/OpenBLAS.
AVX512_MIN_KN = 4096   # K * N of the (per-group) weight matrix


def _avx512_ok(k: int, n: int) -> str | None:
    if not gemm_f32_avx512.available():
        return "host lacks avx512f or a non-AVX-512 ISA is forced"
    if k * n < AVX512_MIN_KN:
        return f"weights K*N = {k * n} < {AVX512_MIN_KN}: numpy is as fast"
    return None


def _conv_avx512_accepts(n: Node, g: Graph) -> str | None:
    why = _conv_accepts(n, g)
    if why:
        return why
    if _layout(n) != "NHWC":
        return "the packed AVX-512 conv is NHWC only"
    w = _const(g, n.inputs[1])
    group = n.attrs["group"]
    if group > 1 and group == w.shape[0] and w.shape[1] == 1:
        return "depthwise convolutions have their own kernel"
    return _avx512_ok(w.shape[1] * w.shape[2] * w.shape[3], w.shape[0] // group)


def _conv_avx512_prepack(n: Node, g: Graph) -> dict:
    packed = _conv_prepack(n, g)
    packed["gemm"] = [gemm_f32_avx512.pack_b(wg) for wg in packed["w"]]
    packed["w"] = packed["w"][:0]  # the numpy copy is not needed any more; keep dtype/rank for _conv_bind
    return packed


# -- matmul / gemm ----------------------------------------------------------------------------------------------
def _mm_accepts(n: Node, g: Graph) -> str | None:
    ra, rb = _rank(g, n.inputs[0]), _rank(g, n.inputs[1])
    if ra is None or rb is None or ra < 2 or rb < 2:
        return "MatMul with 1-D or unknown-rank operands runs the reference"
    return _f32(n, g)


def _mm_prepack(n: Node, g: Graph) -> dict:
    b = _const(g, n.inputs[1])
    return {"b": None if b is None else np.ascontiguousarray(b, np.float32)}


def _matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> list[Step]:
    if b.ndim == 2 and a.flags.c_contiguous:  # one GEMM over all leading dims
        return [_call(np.matmul, a.reshape(-1, a.shape[-1]), b, out.reshape(-1, b.shape[1]))]
    return [_call(_matmul_out, a, b, out)]


def _matmul_out(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b, out=out)


def _epilogue_steps(y: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None, act: int, alpha: float,
                    beta: float) -> list[Step]:
    """Bias (broadcast over rows when it is a row vector), residual and activation over y viewed as 2-D."""
    steps: list[Step] = []
    ncol = y.shape[-1]
    if bias is not None and not (bias.size == ncol and (bias.ndim == 0 or bias.shape[-1] == ncol)):
        steps.append(_call(np.add, y, bias, y))
        bias = None
    if z is not None and z.shape != y.shape:
        steps.append(_call(np.add, y, z, y))
        z = None
    if bias is not None or z is not None or act:
        steps.append(_call(epilogue, y.reshape(-1, ncol), None if bias is None else bias.reshape(ncol), 2,
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


def _mm_avx512_accepts(n: Node, g: Graph) -> str | None:
    why = _mm_accepts(n, g)
    if why:
        return why
    b = _const(g, n.inputs[1])
    if b is None or b.ndim != 2:
        return "B is not a 2-D constant (attention-style MatMul stays on numpy)"
    return _avx512_ok(*b.shape)


def _mm_avx512_prepack(n: Node, g: Graph) -> dict:
    return {"gemm": gemm_f32_avx512.pack_b(_const(g, n.inputs[1]))}


def _rows_view(a: np.ndarray, cols: int) -> np.ndarray | None:
    """``a`` as (rows, cols) without copying (a planned buffer must not be copied at bind time), else None."""
    try:
        v = a.reshape(-1, cols)
    except ValueError:
        return None
    return v if v.size == 0 or np.shares_memory(v, a) else None


def _gemm_avx512_steps(n: Node, packed: Any, a: np.ndarray, y: np.ndarray, bias: np.ndarray | None,
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
        return [gemm_f32_avx512.bind(a2, packed, y2, fb, z2, act, alpha, beta, node=n.name, op=n.op)]
    return [gemm_f32_avx512.bind(a2, packed, y2, node=n.name, op=n.op)] + \
        _epilogue_steps(y, bias, z, act, alpha, beta)


def _mm_avx512_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    bias = z = None
    act, alpha, beta = 0, 0.0, 0.0
    if n.op == "FusedMatMul":
        bias = ins[2] if len(ins) > 2 else None
        z = ins[3] if len(ins) > 3 else None
        act, alpha, beta = ACT_CODES[n.attrs["activation"]], float(n.attrs["alpha"]), float(n.attrs["beta"])
    steps = _gemm_avx512_steps(n, packed["gemm"], ins[0], outs[0], bias, z, act, alpha, beta)
    if steps is None:  # A is not viewable as rows (e.g. a broadcast view): unpacked numpy path
        steps = _mm_bind(n, {"b": gemm_f32_avx512.unpack_b(packed["gemm"])}, ins, outs, scratch)
    return steps


def _gemm_avx512_accepts(n: Node, g: Graph) -> str | None:
    why = _gemm_accepts(n, g)
    if why:
        return why
    if n.attrs["transA"]:
        return "transA Gemm stays on numpy"
    b = _const(g, n.inputs[1])
    if b is None:
        return "B is not a constant"
    return _avx512_ok(*(b.shape[::-1] if n.attrs["transB"] else b.shape))


def _gemm_avx512_prepack(n: Node, g: Graph) -> dict:
    packed = _gemm_prepack(n, g)
    packed["gemm"] = gemm_f32_avx512.pack_b(packed.pop("b"))
    return packed


def _gemm_avx512_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    y = outs[0]
    c = packed["c"]
    if c is None and len(ins) > 2 and ins[2] is not None:  # runtime C
        return [gemm_f32_avx512.bind(ins[0], packed["gemm"], y, node=n.name, op=n.op),
                _call(_add_scaled, y, ins[2], np.float32(n.attrs["beta"]))]
    if c is not None and c.ndim == 0:
        c = c.reshape(1)
    steps = _gemm_avx512_steps(n, packed["gemm"], ins[0], y, c, None, 0, 0.0, 0.0)
    assert steps is not None, "Gemm operands are 2-D planned buffers"
    return steps


def _gemm_accepts(n: Node, g: Graph) -> str | None:
    if _rank(g, n.inputs[0]) != 2 or _rank(g, n.inputs[1]) != 2:
        return "Gemm needs 2-D A and B"
    return _f32(n, g)


def _gemm_prepack(n: Node, g: Graph) -> dict:
    b = _const(g, n.inputs[1])
    alpha, beta = n.attrs["alpha"], n.attrs["beta"]
    if b is not None:
        b = np.ascontiguousarray((b.T if n.attrs["transB"] else b) * np.float32(alpha), np.float32)
    c = _const(g, n.inputs[2]) if len(n.inputs) > 2 else None
    if c is not None:
        c = np.ascontiguousarray(c * np.float32(beta), np.float32)
    return {"b": b, "c": c}


def _gemm_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    a = ins[0].T if n.attrs["transA"] else ins[0]
    alpha, beta = n.attrs["alpha"], n.attrs["beta"]
    y = outs[0]
    steps: list[Step] = []
    if packed["b"] is not None:
        steps.append(_call(_matmul_out, a, packed["b"], y))
    else:
        steps.append(_call(_matmul_out, a, ins[1].T if n.attrs["transB"] else ins[1], y))
        if alpha != 1.0:
            steps.append(_call(np.multiply, y, np.float32(alpha), y))
    c = packed["c"]
    if c is None and len(ins) > 2 and ins[2] is not None:
        return steps + [_call(_add_scaled, y, ins[2], np.float32(beta))]
    if c is not None:
        steps += _epilogue_steps(y, c if c.ndim else c.reshape(1), None, 0, 0.0, 0.0)
    return steps


def _add_scaled(y: np.ndarray, c: np.ndarray, beta: np.float32) -> None:
    y += c * beta


# -- elementwise ------------------------------------------------------------------------------------------------
def _act_of(n: Node) -> tuple[int, float, float]:
    op = n.op
    if op == "Gelu":
        return ACT_CODES["gelu_tanh" if n.attrs.get("approximate", "none") == "tanh" else "gelu"], 0.0, 0.0
    if op == "LeakyRelu":
        return ACT_CODES["leaky_relu"], float(n.attrs["alpha"]), 0.0
    if op == "HardSigmoid":
        return ACT_CODES["hardsigmoid"], float(n.attrs["alpha"]), float(n.attrs["beta"])
    if op == "Erf":
        return ERF, 0.0, 0.0
    return {"Relu": ACT_CODES["relu"], "Sigmoid": ACT_CODES["sigmoid"], "HardSwish": ACT_CODES["hardswish"]}[op], \
        0.0, 0.0


def _unary_accepts(n: Node, g: Graph) -> str | None:
    return _f32(n, g)


def _unary_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    act, a, b = _act_of(n)
    x, y = ins[0], outs[0]
    cols = _row_cols(x)
    return [_call(unary_2d, x.reshape(-1, cols), y.reshape(-1, cols), act, a, b)]


def _row_cols(x: np.ndarray) -> int:
    from quantgraph.kernels.fp32.eltwise_f32 import row_split

    return row_split(x.size)


def _clip_accepts(n: Node, g: Graph) -> str | None:
    for t in n.inputs[1:]:
        if t and (_const(g, t) is None or _const(g, t).size != 1):
            return "Clip bounds are not constant scalars"
    return _f32(n, g)


def _clip_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    lo = float(ins[1]) if len(ins) > 1 and ins[1] is not None else -np.inf
    hi = float(ins[2]) if len(ins) > 2 and ins[2] is not None else np.inf
    cols = _row_cols(ins[0])
    return [_call(unary_2d, ins[0].reshape(-1, cols), outs[0].reshape(-1, cols), ACT_CODES["clip"], lo, hi)]


_UFUNCS: dict[str, Callable[..., Any]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power,
    "Tanh": np.tanh, "Exp": np.exp, "Sqrt": np.sqrt, "Neg": np.negative, "Abs": np.abs, "Reciprocal": np.reciprocal,
    "Log": np.log, "Max": np.maximum, "Min": np.minimum,
}


def _ufunc_accepts(n: Node, g: Graph) -> str | None:
    if n.op in ("Max", "Min") and len(n.inputs) != 2:
        return f"{n.op} with {len(n.inputs)} inputs runs the reference"
    return _f32(n, g)


def _ufunc_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    if n.op in ("Max", "Min"):  # positional out= is deprecated for maximum/minimum
        return [_call(_binary_out, _UFUNCS[n.op], ins[0], ins[1], outs[0])]
    return [_call(_UFUNCS[n.op], *ins, outs[0])]


def _binary_out(fn: Any, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    fn(a, b, out=out)


# -- normalization / softmax ------------------------------------------------------------------------------------
def _softmax_accepts(n: Node, g: Graph) -> str | None:
    r = _rank(g, n.inputs[0])
    if r is None or normalize_axis(n.attrs["axis"], r) != r - 1:
        return "softmax over a non-last axis runs the reference"
    return _f32(n, g)


def _softmax_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    c = ins[0].shape[-1]
    return [_call(norm_f32.softmax_rows, ins[0].reshape(-1, c), outs[0].reshape(-1, c))]


def _ln_accepts(n: Node, g: Graph) -> str | None:
    r = _rank(g, n.inputs[0])
    if r is None or normalize_axis(n.attrs["axis"], r) != r - 1:
        return "LayerNormalization over more than the last axis runs the reference"
    return _all(_single_output, lambda n_, g_: _f32(n_, g_))(n, g)


def _ln_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    c = ins[0].shape[-1]
    scale = np.broadcast_to(ins[1], (c,)).astype(np.float32)
    bias = ins[2] if len(ins) > 2 and ins[2] is not None else None
    b = np.zeros(c, np.float32) if bias is None else np.ascontiguousarray(np.broadcast_to(bias, (c,)), np.float32)
    return [_call(norm_f32.layernorm_rows, ins[0].reshape(-1, c), scale, b, bias is not None,
                  float(n.attrs["epsilon"]), outs[0].reshape(-1, c))]


def _bn_accepts(n: Node, g: Graph) -> str | None:
    if any(_const(g, t) is None for t in n.inputs[1:5]):
        return "BatchNormalization parameters are not constants"
    if (_rank(g, n.inputs[0]) or 0) < 2:
        return "BatchNormalization needs (N, C, ...)"
    return _all(_single_output, lambda n_, g_: _f32(n_, g_, 1))(n, g)


def _bn_prepack(n: Node, g: Graph) -> dict:
    a, b = norm_f32.bn_fold(*(_const(g, t) for t in n.inputs[1:5]), n.attrs["epsilon"])
    return {"a": a, "b": b}


def _bn_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    x = ins[0]
    shp = (x.shape[0], x.shape[1], -1)
    return [_call(norm_f32.channel_affine, x.reshape(shp), packed["a"], packed["b"], outs[0].reshape(shp))]


# -- pooling ----------------------------------------------------------------------------------------------------
_GLOBAL = ("GlobalAveragePool", "GlobalMaxPool")


def _pool_kind(n: Node) -> str:
    return n.attrs["kind"] if n.op == "FusedPool" else n.op


def _pool_accepts(n: Node, g: Graph) -> str | None:
    if _rank(g, n.inputs[0]) != 4:
        return "only 2-D pooling (4-D X) has a kernel"
    if _pool_kind(n) not in _GLOBAL:
        if n.attrs.get("ceil_mode", 0):
            return "ceil_mode pooling runs the reference"
        if any(d != 1 for d in n.attrs.get("dilations", ()) or ()):
            return "dilated pooling runs the reference"
    return _all(_single_output, lambda n_, g_: _f32(n_, g_))(n, g)


def _pool_scratch(n: Node, packed: Any, ins: Shapes, outs: Shapes) -> int | None:
    if _pool_kind(n) in _GLOBAL:
        return 0
    lay = _layout(n)
    spatial = ins[0][2:] if lay == "NCHW" else ins[0][1:3]
    win = window(n, n.attrs["kernel_shape"], spatial)
    return None if any(p is None for p in win.pads) else 0


def _pool_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    kind, lay = _pool_kind(n), _layout(n)
    if kind in _GLOBAL:
        return [_call(pool_f32.global_pool, ins[0], outs[0], kind == "GlobalMaxPool", lay)]
    spatial = ins[0].shape[2:] if lay == "NCHW" else ins[0].shape[1:3]
    win = window(n, n.attrs["kernel_shape"], spatial)
    fn = pool_f32.pool_nchw if lay == "NCHW" else pool_f32.pool_nhwc
    return [_call(fn, ins[0], outs[0], kind == "MaxPool", *win.kernel, *win.strides, *win.dilations, win.pads[0],
                  win.pads[1], bool(n.attrs.get("count_include_pad", 0)))]


# -- data movement ----------------------------------------------------------------------------------------------
def _view_accepts(n: Node, g: Graph) -> str | None:
    if _const(g, n.inputs[0]) is not None:
        return "input is a constant"
    return _single_output(n, g)


def _transpose_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    perm = n.attrs.get("perm") or tuple(reversed(range(ins[0].ndim)))
    return [_call(np.copyto, outs[0], ins[0].transpose(perm))]


def _concat_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    return [_call(_concat, tuple(ins), normalize_axis(n.attrs["axis"], outs[0].ndim), outs[0])]


def _concat(xs: tuple, axis: int, out: np.ndarray) -> None:
    np.concatenate(xs, axis=axis, out=out)


def _ok(n: Node, g: Graph) -> str | None:
    return None


def _no_steps(*_: Any) -> list[Step]:
    return []


_CONV = KernelDef("conv_f32_im2col", _conv_accepts, _conv_bind, _conv_prepack, _conv_scratch, priority=10)
_MM = KernelDef("matmul_f32_blas", _mm_accepts, _mm_bind, _mm_prepack, priority=10)
_UNARY = KernelDef("unary_f32_numba", _unary_accepts, _unary_bind, inplace=True)
_UFUNC = KernelDef("eltwise_f32_numpy", _ufunc_accepts, _ufunc_bind, inplace=True)
_POOL = KernelDef("pool_f32_numba", _pool_accepts, _pool_bind, scratch=_pool_scratch)
_VIEW = KernelDef("view", _view_accepts, _no_steps, view=True)

_CONV_AVX512 = KernelDef("conv_f32_avx512", _conv_avx512_accepts, _conv_bind, _conv_avx512_prepack,
                         _conv_avx512_scratch, priority=20)
_MM_AVX512 = KernelDef("matmul_f32_avx512", _mm_avx512_accepts, _mm_avx512_bind, _mm_avx512_prepack, priority=20)

KERNELS: dict[str, list[KernelDef]] = {
    "Conv": [_CONV_AVX512, _CONV], "FusedConv": [_CONV_AVX512, _CONV],
    "MatMul": [_MM_AVX512, _MM], "FusedMatMul": [_MM_AVX512, _MM],
    "Gemm": [KernelDef("gemm_f32_avx512", _gemm_avx512_accepts, _gemm_avx512_bind, _gemm_avx512_prepack, priority=20),
             KernelDef("gemm_f32_blas", _gemm_accepts, _gemm_bind, _gemm_prepack, priority=10)],
    **{op: [_UNARY] for op in ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "Erf")},
    "Clip": [KernelDef("clip_f32_numba", _clip_accepts, _clip_bind, inplace=True)],
    **{op: [_UFUNC] for op in _UFUNCS},
    "Softmax": [KernelDef("softmax_f32_numba", _softmax_accepts, _softmax_bind, inplace=True)],
    "LayerNormalization": [KernelDef("layernorm_f32_numba", _ln_accepts, _ln_bind, inplace=True)],
    "BatchNormalization": [KernelDef("batchnorm_f32_numba", _bn_accepts, _bn_bind, _bn_prepack, inplace=True)],
    **{op: [_POOL] for op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "FusedPool")},
    # (Dropout is not a view: inference Dropouts are eliminated by the cleanup rules, and a training-mode one
    # must run its reference)
    **{op: [_VIEW] for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")},
    "Transpose": [KernelDef("transpose_copy", _view_accepts, _transpose_bind)],
    "Concat": [KernelDef("concat_copy", _ok, _concat_bind)],
    "FusedAttention": [KernelDef("attention_f32_blas", attention_f32.accepts, attention_f32.bind,
                                 scratch=attention_f32.scratch, priority=10)],
}


for _op, _defs in bind_int8.KERNEL_DEFS.items():  # the int8 family; its binding code is in kernels/bind_int8.py
    KERNELS.setdefault(_op, []).extend(KernelDef(**d) for d in _defs)


def select(n: Node, g: Graph) -> tuple[KernelDef | None, str]:
    """The highest-priority kernel accepting ``n`` (None = reference) and the reason the best one refused."""
    reason = "no kernel for this op"
    for k in sorted(KERNELS.get(n.op, ()), key=lambda k: -k.priority):
        why = k.accepts(n, g)
        if why is None:
            return k, ""
        reason = why
    return None, reason


def lower(graph: Graph) -> list[LoweredNode]:
    """Choose a kernel for every node (topological order) and pre-pack its constant weights once."""
    out = []
    for n in graph.topo():
        k, reason = select(n, graph)
        out.append(LoweredNode(n, k, k.prepack(n, graph) if k is not None and k.prepack else None, reason))
    return out
