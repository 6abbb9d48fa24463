"""Int8 matmul with a run-time B: ``C = epilogue((A - za) @ (B - zb))`` for two quantized activations.

Attention's ``Q @ K^T`` and ``P @ V`` multiply two activations: B changes every call, so it cannot be packed at
compile time like weights. :class:`BatchedGemm` binds one such product to its buffers (every shape, dtype and
contiguity check runs there, once, in Python: the JIT code has no bounds checks) and each call runs one kernel,
``bmm`` in ``jit/int_gemm.py``, which packs every B item into the ``k4n32`` panels in parallel and then runs the
row tiles of every (batch item, row chunk) task. Batch dimensions broadcast as in ONNX MatMul; each distinct B item
is packed once per call, whatever the number of A items that read it.

Zero points. The u8 x s8 tiles need B as s8: ``b ^ 0x80`` is ``b - 128`` for u8 B (s8 B is used as it is), so
``b - zb = b_s8 + c`` with ``c = 128 - zb`` (u8) or ``-zb`` (s8), and with ``a_u = a`` (u8) or ``a + 128`` (s8)

    sum_k (a - za)(b - zb) = sum_k a_u * b_s8 - za_u * colsum(b_s8) + c * rowsum(a_u) - c * K * za_u

The column term and the constant go into a per-item int32 bias (packed with B), the row term is added per row
before the epilogue. All int32 arithmetic wraps, as the reference's int32 accumulator does, so the result equals
``QMatMul``'s reference bit for bit on every ISA rung (the ``amx`` rung runs the avx512vnni tiles here: packing B
per call into the AMX tile layout would cost more than the tiles save at these sizes).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.kernels import cache, target
from quantgraph.kernels.cache import _threads
from quantgraph.kernels.epilogue import Epilogue
from quantgraph.kernels.gemm_int8 import check_out
from quantgraph.kernels.intrinsics.x86 import NR
from quantgraph.kernels.packing import aligned_empty

G = 4  # K group of the u8 x s8 tiles
INT8 = ("uint8", "int8")
MAX_ROWS = 512  # rows per task: A's chunk (MAX_ROWS * K bytes) stays in L2 while B's panels stream past it


def _u8(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint8) if x.dtype == np.int8 else x


def batch_pairs(a_batch: tuple[int, ...], b_batch: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray]:
    """(output batch shape, int64 [items * 2]: the A item and B item of every output item, row-major)."""
    out = np.broadcast_shapes(a_batch, b_batch)
    ai = np.broadcast_to(np.arange(int(np.prod(a_batch, dtype=np.int64))).reshape(a_batch), out)
    bi = np.broadcast_to(np.arange(int(np.prod(b_batch, dtype=np.int64))).reshape(b_batch), out)
    return out, np.ascontiguousarray(np.stack([ai.reshape(-1), bi.reshape(-1)], axis=1).reshape(-1), np.int64)


def row_chunk(items: int, m: int, threads: int) -> int:
    """Rows per task: the whole item when there are enough items, else split so each thread gets ~4 tasks."""
    chunks = max(1, min(-(-4 * threads // items), -(-m // 8)))
    return min(MAX_ROWS, -(-(-(-m // chunks)) // 8) * 8)


class BatchedGemm:
    """One int8 product of two activations bound to its buffers and kernel.

    Args:
        a, b: u8 / s8 arrays, A (..., M, K) and B (..., K, N) with broadcastable batch dimensions (rank >= 2).
        a_zero_point, b_zero_point: per-tensor zero points (ints) of A and B.
        bias_s32: optional int32 bias (N,) added to every accumulator.
        epilogue: what the int32 sums become (its residual, if any, shaped like the output).
        out: the C-contiguous output (batch..., M, N) of ``epilogue.out_dtype``.
        node, op: names for error messages.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, a_zero_point: int, b_zero_point: int,
                 bias_s32: np.ndarray | None, epilogue: Epilogue, out: np.ndarray, node: str | None = None,
                 op: str | None = "QMatMul"):
        isa = target.select_isa("bmm_u8s8s32_<isa>")
        kernel = self.kernel = f"bmm_u8s8s32_{isa}"
        self.node, self.op = node, op
        self._check_operands(a, b)
        (m, k), (_, n) = a.shape[-2:], b.shape[-2:]
        batch, self.pairs = batch_pairs(a.shape[:-2], b.shape[:-2])
        items = self.pairs.size // 2
        self.out = check_out(out, batch + (m, n), epilogue.out_dtype, kernel, node, op)
        self.out2 = self.out.reshape(items * m, n)
        res = epilogue.residual
        res2 = None if res is None else self._residual(res, batch + (m, n))
        epi = epilogue if res is None else dataclasses.replace(epilogue, residual=res2)
        epi.validate(n, (items * m, n), kernel, node, op)
        ubias = np.zeros(n, np.int32) if bias_s32 is None else self._bias(bias_s32, n)
        self.ubias = ubias
        self.ep = epi.runtime_args(n, ubias, res2)
        self.a, self.b = a, b
        self.m, self.k, self.n = m, k, n
        self.kg = -(-k // G)
        kp = self.kg * G
        a_items = int(np.prod(a.shape[:-2], dtype=np.int64))
        b_items = int(np.prod(b.shape[:-2], dtype=np.int64))
        # A is read in place when the tiles can (u8, whole K groups, contiguous); otherwise a bound buffer holds it
        self.a_in_place = a.dtype == np.uint8 and kp == k and a.flags.c_contiguous
        self.a_buf = None if self.a_in_place else np.zeros((a_items * m, kp), np.uint8)
        self.a_flat = a.reshape(-1) if self.a_in_place else self.a_buf.reshape(-1)
        self.b_copy = not b.flags.c_contiguous
        self.b_buf = np.empty(b.shape, b.dtype) if self.b_copy else b
        self.b_flat = _u8(self.b_buf).reshape(-1)
        za = int(a_zero_point)
        zb = int(b_zero_point)
        self.za_u = za + (128 if a.dtype == np.int8 else 0)
        self.xorv = 0x80 if b.dtype == np.uint8 else 0
        self.crow = (128 - zb) if b.dtype == np.uint8 else -zb
        self.bp = aligned_empty(b_items * -(-n // NR) * self.kg * NR * G, np.int8)
        self.bp32 = self.bp.view(np.uint32)
        self.bias32 = np.empty(b_items * n, np.int32)
        self.mc = row_chunk(items, m, _threads())
        params = {"ISA": isa, "KIND": "u8s8", **epi.kind.codes()}
        self.fn = cache.primitive("int_gemm", params, "bmm", parallel=True)

    # -- validation (once, at bind) ---------------------------------------------------------------------------
    def _error(self, msg: str) -> KernelError:
        return KernelError(f"kernel '{self.kernel}': {msg}", self.node, self.op)

    def _check_operands(self, a: object, b: object) -> None:
        for what, x in (("A", a), ("B", b)):
            if not isinstance(x, np.ndarray):
                raise self._error(f"{what} is a {type(x).__name__}; expected a numpy array")
            if str(x.dtype) not in INT8:
                raise self._error(f"{what} is {x.dtype}; expected uint8 or int8")
            if x.ndim < 2 or 0 in x.shape:
                raise self._error(f"{what} has shape {x.shape}; expected rank >= 2 and no empty dimension")
        if a.shape[-1] != b.shape[-2]:
            raise self._error(f"A {a.shape} and B {b.shape}: A's K = {a.shape[-1]} but B's K = {b.shape[-2]}")
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise self._error(f"A {a.shape} and B {b.shape}: batch dimensions do not broadcast") from None

    def _residual(self, res: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if not isinstance(res, np.ndarray) or res.shape != shape or not res.flags.c_contiguous:
            found = f"{res.dtype}{res.shape}" if isinstance(res, np.ndarray) else type(res).__name__
            raise self._error(f"residual is {found}; expected a C-contiguous array of the output shape {shape}")
        return res.reshape(-1, shape[-1])

    def _bias(self, bias: np.ndarray, n: int) -> np.ndarray:
        bias = np.asarray(bias)
        if bias.dtype.kind not in "iu" or bias.size not in (1, n):
            raise self._error(f"bias is {bias.dtype}{bias.shape}; expected int32 of {n} values (one per column)")
        return np.ascontiguousarray(np.broadcast_to(bias.reshape(-1), (n,)), np.int32)

    # -- running ------------------------------------------------------------------------------------------------
    def _prepare_a(self) -> None:
        """A into the bound buffer: s8 shifted to u8 (``a ^ 0x80``), K zero-padded to whole groups."""
        src = _u8(self.a).reshape(-1, self.k)
        dst = self.a_buf[:, :self.k]
        if self.a.dtype == np.int8:
            np.bitwise_xor(src, np.uint8(0x80), out=dst)
        else:
            np.copyto(dst, src)

    def __call__(self) -> np.ndarray:
        if not self.a_in_place:
            self._prepare_a()
        if self.b_copy:
            np.copyto(self.b_buf, self.b)
        kp = self.kg * G
        self.fn(self.a_flat, kp, self.m * kp, self.pairs, self.m, self.b_flat, self.n, self.k * self.n, self.k,
                self.n, self.xorv, self.crow, self.za_u, self.ubias, self.bp, self.bp32, self.kg, self.bias32,
                self.out2, self.ep, self.mc)
        return self.out


def bmm_u8s8s32(a: np.ndarray, b: np.ndarray, a_zero_point: int = 0, b_zero_point: int = 0,
                bias_s32: np.ndarray | None = None, epilogue: Epilogue | None = None, *, out: np.ndarray | None = None,
                node: str | None = None, op: str | None = "QMatMul") -> np.ndarray:
    """One-shot ``epilogue((A - za) @ (B - zb) + bias)`` for two int8 activations (binds, runs once)."""
    epilogue = epilogue or Epilogue()
    if out is None:
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim >= 2 and b.ndim >= 2):
            raise KernelError("kernel 'bmm_u8s8s32': A and B must be numpy arrays of rank >= 2", node, op)
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise KernelError(f"kernel 'bmm_u8s8s32': A {a.shape} and B {b.shape}: batch dimensions do not "
                              "broadcast", node, op) from None
        out = np.empty(batch + (a.shape[-2], b.shape[-1]), epilogue.out_dtype)
    return BatchedGemm(a, b, a_zero_point, b_zero_point, bias_s32, epilogue, out, node, op)()
