"""Compiler-made ops: convolution / matmul with a fused epilogue, and layout-aware pooling.

These are produced by the fusion and layout passes, never by a frontend. Each reference composes the registry
references of the ops it replaces, so it cannot drift from them:

    FusedConv(X, W, B?, Z?)      = act(Conv(X, W, B) + Z)          (Z: residual, same shape as the output)
    FusedMatMul(A, B, bias?, Z?) = act(MatMul(A, B) + bias + Z)
    FusedPool(X)                 = <kind>(X)                        (kind: MaxPool, AveragePool, Global*Pool)

``layout`` is "NCHW" (ONNX's channels-first) or "NHWC" (channels-last: X, Z and the output have the channel
axis last; W stays (M, C/group, k...)). The activation is a row of the activation table (``ir/ops/activation.py``)
with parameters ``alpha``/``beta``.
"""
from __future__ import annotations

import numpy as np

from quantgraph.ir.node import Node
from quantgraph.ir.ops.activation import ACTIVATIONS, apply
from quantgraph.ir.ops.registry import Fusion, Layout, get_op, op, ref
from quantgraph.ir.shapes import Shape, broadcast_shapes, shapes_compatible
from quantgraph.ir.tensor import TensorInfo, TensorType

LAYOUTS = ("NCHW", "NHWC")
_EPILOGUE = {"activation": "none", "alpha": 0.0, "beta": 0.0}


def to_channels_first(shape: Shape) -> Shape:
    return None if shape is None else (shape[0], shape[-1]) + tuple(shape[1:-1])


def to_channels_last(shape: Shape) -> Shape:
    return None if shape is None else (shape[0],) + tuple(shape[2:]) + (shape[1],)


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _check_epilogue(n: Node) -> None:
    if n.attrs["activation"] not in ACTIVATIONS:
        raise n.error(f"activation '{n.attrs['activation']}' is unknown; expected one of {', '.join(ACTIVATIONS)}")


def _check_layout(n: Node) -> None:
    if n.attrs["layout"] not in LAYOUTS:
        raise n.error(f"layout '{n.attrs['layout']}' is unknown; expected NCHW or NHWC")


def _inner(n: Node, op_name: str, keys: tuple[str, ...]) -> Node:
    """A node of ``op_name`` carrying the matching subset of ``n``'s attributes (for delegated inference)."""
    return Node(n.name, op_name, n.inputs, n.outputs, {k: n.attrs[k] for k in keys})


def _check_residual(n: Node, out: TensorType, z: TensorInfo | None) -> None:
    if z is not None and not shapes_compatible(out.shape, z.shape):
        raise n.error(f"residual Z has shape {z.shape}; expected the output shape {out.shape}")


_CONV_KEYS = tuple(get_op("Conv").attrs)
fused_conv = op("FusedConv", inputs="X W B? Z?", outputs="Y", fusion=Fusion.OUT_FUSABLE, weights=(1, 2),
                layout=Layout.ATTR, layout_slots=(0, 3),
                attrs={**get_op("Conv").attrs, **_EPILOGUE, "layout": "NCHW"},
                doc="act(Conv(X, W, B) + Z) in NCHW or NHWC")


@fused_conv.infer
def _(n: Node, x: TensorInfo, w: TensorInfo, b: TensorInfo | None, z: TensorInfo | None) -> TensorType:
    _check_epilogue(n)
    _check_layout(n)
    nhwc = n.attrs["layout"] == "NHWC"
    xin = x.with_(shape=to_channels_first(x.shape)) if nhwc else x
    out = get_op("Conv").run_infer(_inner(n, "Conv", _CONV_KEYS), [xin, w, b])[0]
    if nhwc:
        out = TensorType(to_channels_last(out.shape), out.dtype)
    _check_residual(n, out, z)
    return out


@fused_conv.reference
def _(n: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, z: np.ndarray | None) -> np.ndarray:
    nhwc = n.attrs["layout"] == "NHWC"
    y = ref("Conv", _nchw(x) if nhwc else x, w, b, **{k: n.attrs[k] for k in _CONV_KEYS})
    if z is not None:
        y = y + (_nchw(z) if nhwc else z)
    y = apply(n.attrs["activation"], y, n.attrs["alpha"], n.attrs["beta"]).astype(x.dtype, copy=False)
    return _nhwc(y) if nhwc else y


fused_matmul = op("FusedMatMul", inputs="A B bias? Z?", outputs="Y", fusion=Fusion.OUT_FUSABLE, weights=(1, 2),
                  attrs=dict(_EPILOGUE), doc="act(MatMul(A, B) + bias + Z)")


@fused_matmul.infer
def _(n: Node, a: TensorInfo, b: TensorInfo, bias: TensorInfo | None, z: TensorInfo | None) -> TensorType:
    _check_epilogue(n)
    out = get_op("MatMul").run_infer(_inner(n, "MatMul", ()), [a, b])[0]
    if bias is not None:
        try:
            shape = broadcast_shapes(out.shape, bias.shape)
        except ValueError:
            raise n.error(f"bias has shape {bias.shape}; it must broadcast to the product {out.shape}") from None
        if not shapes_compatible(shape, out.shape):
            raise n.error(f"bias has shape {bias.shape}; it would grow the product {out.shape} to {shape}")
        if bias.dtype != out.dtype:
            raise n.error(f"bias is {bias.dtype}; expected {out.dtype} like the product")
    _check_residual(n, out, z)
    return out


@fused_matmul.reference
def _(n: Node, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None) -> np.ndarray:
    y = ref("MatMul", a, b)
    if bias is not None:
        y = y + bias
    if z is not None:
        y = y + z
    return apply(n.attrs["activation"], y, n.attrs["alpha"], n.attrs["beta"]).astype(a.dtype, copy=False)


POOL_KINDS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
_POOL_KEYS = {"MaxPool": ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"),
              "AveragePool": ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides",
                              "count_include_pad"),
              "GlobalAveragePool": (), "GlobalMaxPool": ()}
fused_pool = op("FusedPool", inputs="X", outputs="Y", fusion=Fusion.OPAQUE, layout=Layout.ATTR,
                attrs={"kind": "MaxPool", "auto_pad": "NOTSET", "ceil_mode": 0, "dilations": (), "kernel_shape": (),
                       "pads": (), "strides": (), "count_include_pad": 0, "layout": "NCHW"},
                doc="a pooling op of the given kind, in NCHW or NHWC")


def _pool_node(n: Node) -> Node:
    kind = n.attrs["kind"]
    if kind not in POOL_KINDS:
        raise n.error(f"kind '{kind}' is unknown; expected one of {', '.join(POOL_KINDS)}")
    _check_layout(n)
    return _inner(n, kind, _POOL_KEYS[kind])


@fused_pool.infer
def _(n: Node, x: TensorInfo) -> TensorType:
    inner = _pool_node(n)
    nhwc = n.attrs["layout"] == "NHWC"
    xin = x.with_(shape=to_channels_first(x.shape)) if nhwc else x
    out = get_op(inner.op).run_infer(inner, [xin])[0]
    return TensorType(to_channels_last(out.shape), out.dtype) if nhwc else out


@fused_pool.reference
def _(n: Node, x: np.ndarray) -> np.ndarray:
    inner = _pool_node(n)
    nhwc = n.attrs["layout"] == "NHWC"
    y = ref(inner.op, _nchw(x) if nhwc else x, **inner.attrs)
    return _nhwc(y) if nhwc else y
