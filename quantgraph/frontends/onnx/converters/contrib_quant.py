"""ONNX converters: onnxruntime's quantized contrib ops (domain ``com.microsoft``), the ones its quantization tool
writes.

Each op becomes the canonical QDQ form (``DequantizeLinear -> standard float op(s) -> QuantizeLinear``), which the
``realize_quantized`` rules then put on the int8 kernels where they can: QAdd (equal shapes), QConcat, QAveragePool,
QMatMul. Mul, Sigmoid and LeakyRelu have no int8 realization yet and run in float between their DQ and Q.

    QLinearAdd / QLinearMul(a, as, az?, b, bs, bz?, cs, cz?)  ==>  Q(Add / Mul(DQ(a), DQ(b)), cs, cz)
    QLinearConcat(ys, yz, (x, xs, xz)...)                     ==>  Q(Concat(DQ(x)...), ys, yz)
    QLinearSigmoid / QLinearLeakyRelu(x, xs, xz?, ys, yz?)    ==>  Q(Sigmoid / LeakyRelu(DQ(x)), ys, yz)
    QLinearAveragePool / QLinearGlobalAveragePool             ==>  Q(AveragePool / GlobalAveragePool(DQ(x)))
                                                                   (channels_last: int8 Transposes around it)
    QGemm(a, as, az, b, bs, bz, c?, ys?, yz?)                 ==>  [Q](Gemm(DQ(a', alpha * as), DQ(b), DQ(c)?))
    MatMulIntegerToFloat(a, b, as, bs, az?, bz?, bias?)       ==>  MatMul(DQ(a), DQ(b)) + bias   (constant b, scales)
                                                              ==>  Cast(MatMulInteger(a, b, az, bz)) * (as * bs) + bias
    DynamicQuantizeMatMul(a, b, bs, bz?, bias?)               ==>  the latter on DynamicQuantizeLinear(a)
    DynamicQuantizeLSTM(x, W, R, ..., ws, wz, rs, rz)         ==>  LSTM(x, DQ(W)^T, DQ(R)^T, ...) in float
    QAttention(x, w, bias, xs, ws, mask?, xz?, wz?)           ==>  Attention(split(DQ(x) @ DQ(w) + bias), mask?)

Numerics against onnxruntime's kernels: the integer products are exact in both, and the matmul multipliers are
formed in the same float32 order (QGemm: ``alpha * a_scale * b_scale / y_scale``; MatMulIntegerToFloat: ``a_scale *
b_scale``). onnxruntime requantizes the elementwise ops, pooling and concat through lookup tables and MLAS loops in
its own float order, the QDQ form through ONNX's, so those integers can differ by one level at rounding boundaries.
DynamicQuantizeMatMul quantizes A as onnxruntime does (DynamicQuantizeLinear is its GetQuantizationParameter).
DynamicQuantizeLSTM runs on the dequantized weights in float, where onnxruntime also quantizes X and the hidden state
to uint8 at every step: its outputs carry that activation quantization noise, ours do not.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.converters.pool import AveragePool
from quantgraph.frontends.onnx.converters.rnn import LSTM
from quantgraph.frontends.onnx.registry import onnx_op

MS = "com.microsoft"
INT8 = ("uint8", "int8")


# -- helpers ------------------------------------------------------------------------------------------------------
def _int8_input(g: ConvertContext, x: str, what: str) -> str:
    dtype = g.info(x).dtype
    if dtype not in INT8:
        raise g.unsupported(f"{what} is {dtype}; expected uint8 or int8")
    return dtype


def _scalar(g: ConvertContext, t: str | None, what: str) -> None:
    """onnxruntime takes these parameters per tensor only; a known per-axis shape is refused here, by name."""
    if not t:
        return
    shape = g.info(t).shape
    if shape is not None and all(isinstance(d, int) for d in shape) and int(np.prod(shape, dtype=np.int64)) != 1:
        raise g.unsupported(f"{what} has shape {tuple(shape)}; expected a scalar (per-tensor quantization)")


def _dq(g: ConvertContext, x: str, scale: str, zp: str | None, axis: int = 1) -> str:
    return g.add("DequantizeLinear", [x, scale, zp], axis=axis)


def _q(g: ConvertContext, y: str, scale: str, zp: str | None, dtype: str) -> str:
    """QuantizeLinear to ``dtype``; without a zero point ONNX would pick uint8, so the type is then stated."""
    return g.add("QuantizeLinear", [y, scale, zp], output_dtype=None if zp else dtype)


def _mul(g: ConvertContext, a: str, b: str) -> str:
    """a * b in float32; folded here when both are constants, so the realize rules (which run before constant
    folding) see a constant scale."""
    va, vb = g.value(a), g.value(b)
    if va is not None and vb is not None:
        return g.const((np.asarray(va, np.float32) * np.asarray(vb, np.float32)).astype(np.float32),
                       name=f"{g.node_name}/scale")
    return g.add("Mul", [a, b])


def _as_scalar(g: ConvertContext, t: str | None) -> str | None:
    """A one-element parameter as a scalar (MatMulInteger reads a 1-D zero point per row / column)."""
    if not t or g.info(t).rank == 0:
        return t
    v = g.value(t)
    if v is not None:
        return g.const(np.asarray(v).reshape(()), name=f"{g.node_name}/zero_point")
    return g.add("Reshape", [t, g.const(np.zeros(0, np.int64), name=f"{g.node_name}/scalar")])


def _size(g: ConvertContext, t: str | None) -> int | None:
    if not t:
        return None
    shape = g.info(t).shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def _elementwise(g: ConvertContext, op: str, X: str, X_scale: str, X_zero_point: str | None, Y_scale: str,
                 Y_zero_point: str | None, **attrs: Any) -> str:
    dtype = _int8_input(g, X, "X")
    for t, what in ((X_scale, "X_scale"), (X_zero_point, "X_zero_point"), (Y_scale, "Y_scale"),
                    (Y_zero_point, "Y_zero_point")):
        _scalar(g, t, what)
    return _q(g, g.add(op, [_dq(g, X, X_scale, X_zero_point)], **attrs), Y_scale, Y_zero_point, dtype)


def _binary(g: ConvertContext, op: str, A: str, A_scale: str, A_zero_point: str | None, B: str, B_scale: str,
            B_zero_point: str | None, C_scale: str, C_zero_point: str | None) -> str:
    dtype = _int8_input(g, A, "A")
    if g.info(B).dtype != dtype:
        raise g.unsupported(f"A is {dtype} and B is {g.info(B).dtype}; expected one type for both")
    for t, what in ((A_scale, "A_scale"), (A_zero_point, "A_zero_point"), (B_scale, "B_scale"),
                    (B_zero_point, "B_zero_point"), (C_scale, "C_scale"), (C_zero_point, "C_zero_point")):
        _scalar(g, t, what)
    y = g.add(op, [_dq(g, A, A_scale, A_zero_point), _dq(g, B, B_scale, B_zero_point)])
    return _q(g, y, C_scale, C_zero_point, dtype)


def _to_channels_first(g: ConvertContext, x: str, what: str) -> str:
    rank = g.info(x).rank
    if rank is None or rank < 3:
        raise g.unsupported(f"{what} has rank {rank}; channels_last pooling needs a known rank >= 3")
    return g.add("Transpose", [x], perm=(0, rank - 1, *range(1, rank - 1)))


def _to_channels_last(g: ConvertContext, y: str) -> str:
    rank = g.info(y).rank
    return g.add("Transpose", [y], perm=(0, *range(2, rank), 1))


# -- elementwise --------------------------------------------------------------------------------------------------
@onnx_op("QLinearAdd", since=1, domain=MS)
def QLinearAdd(g: ConvertContext, A: str, A_scale: str, A_zero_point: str | None, B: str, B_scale: str,
               B_zero_point: str | None, C_scale: str, C_zero_point: str | None = None) -> str:
    return _binary(g, "Add", A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point)


@onnx_op("QLinearMul", since=1, domain=MS)
def QLinearMul(g: ConvertContext, A: str, A_scale: str, A_zero_point: str | None, B: str, B_scale: str,
               B_zero_point: str | None, C_scale: str, C_zero_point: str | None = None) -> str:
    return _binary(g, "Mul", A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point)


@onnx_op("QLinearSigmoid", since=1, domain=MS)
def QLinearSigmoid(g: ConvertContext, X: str, X_scale: str, X_zero_point: str | None, Y_scale: str,
                   Y_zero_point: str | None = None) -> str:
    return _elementwise(g, "Sigmoid", X, X_scale, X_zero_point, Y_scale, Y_zero_point)


@onnx_op("QLinearLeakyRelu", since=1, domain=MS)
def QLinearLeakyRelu(g: ConvertContext, X: str, X_scale: str, X_zero_point: str | None, Y_scale: str,
                     Y_zero_point: str | None = None, *, alpha: float = 0.01) -> str:
    return _elementwise(g, "LeakyRelu", X, X_scale, X_zero_point, Y_scale, Y_zero_point, alpha=float(alpha))


@onnx_op("QLinearConcat", since=1, domain=MS)
def QLinearConcat(g: ConvertContext, Y_scale: str, Y_zero_point: str, *inputs: str | None, axis: int) -> str:
    if not inputs or len(inputs) % 3:
        raise g.unsupported(f"has {len(inputs)} inputs after Y_scale, Y_zero_point; expected (tensor, scale, "
                            f"zero point) triplets")
    dtype = g.info(Y_zero_point).dtype
    _scalar(g, Y_scale, "Y_scale")
    _scalar(g, Y_zero_point, "Y_zero_point")
    parts = []
    for i in range(0, len(inputs), 3):
        x, s, z = inputs[i:i + 3]
        if not x or not s or not z:
            raise g.unsupported(f"input triplet {i // 3} omits its tensor, scale or zero point; all three are "
                                f"required")
        if g.info(x).dtype != dtype or g.info(z).dtype != dtype:
            raise g.unsupported(f"input triplet {i // 3} is {g.info(x).dtype} with a {g.info(z).dtype} zero point; "
                                f"expected {dtype} like Y_zero_point")
        _scalar(g, s, f"the scale of input {i // 3}")
        _scalar(g, z, f"the zero point of input {i // 3}")
        parts.append(_dq(g, x, s, z))
    return _q(g, g.add("Concat", parts, axis=int(axis)), Y_scale, Y_zero_point, dtype)


# -- pooling ------------------------------------------------------------------------------------------------------
def _qlinear_pool(g: ConvertContext, X: str, x_scale: str, x_zero_point: str | None, y_scale: str,
                  y_zero_point: str | None, channels_last: int, pool: Any) -> str:
    """Q(pool(DQ(X))) for both pools; ``channels_last`` transposes the int8 tensor on the way in and out."""
    dtype = _int8_input(g, X, "X")
    for t, what in ((x_scale, "x_scale"), (x_zero_point, "x_zero_point"), (y_scale, "y_scale"),
                    (y_zero_point, "y_zero_point")):
        _scalar(g, t, what)
    if channels_last not in (0, 1):
        raise g.unsupported(f"channels_last is {channels_last}; expected 0 or 1")
    x = _to_channels_first(g, X, "X") if channels_last else X
    y = _q(g, pool(_dq(g, x, x_scale, x_zero_point)), y_scale, y_zero_point, dtype)
    return _to_channels_last(g, y) if channels_last else y


@onnx_op("QLinearAveragePool", since=1, domain=MS)
def QLinearAveragePool(g: ConvertContext, X: str, x_scale: str, x_zero_point: str | None, y_scale: str,
                       y_zero_point: str | None = None, *, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                       channels_last: int = 0, count_include_pad: int = 0, kernel_shape: Sequence[int] | None = None,
                       pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> str:
    return _qlinear_pool(g, X, x_scale, x_zero_point, y_scale, y_zero_point, channels_last,
                         lambda x: AveragePool(g, x, auto_pad=auto_pad, ceil_mode=ceil_mode,
                                               count_include_pad=count_include_pad, kernel_shape=kernel_shape,
                                               pads=pads, strides=strides))


@onnx_op("QLinearGlobalAveragePool", since=1, domain=MS)
def QLinearGlobalAveragePool(g: ConvertContext, X: str, x_scale: str, x_zero_point: str, y_scale: str,
                             y_zero_point: str, *, channels_last: int = 0) -> str:
    return _qlinear_pool(g, X, x_scale, x_zero_point, y_scale, y_zero_point, channels_last,
                         lambda x: g.add("GlobalAveragePool", [x]))


# -- matmuls ------------------------------------------------------------------------------------------------------
@onnx_op("QGemm", since=1, domain=MS)
def QGemm(g: ConvertContext, A: str, a_scale: str, a_zero_point: str | None, B: str, b_scale: str,
          b_zero_point: str | None = None, C: str | None = None, y_scale: str | None = None,
          y_zero_point: str | None = None, *, alpha: float = 1.0, transA: int = 0, transB: int = 0) -> str:
    _int8_input(g, A, "A")
    _int8_input(g, B, "B")
    _scalar(g, a_scale, "a_scale")
    _scalar(g, a_zero_point, "a_zero_point")
    if bool(y_scale) != bool(y_zero_point):
        raise g.unsupported("has only one of y_scale and y_zero_point; expected both (int8 output) or neither "
                            "(float32 output)")
    if y_scale:
        _scalar(g, y_scale, "y_scale")
        _scalar(g, y_zero_point, "y_zero_point")
    if C and g.info(C).dtype != "int32":
        raise g.unsupported(f"C is {g.info(C).dtype}; expected int32 in units of alpha * a_scale * b_scale")
    if transA not in (0, 1) or transB not in (0, 1):
        raise g.unsupported(f"transA={transA}, transB={transB}; expected 0 or 1")
    a = g.add("Transpose", [A], perm=(1, 0)) if transA else A
    # NOTE: onnxruntime's multiplier is (alpha * a_scale) * b_scale [/ y_scale] in float32; alpha goes into A's
    # scale, so the Gemm has alpha 1 and C (int32 in units of alpha * a_scale * b_scale) is the usual bias.
    sa = a_scale
    if float(alpha) != 1.0:
        sa = _mul(g, g.const(np.float32(alpha), name=f"{g.node_name}/alpha"), a_scale)
    n_b = _size(g, b_scale)
    if n_b is None:
        raise g.unsupported("b_scale has an unknown shape; expected a scalar or one scale per column")
    per_column = n_b > 1
    b = _dq(g, B, b_scale, b_zero_point, axis=0 if transB else 1)
    c = None
    if C:
        c_shape = g.info(C).shape
        c_axis = 0
        if per_column:
            if c_shape is None or len(c_shape) not in (1, 2) or (len(c_shape) == 2 and c_shape[0] != 1):
                raise g.unsupported(f"C has shape {c_shape} with per-column b_scale; expected (N,) or (1, N)")
            c_axis = len(c_shape) - 1
        c = _dq(g, C, _mul(g, sa, b_scale), None, axis=c_axis)
    y = g.add("Gemm", [_dq(g, a, sa, a_zero_point), b, c], alpha=1.0, beta=1.0, transA=0, transB=int(transB))
    if not y_scale:
        return y
    return _q(g, y, y_scale, y_zero_point, g.info(y_zero_point).dtype)


def _matmul_to_float(g: ConvertContext, A: str, B: str, a_scale: str, b_scale: str, a_zero_point: str | None,
                     b_zero_point: str | None, bias: str | None) -> str:
    """Cast(MatMulInteger(A, B, az, bz)) * (a_scale * b_scale) [+ bias]: onnxruntime's MatMulIntegerToFloat."""
    _scalar(g, a_scale, "a_scale")
    _scalar(g, a_zero_point, "a_zero_point")
    n = g.info(B).shape[-1] if g.info(B).shape else None
    for t, what in ((b_scale, "b_scale"), (b_zero_point, "b_zero_point")):
        size = _size(g, t)
        if t and (g.info(t).rank or 0) > 1 or (size not in (None, 1) and size != n):
            raise g.unsupported(f"{what} has shape {g.info(t).shape}; expected a scalar or one per column of B")
    if _size(g, b_zero_point) == 1:
        b_zero_point = _as_scalar(g, b_zero_point)
    acc = g.add("MatMulInteger", [A, B, _as_scalar(g, a_zero_point), b_zero_point])
    y = g.add("Mul", [g.add("Cast", [acc], to="float32"), _mul(g, a_scale, b_scale)])
    return g.add("Add", [y, bias]) if bias else y


