"""Lowering of the int8 ops onto the int8 kernels: accepts (a refusal reason), prepack, bind (prebound steps).

Serves QConv, QMatMul (``ir/ops/fused_quant.py``), QAdd, QAveragePool, QConcat, NHWC int8 max pooling and the standalone
QuantizeLinear / DequantizeLinear / QuantizeClip; the records at the end register them in the kernel registry. Only
ir types and the kernels are used here.

QConv / QMatMul: the weights are centred (``w - w_zp``, per channel) and packed once; when the centred weights fit
int8 they run on the u8 x s8 kernels (``conv_u8s8`` / ``gemm_u8s8s32``: the activation zero point, and the +128
shift of s8 activations, are compensated in the packed int32 bias), otherwise (u8 weights far from their zero
point, or int16 activations: W8A16 groups, whose QuantizeClip input bounds the sums) on the int16 GEMM, exactly.
The epilogue is built from the scales as ``fused_quant`` defines it, so the result equals the op's reference bit for
bit on every ISA rung. Four binding modes:

* every parameter and the weights constant, window resolvable: packed at lowering (once per model);
* constant, but the padding depends on the input shape (SAME): packed at bind (once per plan);
* QMatMul of two activations (B computed, e.g. attention's Q @ K^T), constant parameters: bound to the batched
  kernel of ``bmm_int8.py``, which packs B inside its one JIT call;
* other run-time parameters or weights (e.g. the ONNX node tests feed everything): packed per call.

NCHW QConv (opt_level 1/2, no layout pass) transposes into NHWC buffers around the kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.spatial import window
from quantgraph.ir.shapes import normalize_axis
from quantgraph.kernels import cache
from quantgraph.kernels.bmm_int8 import BatchedGemm
from quantgraph.kernels.conv_int8 import ConvSpec, PackedConv, conv_steps, pack_conv_weights
from quantgraph.kernels.eltwise_int8 import add_requant_step, concat_requant_steps, dequantize_step, quantize_step
from quantgraph.kernels.epilogue import Epilogue, apply_epilogue_reference
from quantgraph.kernels.gemm_int8 import GemmCall
from quantgraph.kernels.packing import PackedWeights, pack_weights
from quantgraph.kernels.registry import Kernel, Step, register

INT8 = ("uint8", "int8")
#: the 12 input slots of QConv / QMatMul (fused_quant.py)
SLOTS = ("x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b", "z", "z_scale", "z_zp")
_PARAMS = tuple(s for s in SLOTS if s not in ("x", "z"))
_SCALES = ("x_scale", "w_scale", "y_scale", "z_scale")


def _slots(values: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(SLOTS, list(values) + [None] * (len(SLOTS) - len(values))))


def _dtype(x: np.ndarray | None) -> str | None:
    return None if x is None else str(x.dtype)


def _info_dtype(t: Any) -> str | None:
    return None if t is None else t.dtype


def _tensor(g: Graph, n: Node, slot: str) -> Any:
    i = SLOTS.index(slot)
    t = n.inputs[i] if len(n.inputs) > i else ""
    return g.tensors[t] if t else None


# -- preparing weights and epilogue from arrays ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Prepared:
    """What one QConv / QMatMul runs with: packed weights (int8, or int16 when ``wide``) and the epilogue's
    keyword arguments (all but the residual, which is a buffer known at bind)."""

    packed: Any           # PackedConv | PackedWeights | tuple[PackedWeights, ...] (wide conv: one per group)
    wide: bool
    epilogue: dict
    spec: ConvSpec | None = None


def _scalar(v: np.ndarray | None, default: float = 0.0) -> Any:
    return default if v is None else np.asarray(v).reshape(-1)[0]


def epilogue_kwargs(n: Node, a: dict[str, Any], z_dtype: str | None) -> dict:
    """The Epilogue of ``n``'s output (fused_quant's semantics) from its scale / zero-point arrays; ``z_dtype`` is
    the residual's dtype (None: no residual)."""
    out = n.attrs["out_dtype"]
    if out == "int32":
        return {}
    xs = np.asarray(a["x_scale"]).reshape(())
    ws = np.asarray(a["w_scale"]).reshape(-1)
    kw: dict = {"out_dtype": out, "scale": np.asarray(xs * ws).astype(np.float32).reshape(-1),
                "activation": n.attrs["activation"]}
    if n.attrs["activation"] == "clip":
        kw.update(clip_min=float(n.attrs["alpha"]), clip_max=float(n.attrs["beta"]))
    if out in INT8:
        ys = np.asarray(a["y_scale"]).reshape(())
        # NOTE: the combined multiplier is formed in the scales' own type, as ONNX does (fused_quant.py)
        kw.update(multiplier=np.asarray(xs * ws / ys).astype(np.float32).reshape(-1), out_scale=float(ys),
                  out_zero_point=int(_scalar(a["y_zp"], 0)))
    if z_dtype in INT8:
        kw.update(residual_scale=float(_scalar(a["z_scale"], 1.0)), residual_zero_point=int(_scalar(a["z_zp"], 0)))
    return kw


