"""Int8 GEMM ``C = epilogue(A[M,K] u8|s8 @ B[K,N] s8)`` with s32 accumulation, on every ISA rung.

Kernel names follow ``<op>_<types>_<isa>``: ``gemm_u8s8s32_avx512vnni``, ``..._avxvnni``, ``..._avx512bw``,
``..._avx2``, ``..._portable``. All rungs give identical results (see ``intrinsics/x86.py``).

Everything a caller can get wrong is checked here, in Python, before any JIT code runs: the JIT code has no bounds
checks. The checks run once per layer: :class:`GemmCall` binds weights, epilogue and A's shape, and later calls only
compare against the binding. s8 activations are shifted to u8 (``a ^ 0x80``; the matching ``-128 * col_sum`` lives
in the packed bias). On the AMX rung the kernel does that per task, with the K padding and 64-byte row alignment,
as it copies its rows; the VNNI rungs read A in place unless it is s8, not C-contiguous, or K is not a multiple of
the group (the microkernel reads A in whole groups), and then a per-thread buffer holds the prepared copy.
"""
from __future__ import annotations

import threading

import numpy as np

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.kernels import cache, target
from quantgraph.kernels.epilogue import Epilogue
from quantgraph.kernels.packing import PackedWeights, aligned_empty

_DEFAULT_EPILOGUE = Epilogue()
MR = 8  # rows per full microkernel tile
AMX_ALIGN_ROWS = 16  # from this many rows the AMX kernel copies misaligned A into aligned rows (measured)


def kernel_name(types: str, isa: str, op: str = "gemm") -> str:
    return f"{op}_{types}_{isa}"