@onnx_op("MatMulIntegerToFloat", since=1, domain=MS)
def MatMulIntegerToFloat(g: ConvertContext, A: str, B: str, a_scale: str, b_scale: str,
                         a_zero_point: str | None = None, b_zero_point: str | None = None,
                         bias: str | None = None) -> str:
    _int8_input(g, A, "A")
    _int8_input(g, B, "B")
    if g.info(a_scale).dtype != "float32":
        raise g.unsupported(f"a_scale is {g.info(a_scale).dtype}; only float32 scales are supported")
    if g.value(a_scale) is not None and g.value(b_scale) is not None and g.value(B) is not None and \
            g.info(B).rank == 2 and (g.info(b_scale).rank or 0) <= 1:
        # constant weights and scales: the QDQ form, which realizes as one float-output QMatMul (multiplier
        # a_scale * b_scale, bias in its epilogue)
        _scalar(g, a_scale, "a_scale")
        _scalar(g, a_zero_point, "a_zero_point")
        y = g.add("MatMul", [_dq(g, A, a_scale, a_zero_point), _dq(g, B, b_scale, b_zero_point, axis=1)])
        return g.add("Add", [y, bias]) if bias else y
    return _matmul_to_float(g, A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias)


@onnx_op("DynamicQuantizeMatMul", since=1, domain=MS)
def DynamicQuantizeMatMul(g: ConvertContext, A: str, B: str, b_scale: str, b_zero_point: str | None = None,
                          bias: str | None = None) -> str:
    _int8_input(g, B, "B")
    aq, a_s, a_z = g.add("DynamicQuantizeLinear", [A])
    return _matmul_to_float(g, aq, B, a_s, b_scale, a_z, b_zero_point, bias)


