"""Int8 GEMM ``C = epilogue(A[M,K] u8|s8 @ B[K,N] s8)`` with s32 accumulation, on every ISA rung.

Kernel names follow ``<op>_<types>_<isa>``: ``gemm_u8s8s32_avx512vnni``, ``..._avxvnni``, ``..._avx512bw``,
``..._avx2``, ``..._portable``. All rungs give identical results (see ``intrinsics/x86.py``).

Everything a caller can get wrong is checked here, in Python, before any JIT code runs: the JIT code has no bounds
checks. s8 activations are shifted to u8 (``a ^ 0x80``, one O(M*K) pass; the matching ``-128 * col_sum`` lives in
the packed bias); A is copied only when it is not C-contiguous, is s8, or K is not a multiple of 4 (the microkernel
reads A in whole 4-byte groups).
"""
from __future__ import annotations

import numpy as np

from quantgraph.errors import KernelError
from quantgraph.kernels import cache, target
from quantgraph.kernels.epilogue import Epilogue
from quantgraph.kernels.packing import PackedWeights, aligned_empty

_DEFAULT_EPILOGUE = Epilogue()
MR = 8  # rows per full microkernel tile


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


def prepare_a(a: np.ndarray, w: PackedWeights) -> np.ndarray:
    """A as a C-contiguous (M, kg*G) array of the kernel's element type (s8 shifted to u8, K zero-padded).

    For the ``amx`` layout the rows are also 64-byte aligned (copied unless they already are) when A has at least
    32 rows; thinner A is read where it is (misaligned tile rows cost less than the copy's call overhead).
    """
    kp = w.kg * w.group
    if w.a_shift:
        src = a.view(np.uint8) ^ np.uint8(w.a_shift)
    else:
        src = a
    aligned = w.layout != "amx" or a.shape[0] < 32 or src.ctypes.data % 64 == 0
    if kp == w.k and src.flags.c_contiguous and aligned:
        return src
    buf = aligned_empty((a.shape[0], kp), src.dtype)
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


def launch_gemm(isa: str, params: dict, a2: np.ndarray, m: int, w: PackedWeights, ep: tuple, out2d: np.ndarray,
                ocol0: int = 0) -> None:
    """Run the cached GEMM kernel for ``isa`` on a prepared A (see :func:`prepare_a`)."""
    lda = a2.shape[1]
    if w.layout == "amx":
        fn = cache.primitive("int_gemm", params, "gemm_amx", parallel=True)
        fn(a2.reshape(-1), lda, m, w.data, w.kg // 16, w.n, ep, out2d, ocol0, *amx_tasks(m, w.n_panels, w.kg // 16))
        return
    fn = cache.primitive("int_gemm", params, "gemm", parallel=True)
    fn(a2.reshape(-1), lda, m, w.data, w.kg, w.n, ep, out2d, ocol0, *tasks(m, lda * a2.itemsize, w.n_panels))


def run_gemm(kind: str, types: str, a: np.ndarray, w: PackedWeights, epilogue: Epilogue, out: np.ndarray | None,
             node: str | None, op: str | None) -> np.ndarray:
    """Shared front end of the int8/int16 GEMMs: validate, prepare A, pick the ISA, call the cached kernel."""
    isa = target.select_isa(kernel_name(types, "<isa>"))
    if kind != "u8s8" and isa == "amx":
        isa = "avx512vnni"  # NOTE: no AMX int16 tiles (tdpbusd is u8/s8 only); the VNNI rung serves s16
    kernel = kernel_name(types, isa)
    w = check_packed(w, kind, isa, kernel, node, op)
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
    out = check_out(out, (m, n), epilogue.out_dtype, kernel, node, op)
    a2 = prepare_a(a, w)
    res = None if epilogue.residual is None else np.ascontiguousarray(epilogue.residual)
    ep = epilogue.runtime_args(n, w.bias_s32, res)
    params = {"ISA": isa, "KIND": kind, **epilogue.kind.codes()}
    launch_gemm(isa, params, a2, m, w, ep, out)
    return out


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