def check_out(out: np.ndarray | None, shape: tuple[int, ...], dtype: str, kernel: str, node: str | None,
              op: str | None) -> np.ndarray:
    """A C-contiguous writeable output of ``shape``/``dtype``: the given one (checked) or a new one."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or out.dtype != np.dtype(dtype) or out.shape != tuple(shape):
        found = f"{out.dtype}{out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise KernelError(f"kernel '{kernel}': out is {found}; expected {dtype}{tuple(shape)}", node, op)
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise KernelError(f"kernel '{kernel}': out must be C-contiguous and writeable", node, op)
    return out


_FAMILIES = {"u8s8": ("k4n32", "amx"), "s16s16": ("k2n32",)}


def layout_for(kind: str, isa: str) -> str:
    """The packed layout the kernels of ``kind`` read on ``isa``."""
    if kind == "u8s8":
        return "amx" if isa == "amx" else "k4n32"
    return "k2n32"


def check_packed(w: object, kind: str, isa: str, kernel: str, node: str | None, op: str | None) -> PackedWeights:
    """``w`` validated and in the layout ``isa`` reads (converted once and memoized if it was packed for another
    rung, e.g. after ``QUANTGRAPH_ISA`` changed)."""
    layout = layout_for(kind, isa)
    if not isinstance(w, PackedWeights):
        found = f"{w.dtype}{w.shape} array" if isinstance(w, np.ndarray) else type(w).__name__
        raise KernelError(f"kernel '{kernel}': B is not pre-packed (got a {found}; want '{layout}'); "
                          "run quantgraph.kernels.pack_weights", node, op)
    if w.layout not in _FAMILIES[kind]:
        raise KernelError(f"kernel '{kernel}': B is packed as '{w.layout}'; want '{layout}'", node, op)
    w.check(kernel, node, op)
    return w.as_layout(layout)


def tasks(m: int, kp_bytes: int, n_panels: int) -> tuple[int, int]:
    """(rows per task, panels per task) for the GEMM driver.

    A row chunk of about 256 KiB of A (L2-resident while the panels stream past it), at most 512 rows; then the
    panels are split into groups until there are >= 8 tasks per thread (balance under static scheduling) or one
    panel per task.
    """
    threads = cache._threads()
    mc = max(MR, min(512, (256 * 1024 // max(kp_bytes, 1)) // MR * MR))
    mc = min(mc, -(-m // MR) * MR)
    nmc = -(-m // mc)
    npg = min(n_panels, max(1, -(-8 * threads // nmc)))
    return mc, -(-n_panels // npg)


_scratch = threading.local()


def _a_buffer(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A 64-byte aligned (rows, cols) buffer reused by this thread's calls (A is consumed before the call returns).

    NOTE: a fresh allocation per call cost 1-8 us (malloc and page faults) on thin GEMMs, more than the copy. The
    buffer grows to the largest A seen on the thread and stays, like a oneDNN scratchpad.
    """
    nbytes = shape[0] * shape[1] * dtype.itemsize
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _scratch.buf = aligned_empty(max(nbytes, 1 << 16), np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def prepare_a(a: np.ndarray, w: PackedWeights) -> np.ndarray:
    """A as the kernel reads it: C-contiguous, (M, K) u8 viewed for the ``amx`` layout (the AMX kernel shifts, pads
    and aligns rows itself, per task); otherwise (M, kg*G) of the kernel's element type, s8 shifted to u8 and K
    zero-padded, in a per-thread buffer that the next call on this thread overwrites.
    """
    if w.layout == "amx":
        src = a.view(np.uint8) if a.dtype == np.int8 else a
        return src if src.flags.c_contiguous else np.ascontiguousarray(src)
    kp = w.kg * w.group
    src = a.view(np.uint8) ^ np.uint8(w.a_shift) if w.a_shift else a
    if kp == w.k and src.flags.c_contiguous:
        return src
    buf = _a_buffer((a.shape[0], kp), src.dtype)
    buf[:, :w.k] = src
    buf[:, w.k:] = 0
    return buf


def amx_tasks(m: int, n_panels: int, ks: int) -> tuple[int, int, int]:
    """(rows per task, panels per task, panels per L2 block) for ``gemm_amx``.

    Enough 32-row blocks: one row range per thread, each streaming all of B (every core needs B in its own L2
    anyway). Thin A (fewer than two blocks per thread): the panels are split instead, so each core reads half of B.
    A block of panels holds about 1 MiB of B (half the L2), at most 16 panels (the partial-sum buffer).
    """
    threads = cache._threads()
    pblk = max(1, min(16, (1 << 20) // (ks * 2048)))
    nmb = -(-m // 32)
    if nmb >= 2 * threads:
        return -(-nmb // threads) * 32, n_panels, pblk
    return nmb * 32, -(-n_panels // threads), pblk


def gemm_launch_args(isa: str, params: dict, lda: int, m: int, w: PackedWeights,
                     ocol0: int = 0) -> tuple[cache.Primitive, tuple, tuple]:
    """The GEMM kernel for ``isa`` and the arguments around the epilogue and output: ``fn(a_flat, *head, ep, out,
    *tail)`` runs it (``lda`` elements per row of the flattened A, see :func:`prepare_a`)."""
    if w.layout == "amx":
        fn = cache.primitive("int_gemm", params, "gemm_amx", parallel=True)
        return fn, (lda, m, w.k, w.data, w.kg // 16, w.n), (ocol0, *amx_tasks(m, w.n_panels, w.kg // 16),
                                                            np.uint8(w.a_shift), 0 if m >= AMX_ALIGN_ROWS else -1)
    fn = cache.primitive("int_gemm", params, "gemm", parallel=True)
    itemsize = 2 if w.a_dtype == "int16" else 1
    return fn, (lda, m, w.data, w.kg, w.n), (ocol0, *tasks(m, lda * itemsize, w.n_panels))


def launch_gemm(isa: str, params: dict, a2: np.ndarray, m: int, w: PackedWeights, ep: tuple, out2d: np.ndarray,
                ocol0: int = 0) -> None:
    """Run the cached GEMM kernel for ``isa`` on a prepared A (see :func:`prepare_a`)."""
    fn, head, tail = gemm_launch_args(isa, params, a2.shape[1], m, w, ocol0)
    fn(a2.reshape(-1), *head, ep, out2d, *tail)


class GemmCall:
    """One GEMM layer bound to its kernel: weights, epilogue, A's shape and dtype, and the config checked under.

    Binding does every check and lookup once; a call then only checks A and ``out`` against what was bound, prepares
    A and runs the kernel. ``run_gemm`` keeps the last binding on the (frozen) ``Epilogue``: a compiled model uses one
    epilogue per layer, so each layer's later calls skip about 15 us of Python.
    """

    __slots__ = ("packed", "w", "epilogue", "cfg", "a_shape", "a_dtype", "out_shape", "out_dtype", "kernel", "node",
                 "op", "fn", "head", "ep", "tail", "copy_residual", "in_place")

    def __init__(self, kind: str, types: str, a: np.ndarray, w: PackedWeights, epilogue: Epilogue,
                 out: np.ndarray | None, node: str | None, op: str | None):
        self.cfg = config.get()
        isa = target.select_isa(kernel_name(types, "<isa>"))
        if kind != "u8s8" and isa == "amx":
            isa = "avx512vnni"  # NOTE: no AMX int16 tiles (tdpbusd is u8/s8 only); the VNNI rung serves s16
        kernel = kernel_name(types, isa)
        self.packed, self.epilogue, self.kernel, self.node, self.op = w, epilogue, kernel, node, op
        w = self.w = check_packed(w, kind, isa, kernel, node, op)
        if not isinstance(a, np.ndarray):
            raise KernelError(f"kernel '{kernel}': A is a {type(a).__name__}; expected a numpy array", node, op)
        if a.dtype != np.dtype(w.a_dtype):
            raise KernelError(f"kernel '{kernel}': A is {a.dtype}; the weights were packed for {w.a_dtype} "
                              f"activations (pack_weights(..., a_dtype=...))", node, op)
        if a.ndim != 2 or a.shape[1] != w.k or a.shape[0] < 1:
            raise KernelError(f"kernel '{kernel}': A has shape {a.shape}; expected (M>=1, K={w.k}) to match B "
                              f"({w.k}, {w.n})", node, op)
        m, n = a.shape[0], w.n
        epilogue.validate(n, (m, n), kernel, node, op)
        self.a_shape, self.a_dtype = a.shape, a.dtype
        self.out_shape, self.out_dtype = (m, n), np.dtype(epilogue.out_dtype)
        if out is not None:  # checked before the kernel lookup, too
            check_out(out, self.out_shape, epilogue.out_dtype, kernel, node, op)
        res = epilogue.residual
        # NOTE: a non-contiguous residual is copied per call: a copy made here would miss in-place updates.
        self.copy_residual = res is not None and not res.flags.c_contiguous
        self.ep = epilogue.runtime_args(n, w.bias_s32, None if res is None else np.ascontiguousarray(res))
        params = {"ISA": isa, "KIND": kind, **epilogue.kind.codes()}
        lda = w.k if w.layout == "amx" else w.kg * w.group  # the row length of prepare_a's result
        # A that prepare_a returns as is whenever it is C-contiguous
        self.in_place = not w.a_shift and lda == w.k
        self.fn, self.head, self.tail = gemm_launch_args(isa, params, lda, m, w)

    def matches(self, a: object, w: PackedWeights, epilogue: Epilogue) -> bool:
        return (self.packed is w and self.epilogue is epilogue and self.cfg is config.get() and type(a) is np.ndarray
                and a.shape == self.a_shape and a.dtype == self.a_dtype)

    def __call__(self, a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            out = np.empty(self.out_shape, self.out_dtype)
        elif (type(out) is not np.ndarray or out.dtype != self.out_dtype or out.shape != self.out_shape
              or not out.flags.c_contiguous or not out.flags.writeable):
            out = check_out(out, self.out_shape, self.out_dtype.name, self.kernel, self.node, self.op)  # raises
        ep = self.ep
        if self.copy_residual:
            ep = ep[:3] + (np.ascontiguousarray(self.epilogue.residual),) + ep[4:]
        if not (self.in_place and a.flags.c_contiguous):
            a = prepare_a(a, self.w)
        self.fn(a.reshape(-1), *self.head, ep, out, *self.tail)
        return out


def run_gemm(kind: str, types: str, a: np.ndarray, w: PackedWeights, epilogue: Epilogue, out: np.ndarray | None,
             node: str | None, op: str | None) -> np.ndarray:
    """Shared front end of the int8/int16 GEMMs: validate and bind (once per layer, see :class:`GemmCall`), run."""
    call = epilogue.__dict__.get("_gemm_call")
    if call is None or not call.matches(a, w, epilogue):
        call = GemmCall(kind, types, a, w, epilogue, out, node, op)
        if epilogue is not _DEFAULT_EPILOGUE:  # NOTE: the shared default would keep the last weights alive
            object.__setattr__(epilogue, "_gemm_call", call)
    return call(a, out)


def gemm_u8s8s32(a: np.ndarray, w: PackedWeights, epilogue: Epilogue = _DEFAULT_EPILOGUE, *,
                 out: np.ndarray | None = None, node: str | None = None, op: str | None = "QGemm") -> np.ndarray:
    """Int8 GEMM: ``epilogue(A @ B + bias_s32)`` with A u8 (or s8) [M, K] and B pre-packed s8 [K, N].

    Args:
        a: activations, dtype ``w.a_dtype`` (uint8 or int8), shape (M, K); any M >= 1, any K.
        w: weights from ``pack_weights(B, a_dtype=..., a_zero_point=..., bias_s32=...)``.
        epilogue: what to do with the int32 sums (default: return them as int32).
        out: optional preallocated C-contiguous output (M, N) of ``epilogue.out_dtype``.
        node, op: names used in error messages.

    Returns:
        ``out`` (or a new array) of shape (M, N).
    """
    return run_gemm("u8s8", "u8s8s32", a, w, epilogue, out, node, op)