# -- recurrent ----------------------------------------------------------------------------------------------------
def _lstm_weights(g: ConvertContext, w: str, scale: str, zp: str, what: str) -> str:
    """[D, K, 4H] int8 with [D] or [D, 4H] parameters ==> float [D, 4H, K], ONNX LSTM's layout."""
    _int8_input(g, w, what)
    if g.info(w).rank != 3:
        raise g.unsupported(f"{what} has rank {g.info(w).rank}; expected [num_directions, K, 4*hidden_size]")
    if (g.info(scale).rank or 0) == 1 and (g.info(zp).rank or 0) == 1:
        wf = _dq(g, w, scale, zp, axis=0)  # per direction
    elif g.info(scale).rank == 2 and g.info(zp).rank == 2:
        # per direction and column: DQ has no 2-D parameters, so the same arithmetic ((w - zp) * scale) explicitly
        shape = g.const(np.array([0, 1, -1], np.int64), name=f"{g.node_name}/dk1")
        wi = g.add("Cast", [w], to="int32")
        zi = g.add("Cast", [g.add("Reshape", [zp, shape])], to="int32")
        wf = g.add("Mul", [g.add("Cast", [g.add("Sub", [wi, zi])], to="float32"), g.add("Reshape", [scale, shape])])
    else:
        raise g.unsupported(f"{what}'s scale/zero point have ranks {g.info(scale).rank}/{g.info(zp).rank}; expected "
                            f"[num_directions] or [num_directions, 4*hidden_size]")
    return g.add("Transpose", [wf], perm=(0, 2, 1))