def _centred(w: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """``w - zp`` as int16 (zp per tensor or along ``axis``)."""
    w16 = w.astype(np.int16)
    if zp is None:
        return w16
    z = np.asarray(zp).astype(np.int16).reshape(-1)
    if z.size == 1:
        return w16 - z[0]
    shape = [1] * w.ndim
    shape[axis] = z.size
    return w16 - z.reshape(shape)


def _fits_int8(w16: np.ndarray) -> bool:
    return w16.size == 0 or (int(w16.min()) >= -128 and int(w16.max()) <= 127)


def _bias(a: dict[str, Any], n_out: int) -> np.ndarray | None:
    b = a["b"]
    return None if b is None else np.broadcast_to(np.asarray(b, np.int64).reshape(-1), (n_out,))


def conv_spec(n: Node, w_shape: tuple[int, ...], x_shape: tuple[Any, ...]) -> ConvSpec | None:
    """The kernel geometry of QConv ``n`` for an input of ``x_shape`` (None when the padding is not yet known)."""
    spatial = x_shape[1:3] if n.attrs["layout"] == "NHWC" else x_shape[2:4]
    win = window(n, w_shape[2:], spatial)
    if any(p is None for p in win.pads):
        return None
    pt, pl, pb, pr = (int(p) for p in win.pads)  # type: ignore[arg-type]
    return ConvSpec(tuple(w_shape[2:]), win.strides, (pt, pl, pb, pr), win.dilations, n.attrs["group"])


def prepare_conv(n: Node, a: dict[str, Any], x_dtype: str, spec: ConvSpec, z_dtype: str | None) -> Prepared:
    """Centre and pack QConv weights for ``spec``; compensate the activation zero point in the int32 bias. An int16
    activation (W8A16) or centred weights beyond int8 take the int16 GEMM (weights widened to int16)."""
    w = np.asarray(a["w"])
    wc = _centred(w, a["w_zp"], 0)
    bias = _bias(a, w.shape[0])
    xzp = int(_scalar(a["x_zp"], 0))
    kw = epilogue_kwargs(n, a, z_dtype)
    if x_dtype != "int16" and _fits_int8(wc):
        packed = pack_conv_weights(wc.astype(np.int8), spec, x_dtype=x_dtype, x_zero_point=xzp, bias_s32=bias)
        return Prepared(packed, False, kw, spec)
    g = spec.group
    mg, kh, kw_ = w.shape[0] // g, spec.kernel[0], spec.kernel[1]
    packs = []
    for gi in range(g):
        wg = wc[gi * mg:(gi + 1) * mg].transpose(2, 3, 1, 0).reshape(kh * kw_ * w.shape[1], mg)  # K = (ky, kx, c)
        packs.append(pack_weights(np.ascontiguousarray(wg), a_dtype="int16", a_zero_point=xzp,
                                  bias_s32=None if bias is None else bias[gi * mg:(gi + 1) * mg]))
    return Prepared(tuple(packs), True, kw, spec)


def prepare_matmul(n: Node, a: dict[str, Any], x_dtype: str, z_dtype: str | None) -> Prepared:
    """Centre and pack 2-D QMatMul weights [K, N] (zero point per column); int16 A as in :func:`prepare_conv`."""
    w = np.asarray(a["w"])
    wc = _centred(w, a["w_zp"], 1)
    bias = _bias(a, w.shape[1])
    xzp = int(_scalar(a["x_zp"], 0))
    kw = epilogue_kwargs(n, a, z_dtype)
    if x_dtype != "int16" and _fits_int8(wc):
        return Prepared(pack_weights(wc.astype(np.int8), a_dtype=x_dtype, a_zero_point=xzp, bias_s32=bias), False, kw)
    return Prepared(pack_weights(wc, a_dtype="int16", a_zero_point=xzp, bias_s32=bias), True, kw)


# -- running ------------------------------------------------------------------------------------------------------
def _im2col_nhwc(x: np.ndarray, spec: ConvSpec, pad: int, c0: int, cg: int) -> np.ndarray:
    """Patches [N*OH*OW, kh*kw*cg] of channels [c0, c0 + cg) of NHWC ``x``, K order (ky, kx, c), padded with
    ``pad`` (the zero point, so padded taps contribute nothing after the packed compensation)."""
    nb, h, wd, _ = x.shape
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.strides, spec.dilations
    pt, pl, pb, pr = spec.pads
    oh, ow = spec.out_hw(h, wd)
    xp = np.full((nb, h + pt + pb, wd + pl + pr, cg), pad, x.dtype)
    xp[:, pt:pt + h, pl:pl + wd] = x[..., c0:c0 + cg]
    cols = np.empty((nb, oh, ow, kh, kw, cg), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx] = xp[:, ky * dh: ky * dh + sh * (oh - 1) + 1: sh,
                                       kx * dw: kx * dw + sw * (ow - 1) + 1: sw]
    return cols.reshape(nb * oh * ow, kh * kw * cg)


def _conv_wide(prep: Prepared, x: np.ndarray, z: np.ndarray | None, out: np.ndarray, xzp: int) -> None:
    """int16 path of QConv (NHWC): im2col + int16 GEMM to exact int32 sums, then the epilogue's numpy twin."""
    from quantgraph.kernels.gemm_int16 import gemm_s16s16s32

    spec = prep.spec
    x16 = x.astype(np.int16)
    cg = x.shape[3] // spec.group
    parts = [gemm_s16s16s32(np.ascontiguousarray(_im2col_nhwc(x16, spec, xzp, gi * cg, cg)), p)
             for gi, p in enumerate(prep.packed)]
    acc = np.concatenate(parts, axis=1).reshape(out.shape)
    epi = Epilogue(**prep.epilogue, residual=z) if prep.epilogue else Epilogue()
    np.copyto(out, apply_epilogue_reference(acc, np.zeros(acc.shape[-1], np.int32), epi))


def _conv_run_steps(n: Node, prep: Prepared, x: np.ndarray, z: np.ndarray | None, y: np.ndarray,
                    xzp: int) -> list[Step]:
    """Steps running QConv on NHWC buffers ``x`` (and residual ``z``) into NHWC ``y``."""
    if prep.wide:
        return [(_conv_wide, (prep, x, z, y, xzp))]
    epi = Epilogue(**prep.epilogue, residual=z) if prep.epilogue else Epilogue()
    return conv_steps(x, prep.packed, epi, out=y, node=n.name, op=n.op)[1]


def _nhwc_buffer(x: np.ndarray) -> np.ndarray:
    return np.empty((x.shape[0], x.shape[2], x.shape[3], x.shape[1]), x.dtype)


def _to_nhwc(dst: np.ndarray, src: np.ndarray) -> None:
    np.copyto(dst, src.transpose(0, 2, 3, 1))


def _to_nchw(dst: np.ndarray, src: np.ndarray) -> None:
    np.copyto(dst, src.transpose(0, 3, 1, 2))


def _conv_steps_for(n: Node, prep: Prepared, a: dict[str, Any], y: np.ndarray) -> list[Step]:
    xzp = int(_scalar(a["x_zp"], 0))
    x, z = a["x"], a["z"]
    if n.attrs["layout"] == "NHWC":
        return _conv_run_steps(n, prep, x, z, y, xzp)
    steps: list[Step] = []
    xb, yb = _nhwc_buffer(x), _nhwc_buffer(y)
    steps.append((_to_nhwc, (xb, x)))
    zb = None
    if z is not None:
        zb = _nhwc_buffer(z)
        steps.append((_to_nhwc, (zb, z)))
    return steps + _conv_run_steps(n, prep, xb, zb, yb, xzp) + [(_to_nchw, (y, yb))]


def _qconv_per_call(n: Node, ins: list, y: np.ndarray) -> None:
    """QConv with run-time weights or parameters: pack, bind and run now."""
    a = _slots(ins)
    spec = conv_spec(n, a["w"].shape, a["x"].shape)
    prep = prepare_conv(n, a, str(a["x"].dtype), spec, _dtype(a["z"]))
    for fn, args in _conv_steps_for(n, prep, a, y):
        fn(*args)


def _matmul_run_steps(n: Node, prep: Prepared, a: np.ndarray, z: np.ndarray | None, y: np.ndarray) -> list[Step]:
    k, cols = prep.packed.k, prep.packed.n
    a2, y2 = a.reshape(-1, k), y.reshape(-1, cols)
    z2 = None if z is None else z.reshape(-1, cols)
    epi = Epilogue(**prep.epilogue, residual=z2) if prep.epilogue else Epilogue()
    if prep.wide:
        if a2.dtype == np.int16:  # W8A16: A is int16 already
            return [(GemmCall("s16s16", "s16s16s32", a2, prep.packed, epi, y2, n.name, n.op), (a2, y2))]
        a16 = np.empty(a2.shape, np.int16)
        call = GemmCall("s16s16", "s16s16s32", a16, prep.packed, epi, y2, n.name, n.op)
        return [(np.copyto, (a16, a2)), (call, (a16, y2))]
    return [(GemmCall("u8s8", "u8s8s32", a2, prep.packed, epi, y2, n.name, n.op), (a2, y2))]


def _qmatmul_per_call(n: Node, ins: list, y: np.ndarray) -> None:
    """QMatMul with run-time weights or parameters (and batched B): pack and run each product now."""
    a = _slots(ins)
    x, w, z = a["x"], a["w"], a["z"]
    batch = np.broadcast_shapes(x.shape[:-2], w.shape[:-2])
    xb = np.broadcast_to(x, batch + x.shape[-2:])
    wb = np.broadcast_to(w, batch + w.shape[-2:])
    for idx in np.ndindex(*batch):
        ai = dict(a, w=np.ascontiguousarray(wb[idx]), z=None if z is None else np.ascontiguousarray(z[idx]))
        prep = prepare_matmul(n, ai, str(x.dtype), _dtype(z))
        yi = np.empty(y.shape[-2:], y.dtype)
        for fn, args in _matmul_run_steps(n, prep, np.ascontiguousarray(xb[idx]), ai["z"], yi):
            fn(*args)
        y[idx] = yi


# -- QConv / QMatMul kernel entries -------------------------------------------------------------------------------
def _common_refusal(n: Node, g: Graph) -> str | None:
    for slot in _SCALES:
        t = _tensor(g, n, slot)
        if t is not None and t.dtype == "float64":
            return f"{slot} is float64; the kernels' requantization multiplier is float32"
    for slot in ("x_zp", "x_scale"):
        t = _tensor(g, n, slot)
        if t is not None and t.shape is not None and any(d != 1 for d in t.shape):
            return f"{slot} has shape {t.shape}; the int8 kernels take one activation zero point/scale per tensor"
    return None


def _params_const(n: Node, g: Graph) -> bool:
    return all(t is None or t.const is not None for t in (_tensor(g, n, s) for s in _PARAMS))


def qconv_accepts(n: Node, g: Graph) -> str | None:
    x = _tensor(g, n, "x")
    if x.rank != 4:
        return f"input has rank {x.rank}; the int8 conv kernels are 2-D (rank 4)"
    return _common_refusal(n, g)


def qconv_prepack(n: Node, g: Graph) -> dict:
    """Pack now when the weights and parameters are constants and the padding is known."""
    const = _params_const(n, g)
    prep = None
    if const:
        a = {s: (None if t is None else t.const) for s, t in ((s, _tensor(g, n, s)) for s in _PARAMS)}
        spec = conv_spec(n, a["w"].shape, _tensor(g, n, "x").shape)
        if spec is not None:
            prep = prepare_conv(n, a, _tensor(g, n, "x").dtype, spec, _info_dtype(_tensor(g, n, "z")))
    return {"const": const, "prep": prep}


def qconv_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    a = _slots(ins)
    if not packed["const"]:
        return [(_qconv_per_call, (n, list(ins), outs[0]))]
    prep = packed["prep"] or prepare_conv(n, a, str(a["x"].dtype), conv_spec(n, a["w"].shape, a["x"].shape),
                                          _dtype(a["z"]))
    return _conv_steps_for(n, prep, a, outs[0])


def qmatmul_accepts(n: Node, g: Graph) -> str | None:
    x, w = _tensor(g, n, "x"), _tensor(g, n, "w")
    if x.rank is None or w.rank is None or x.rank < 2 or w.rank < 2:
        return f"operands have ranks {x.rank} and {w.rank}; the int8 GEMM takes 2-D or batched operands"
    return _common_refusal(n, g)


def _runtime_b(n: Node, g: Graph) -> bool:
    """Whether QMatMul ``n`` multiplies two activations the batched kernel takes: B computed, every scale, zero
    point and bias constant, B's zero point per tensor (a zero point per column would make the row term of
    ``bmm_int8`` per element)."""
    w, w_zp = _tensor(g, n, "w"), _tensor(g, n, "w_zp")
    params = [_tensor(g, n, s) for s in _PARAMS if s != "w"]
    return (w.const is None and _tensor(g, n, "x").dtype in INT8   # NOTE: int16 A packs per call (wide GEMM)
            and all(t is None or t.const is not None for t in params) and (w_zp is None or w_zp.const.size == 1))


def qmatmul_prepack(n: Node, g: Graph) -> dict:
    const = _params_const(n, g) and _tensor(g, n, "w").rank == 2
    prep = None
    if const:
        a = {s: (None if t is None else t.const) for s, t in ((s, _tensor(g, n, s)) for s in _PARAMS)}
        prep = prepare_matmul(n, a, _tensor(g, n, "x").dtype, _info_dtype(_tensor(g, n, "z")))
    return {"prep": prep, "runtime_b": _runtime_b(n, g)}


def _runtime_b_steps(n: Node, a: dict[str, Any], y: np.ndarray) -> list[Step]:
    """QMatMul of two activations on the batched int8 kernel, bound to its buffers (validated there, once)."""
    kw = epilogue_kwargs(n, a, _dtype(a["z"]))
    epi = Epilogue(**kw, residual=a["z"]) if kw else Epilogue()
    call = BatchedGemm(a["x"], a["w"], int(_scalar(a["x_zp"], 0)), int(_scalar(a["w_zp"], 0)), a["b"], epi, y,
                       n.name, n.op)
    return [(call, ())]


def qmatmul_bind(n: Node, packed: dict, ins: list, outs: list, scratch: Any) -> list[Step]:
    a = _slots(ins)
    prep = packed["prep"]
    if prep is None and packed.get("runtime_b"):
        return _runtime_b_steps(n, a, outs[0])
    if prep is None:
        return [(_qmatmul_per_call, (n, list(ins), outs[0]))]
    return _matmul_run_steps(n, prep, a["x"], a["z"], outs[0])


# -- QAdd, max pooling, Q / DQ ------------------------------------------------------------------------------------
def _const_inputs(n: Node, g: Graph, slots: Sequence[int]) -> str | None:
    for i in slots:
        t = n.inputs[i] if len(n.inputs) > i else ""
        if t and g.tensors[t].const is None:
            return f"'{t}' is not a constant; the int8 kernel is bound to constant parameters"
    return None


def qadd_accepts(n: Node, g: Graph) -> str | None:
    return _const_inputs(n, g, (1, 2, 4, 5, 6, 7))


def qadd_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = ins
    return [add_requant_step(a, b, a_scale=_scalar(a_s), a_zero_point=int(_scalar(a_zp)), b_scale=_scalar(b_s),
                             b_zero_point=int(_scalar(b_zp)), out_scale=_scalar(y_s),
                             out_zero_point=int(_scalar(y_zp)), relu=n.attrs["activation"] == "relu", out=outs[0],
                             node=n.name, op=n.op)]


def maxpool_accepts(n: Node, g: Graph) -> str | None:
    x = g.tensors[n.inputs[0]]
    if x.dtype not in INT8:
        return f"input is {x.dtype}; the kernel is int8"
    if n.op != "FusedPool" or n.attrs["kind"] != "MaxPool" or n.attrs["layout"] != "NHWC":
        return "int8 max pooling runs NHWC (opt_level 3)"
    if x.rank != 4 or n.attrs["ceil_mode"]:
        return "only 2-D max pooling without ceil_mode has an int8 kernel"
    pads, kernel = n.attrs["pads"], n.attrs["kernel_shape"]
    if pads and any(p >= k for p, k in zip(pads, tuple(kernel) * 2)):
        return f"pads {pads} reach a whole window {kernel}; the kernel needs a valid tap in every window"
    return None


def maxpool_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    x, y = ins[0], outs[0]
    win = window(n, n.attrs["kernel_shape"], x.shape[1:3])
    (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.strides, win.dilations
    pt, pl = int(win.pads[0]), int(win.pads[1])  # type: ignore[arg-type]
    fn = cache.primitive("int_pool", {"VERSION": 1}, "max_pool", parallel=True)
    lowest = x.dtype.type(np.iinfo(x.dtype).min)
    return [(fn, (x, kh, kw, sh, sw, pt, pl, dh, dw, y.shape[1], y.shape[2], lowest, y))]


def qpool_accepts(n: Node, g: Graph) -> str | None:
    x = g.tensors[n.inputs[0]]
    if n.attrs["layout"] != "NHWC" or x.rank != 4:
        return "int8 average pooling runs 2-D NHWC (opt_level 3)"
    if n.attrs["kind"] == "AveragePool":
        if n.attrs["ceil_mode"]:
            return "average pooling with ceil_mode runs the reference"
        pads, kernel = n.attrs["pads"], n.attrs["kernel_shape"]
        if pads and any(p >= k for p, k in zip(pads, tuple(kernel) * 2)):
            return f"pads {pads} reach a whole window {kernel}; the kernel needs a valid tap in every window"
    return _const_inputs(n, g, (1, 2, 3, 4))


def qpool_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    x, x_s, x_zp, y_s, y_zp = ins
    y = outs[0]
    if n.attrs["kind"] == "GlobalAveragePool":
        (kh, kw), (sh, sw), (dh, dw), pt, pl = x.shape[1:3], (1, 1), (1, 1), 0, 0
    else:
        win = window(n, n.attrs["kernel_shape"], x.shape[1:3])
        (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.strides, win.dilations
        pt, pl = int(win.pads[0]), int(win.pads[1])  # type: ignore[arg-type]
    qlo, qhi = (float(v) for v in (np.iinfo(y.dtype).min, np.iinfo(y.dtype).max))
    f32 = np.float32
    fn = cache.primitive("int_pool", {"VERSION": 1}, "avg_pool", parallel=True)
    return [(fn, (x, kh, kw, sh, sw, pt, pl, dh, dw, y.shape[1], y.shape[2], bool(n.attrs["count_include_pad"]),
                  np.int32(_scalar(x_zp)), f32(_scalar(x_s)), f32(_scalar(y_s)), f32(_scalar(y_zp)), f32(qlo),
                  f32(qhi), y))]


def qconcat_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    return concat_requant_steps(list(ins), n.attrs["scales"], n.attrs["zero_points"], axis=n.attrs["axis"],
                                out_scale=n.attrs["y_scale"], out_zero_point=n.attrs["y_zero_point"], out=outs[0],
                                node=n.name, op=n.op)


def _qdq_refusal(n: Node, g: Graph) -> str | None:
    if n.attrs["block_size"]:
        return "blocked quantization runs the reference"
    why = _const_inputs(n, g, (1, 2))
    if why:
        return why
    scale = g.tensors[n.inputs[1]]
    if scale.dtype != "float32":
        return f"the scale is {scale.dtype}; the kernel takes float32"
    if scale.const.size > 1 and scale.const.ndim != 1:
        return "the scale is not a scalar or a 1-D per-axis vector"
    return None


def _axis(n: Node, x: np.ndarray, scale: np.ndarray) -> int | None:
    return None if np.asarray(scale).size == 1 else normalize_axis(n.attrs["axis"], x.ndim)


def quantize_clip_accepts(n: Node, g: Graph) -> str | None:
    if g.tensors[n.inputs[0]].dtype != "float32":
        return f"input is {g.tensors[n.inputs[0]].dtype}; the kernel quantizes float32"
    return _const_inputs(n, g, (1, 2))


def quantize_clip_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    x, scale, zp = ins
    return [quantize_step(x, scale, zp, outs[0], None, n.name, n.op, qrange=(n.attrs["qmin"], n.attrs["qmax"]))]


def quantize_accepts(n: Node, g: Graph) -> str | None:
    if g.tensors[n.inputs[0]].dtype != "float32":
        return f"input is {g.tensors[n.inputs[0]].dtype}; the kernel quantizes float32"
    if g.tensors[n.outputs[0]].dtype not in INT8:
        return f"output is {g.tensors[n.outputs[0]].dtype}; the kernel writes uint8 or int8"
    if n.attrs["precision"] not in (None, "float32"):
        return f"precision is {n.attrs['precision']}; the kernel divides in float32"
    return _qdq_refusal(n, g)


def quantize_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    x, scale, zp = (list(ins) + [None])[:3]
    return [quantize_step(x, scale, zp, outs[0], _axis(n, x, scale), n.name, n.op)]


def dequantize_accepts(n: Node, g: Graph) -> str | None:
    if g.tensors[n.inputs[0]].dtype not in INT8:
        return f"input is {g.tensors[n.inputs[0]].dtype}; the kernel dequantizes uint8 or int8"
    if g.tensors[n.outputs[0]].dtype != "float32":
        return f"output is {g.tensors[n.outputs[0]].dtype}; the kernel writes float32"
    return _qdq_refusal(n, g)


def dequantize_bind(n: Node, packed: Any, ins: list, outs: list, scratch: Any) -> list[Step]:
    x, scale, zp = (list(ins) + [None])[:3]
    return [dequantize_step(x, scale, zp, outs[0], _axis(n, x, scale), n.name, n.op)]


#: the int8 family's entries of the lowering table: op -> KernelDef keyword arguments
register(Kernel("qconv_int8", ("QConv",), qconv_accepts, qconv_bind, prepack=qconv_prepack, priority=10))
register(Kernel("qmatmul_int8", ("QMatMul",), qmatmul_accepts, qmatmul_bind, prepack=qmatmul_prepack, priority=10))
register(Kernel("qadd_int8", ("QAdd",), qadd_accepts, qadd_bind, priority=10))
register(Kernel("maxpool_int8", ("FusedPool",), maxpool_accepts, maxpool_bind, priority=20))
register(Kernel("avgpool_int8", ("QAveragePool",), qpool_accepts, qpool_bind, priority=10))
register(Kernel("concat_int8", ("QConcat",), lambda n, g: None, qconcat_bind, priority=10))
register(Kernel("quantize_f32_int8", ("QuantizeLinear",), quantize_accepts, quantize_bind, priority=10))
register(Kernel("quantize_clip_f32", ("QuantizeClip",), quantize_clip_accepts, quantize_clip_bind, priority=10))
register(Kernel("dequantize_int8_f32", ("DequantizeLinear",), dequantize_accepts, dequantize_bind, priority=10))

__all__ = ["Prepared", "prepare_conv", "prepare_matmul", "epilogue_kwargs", "conv_spec",
           "PackedConv", "PackedWeights"]