@onnx_op("DynamicQuantizeLSTM", since=1, domain=MS)
def DynamicQuantizeLSTM(g: ConvertContext, X: str, W: str, R: str, B: str | None = None,
                        sequence_lens: str | None = None, initial_h: str | None = None, initial_c: str | None = None,
                        P: str | None = None, W_scale: str | None = None, W_zero_point: str | None = None,
                        R_scale: str | None = None, R_zero_point: str | None = None, *,
                        activation_alpha: Sequence[float] | None = None,
                        activation_beta: Sequence[float] | None = None, activations: Sequence[str] | None = None,
                        clip: float | None = None, direction: str = "forward", hidden_size: int | None = None,
                        input_forget: int = 0) -> Any:
    if not (W_scale and W_zero_point and R_scale and R_zero_point):
        raise g.unsupported("W_scale, W_zero_point, R_scale and R_zero_point are all required")
    w = _lstm_weights(g, W, W_scale, W_zero_point, "W")
    r = _lstm_weights(g, R, R_scale, R_zero_point, "R")
    return LSTM(g, X, w, r, B, sequence_lens, initial_h, initial_c, P, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                hidden_size=hidden_size, input_forget=input_forget)


# -- attention ----------------------------------------------------------------------------------------------------
def _attention_mask(g: ConvertContext, mask_index: str, shape: Sequence[Any]) -> str:
    """onnxruntime's mask_index as Attention's boolean mask (B, 1, 1, S): a 1-D (B) input holds each batch's key
    length (right padding), a 2-D (B, S) input is the raw mask (nonzero = attend)."""
    rank, seq = g.info(mask_index).rank, shape[1]
    axes = g.const(np.array([1, 2], np.int64), name=f"{g.node_name}/axes")
    if rank == 2:
        return g.add("Unsqueeze", [g.add("Cast", [mask_index], to="bool"), axes])
    mshape = g.info(mask_index).shape
    if rank != 1 or not isinstance(seq, int) or mshape[0] != shape[0]:
        raise g.unsupported(f"mask_index has shape {mshape}; supported: (batch,) key lengths with a static sequence "
                            f"length, or a (batch, sequence) raw mask")
    positions = g.const(np.arange(seq, dtype=np.int32).reshape(1, seq), name=f"{g.node_name}/positions")
    lengths = g.add("Unsqueeze", [mask_index, g.const(np.array([1], np.int64), name=f"{g.node_name}/axis")])
    return g.add("Unsqueeze", [g.add("Less", [positions, lengths]), axes])


@onnx_op("QAttention", since=1, domain=MS)
def QAttention(g: ConvertContext, input: str, weight: str, bias: str, input_scale: str, weight_scale: str,
               mask_index: str | None = None, input_zero_point: str | None = None,
               weight_zero_point: str | None = None, past: str | None = None, *, num_heads: int,
               do_rotary: int = 0, mask_filter_value: float = -10000.0, past_present_share_buffer: int = 0,
               scale: float | None = None, unidirectional: int = 0) -> Any:
    # NOTE: masked scores get mask_filter_value in onnxruntime and -inf here; both give them weight 0 (exp(-1e4)
    # underflows in float32) unless a whole row is masked
    _int8_input(g, input, "input")
    _int8_input(g, weight, "weight")
    if past:
        raise g.unsupported("the past state input is not supported")
    if do_rotary or past_present_share_buffer:
        raise g.unsupported(f"do_rotary={do_rotary}, past_present_share_buffer={past_present_share_buffer}; "
                            f"expected 0")
    if g.num_outputs > 1:
        raise g.unsupported("the present output is not supported (no past state)")
    if g.info(input).rank != 3 or g.info(weight).rank != 2:
        raise g.unsupported(f"input has rank {g.info(input).rank} and weight rank {g.info(weight).rank}; "
                            f"expected 3 and 2")
    _scalar(g, input_scale, "input_scale")
    _scalar(g, input_zero_point, "input_zero_point")
    width = g.info(weight).shape[1]
    if not isinstance(width, int) or width % (3 * num_heads):
        raise g.unsupported(f"weight has {width} columns; expected 3 * num_heads * head_size")
    qkv = g.add("Add", [g.add("MatMul", [_dq(g, input, input_scale, input_zero_point),
                                         _dq(g, weight, weight_scale, weight_zero_point, axis=1)]), bias])
    q, k, v = g.add("Split", [qkv, g.const(np.full(3, width // 3, np.int64), name=f"{g.node_name}/split")],
                    outputs=3, axis=2)
    mask = _attention_mask(g, mask_index, g.info(input).shape) if mask_index else None
    return g.add("Attention", [q, k, v, mask], is_causal=int(unidirectional), q_num_heads=int(num_heads),
                 kv_num_heads=int(num_heads), scale=None if scale is None else float(scale))
