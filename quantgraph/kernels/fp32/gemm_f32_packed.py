"""Packed-weight fp32 GEMM for AVX-512 and AVX2+FMA: C[M,N] = epilogue(A[M,K] @ B[K,N]) with B packed at lowering.

Layout and blocking (Goto-style, A not packed):

* B is packed by :func:`pack_b` into column panels of ``NR`` floats, ``[npan][K][NR]``, the last panel zero-padded
  in N. A is read in place (row-major, any row stride, unit column stride): im2col buffers and activations.
* Microkernel: an ``MR x NR`` register tile emitted as LLVM IR (``kernels/intrinsics/fma_f32.py``), per k one
  broadcast of A per row times ``NR/lanes`` vectors of the B row, one FMA each; shorter tiles cover the M tail, a
  scratch tile the N tail.
* Drivers: ``kernels/jit/f32_gemm.py`` (GEMM and NHWC conv with im2col inside the tasks, fused epilogue, ``prange``
  over tasks), one generated copy per ISA through ``cache.load_template``, so the Numba caches of the ISAs are
  separate files.
* Thin GEMMs (:func:`thin_for`: 8-12 rows of A, a small batch's recurrent ``h @ R^T``): ``pack_b(b, thin=True)``
  packs 16-column panels and :func:`bind` runs ``_thin_driver`` (12-row tiles over the whole K, prefetching B), AVX-512
  only; the same bits as the regular packing.
* One generator, one table of ISAs (:data:`FMA_ISAS`): the ISA sets the vector width and the blocking. ``avx512``:
  zmm, a 6x64 tile (24 of the 32 registers accumulate), KC 128. ``avx2``: ymm, a 6x16 tile (12 of the 16
  registers accumulate, 2 hold the B row, 1 the broadcast), KC 256.

Numerics: float32 accumulation, one FMA per product in k order; neither the task split (which depends only on the
shape), the thread count, the tile shape nor the ISA changes any element's chain of FMAs, so every thread count and
every ISA gives the same bits.

Dispatch (:func:`select`): with ``QUANTGRAPH_ISA`` / ``config.isa`` forced, the rung's vector width picks the kernel:
the 16-lane rungs (amx, avx512vnni, avx512bw) run ``avx512``, the 8-lane rungs (avxvnni, avx2) ``avx2`` (when the host
has fma too), ``portable`` none (``compiler/lower.py`` keeps numpy/OpenBLAS); a forced rung the host cannot run raises
``KernelError`` (``target.select_isa``). Unforced, the best kernel the host can run. Every argument is checked in
:func:`bind` (at plan time), which raises ``KernelError`` before any JIT code runs and returns a prebound step.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

from quantgraph import config
from quantgraph.errors import KernelError
from quantgraph.kernels import cache, target
from quantgraph.kernels.intrinsics.fma_f32 import LANES

_EMPTY1 = np.zeros(0, np.float32)
_EMPTY2 = np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class FmaIsa:
    """One vector ISA of the packed GEMM: the host features it needs and its blocking (see the module docstring)."""

    name: str                    # kernel-name suffix: gemm_f32_<name>, conv_f32_<name>, matmul_f32_<name>
    requires: tuple[str, ...]    # LLVM host features
    mr: int                      # rows of the main register tile
    nr: int                      # columns per packed panel / tile (a multiple of the lanes)
    kc: int                      # K block: the B micro-panel kc x nr floats stays in L1
    pf: int = 0                  # bytes ahead in B the first row tile prefetches (panel-major tasks; 0: none)
    thin: tuple[int, int, int] = (0, 0, 0)  # thin GEMM (:func:`thin_for`): tile rows, panel width, prefetch bytes

    @property
    def thin_nr(self) -> int:
        return self.thin[1]

    @property
    def lanes(self) -> int:
        return LANES[self.name]

    @property
    def kernel(self) -> str:
        return f"gemm_f32_{self.name}"


# NOTE: best first. Blocking measured on ResNet-50 / BERT shapes (README, "fp32 on the AVX2 rung").
FMA_ISAS: dict[str, FmaIsa] = {
    "avx512": FmaIsa("avx512", ("avx512f",), 6, 64, 128, 2048, (12, 16, 4096)),
    "avx2": FmaIsa("avx2", ("avx2", "fma"), 6, 16, 256),
}


def _runnable(isa: FmaIsa) -> bool:
    return all(target.has(f) for f in isa.requires)


def _choose() -> tuple[str | None, FmaIsa | None, str]:
    """(forced rung or None, the kernel to use or None, why there is none)."""
    forced = (config.get().isa or "").strip().lower()
    if not forced:
        best = next((isa for isa in FMA_ISAS.values() if _runnable(isa)), None)
        return None, best, "" if best else "host lacks avx2/fma: no packed fp32 GEMM"
    rung = target.select_isa("packed fp32 GEMM")  # KernelError when the host cannot run the forced rung
    lanes = target.ISAS[rung].lanes
    isa = next((isa for isa in FMA_ISAS.values() if isa.lanes == lanes), None)
    if isa is None:
        return rung, None, f"ISA rung '{rung}' has no packed fp32 GEMM"
    if not _runnable(isa):
        missing = sorted(f for f in isa.requires if not target.has(f))
        return rung, None, f"ISA rung '{rung}' would run {isa.kernel}, but the host lacks {missing}"
    return rung, isa, ""


def select() -> FmaIsa | None:
    """The packed kernel for the ISA rung in force (None: numpy/BLAS); see the module docstring."""
    return _choose()[1]


def refusal(name: str) -> str | None:
    """Why the packed kernel of ISA ``name`` is not the one to use now (None when it is)."""
    rung, isa, why = _choose()
    if isa is None:
        return why
    if isa.name != name:
        return f"ISA rung '{rung}' runs {isa.kernel}" if rung else f"this host runs {isa.kernel}"
    return None


def _isa(isa: FmaIsa | str | None) -> FmaIsa:
    if isinstance(isa, FmaIsa):
        return isa
    if isa is None:
        chosen = select()
        if chosen is None:
            raise KernelError(f"packed fp32 GEMM: {_choose()[2]}")
        return chosen
    if isa not in FMA_ISAS:
        raise KernelError(f"packed fp32 GEMM: unknown ISA {isa!r}; expected one of {sorted(FMA_ISAS)}")
    return FMA_ISAS[isa]


@functools.lru_cache(maxsize=1)
def _act_digest() -> str:
    # NOTE: act_row and the expf it inlines are compiled into the drivers' cache, which cannot see them change
    h = hashlib.sha256()
    for name in ("eltwise_f32.py", "expf.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def drivers(isa: FmaIsa | str) -> ModuleType:
    """The generated driver module (``jit/f32_gemm.py``) of ``isa``: ``_gemm_driver``, ``_conv_driver``."""
    isa = _isa(isa)
    return cache.load_template("f32_gemm", {"ISA": isa.name, "LANES": isa.lanes, "MR": isa.mr, "NR": isa.nr,
                                            "KC": isa.kc, "PF": isa.pf,
                                            "THIN_MR": isa.thin[0] or 1, "THIN_NR": isa.thin[1] or isa.nr,
                                            "THIN_PF": isa.thin[2], "ACT_DIGEST": _act_digest()})


# -- Python API -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackedB:
    """B[K, N] packed for the kernel of ``isa``: ``data`` is float32 ``[ceil(N/nr)][K][nr]``, zero-padded in N;
    ``thin``: the narrow panels of the thin GEMM (few rows of A)."""

    data: np.ndarray
    k: int
    n: int
    isa: str
    nr: int
    layout: str = "f32_kn_panels"
    thin: bool = False

    @property
    def panels(self) -> int:
        return (self.n + self.nr - 1) // self.nr


#: rows of A for which :func:`thin_for` picks the thin GEMM. NOTE: measured on Sapphire Rapids (2 cores), K=1760
#: (a DeepSpeech2 LSTM/GRU step's ``h @ R^T``, R streamed from L3 every step): N=5280 12 rows 1.07 vs 1.21 ms, 8 rows
#: (N=7040) 1.08 vs 1.26. 16 rows (12 + 4) are level; below 8 the narrow tiles have too few accumulator chains to
#: hide the FMA latency once B is in cache (batch 1, hidden 256: 2.3x slower per step), so neither is taken
THIN_ROWS = (8, 12)


def thin_for(m: int | None, isa: FmaIsa | str | None = None) -> bool:
    """Whether a GEMM with ``m`` rows of A (None: unknown) should pack B for the thin kernel: few rows, so B's
    streaming bounds the time and 12-row tiles over narrow panels, read once in order, use it best."""
    isa = _isa(isa)
    return bool(isa.thin_nr) and isinstance(m, int) and THIN_ROWS[0] <= m <= THIN_ROWS[1]


def pack_b(b: np.ndarray, isa: FmaIsa | str | None = None, thin: bool = False) -> PackedB:
    """Pack a constant B[K, N] once (lowering time) into ``[npan][K][NR]`` panels for ``isa`` (default:
    :func:`select`; ``KernelError`` when the rung in force has no packed kernel). ``thin``: panels of the ISA's
    ``thin_nr`` columns for the thin GEMM (see :func:`thin_for`); any number of rows still runs on them."""
    isa = _isa(isa)
    b = np.asarray(b)
    if b.ndim != 2:
        raise KernelError(f"{isa.kernel}: B has shape {b.shape}; expected 2-D (K, N)")
    if thin and not isa.thin_nr:
        raise KernelError(f"{isa.kernel}: no thin GEMM on this ISA; pack with thin=False")
    k, n = b.shape
    nr = isa.thin_nr if thin else isa.nr
    npan = (n + nr - 1) // nr
    buf = np.zeros((k, npan * nr), np.float32)
    buf[:, :n] = b
    data = np.ascontiguousarray(buf.reshape(k, npan, nr).transpose(1, 0, 2)).reshape(-1)
    return PackedB(data, k, n, isa.name, nr, "f32_kn_thin" if thin else "f32_kn_panels", thin)


def blocking(m: int, n: int, k: int, isa: FmaIsa | str) -> tuple[int, int, int]:
    """(max rows per task, panels per task, row chunks): M is cut into ``nmc`` chunks of whole MR tiles, as even as
    possible, of at most 16*MR rows (the A block, mc x KC floats, stays in L2); a small odd chunk count is made even
    (prange deals tasks out in contiguous halves on two cores). The panels are split until there are >= 8 tasks, so
    short-M GEMMs still use every core.

    NOTE: the split never changes results: each row's accumulators and each panel's K-block order are the same
    whichever task computes them, so any thread count gives bit-identical output.
    """
    isa = _isa(isa)
    mr = isa.mr
    npan = (n + isa.nr - 1) // isa.nr
    ntile = -(-m // mr)
    nmc = -(-ntile // 16)
    if 1 < nmc < 16 and nmc % 2 and nmc < ntile:
        nmc += 1
    nmc = max(1, min(nmc, ntile))
    mc = -(-ntile // nmc) * mr
    pg = npan
    while nmc * ((npan + pg - 1) // pg) < 8 and pg > 1:
        pg = (pg + 1) // 2
    return mc, pg, nmc


def _fail(msg: str, node: str | None, op: str | None) -> KernelError:
    return KernelError(f"{msg}", node=node, op=op)


def bind(a: np.ndarray, packed: Any, out: np.ndarray, bias: np.ndarray | None = None, z: np.ndarray | None = None,
         act: int = 0, alpha: float = 0.0, beta: float = 0.0, *, node: str | None = None,
         op: str | None = None) -> tuple[Callable[..., Any], tuple]:
    """Check every argument and return the prebound step ``(fn, args)`` computing ``out = act(a @ B + bias + z)``.

    Raises:
        KernelError: wrong dtype/rank, B not packed by :func:`pack_b`, mismatched shapes, non-unit column stride,
        a host that cannot run B's ISA.
    """
    if not isinstance(packed, PackedB) or packed.isa not in FMA_ISAS:
        raise _fail(f"kernel 'gemm_f32_packed': B is {type(packed).__name__}, not pre-packed; pack it with pack_b() "
                    f"(layout 'f32_kn_panels')", node, op)
    isa = FMA_ISAS[packed.isa]
    kname = isa.kernel
    nr = isa.thin_nr if packed.thin else isa.nr
    if not nr or packed.nr != nr or packed.data.dtype != np.float32 \
            or packed.data.size != packed.panels * packed.k * nr:
        raise _fail(f"kernel '{kname}': packed B has layout nr={packed.nr}, {packed.data.size} {packed.data.dtype}; "
                    f"expected nr={nr}, {packed.panels * packed.k * nr} float32", node, op)
    if not _runnable(isa):  # e.g. a model compiled on a bigger host: refuse rather than die on an illegal instruction
        missing = sorted(f for f in isa.requires if not target.has(f))
        raise _fail(f"kernel '{kname}' needs CPU features {missing} this host lacks", node, op)
    for name, arr in (("A", a), ("out", out), ("Z", z)):
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
            what = f"{arr.dtype} {arr.ndim}-D" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise _fail(f"kernel '{kname}': {name} is {what}; expected a 2-D float32 array", node, op)
        if arr.size and (arr.shape[1] > 1 and arr.strides[1] != 4 or arr.strides[0] % 4):
            raise _fail(f"kernel '{kname}': {name} has strides {arr.strides}; expected unit column stride", node, op)
    m, k = a.shape
    if k != packed.k:
        raise _fail(f"kernel '{kname}': A is {a.shape} but packed B has K={packed.k}", node, op)
    if out.shape != (m, packed.n):
        raise _fail(f"kernel '{kname}': out is {out.shape}; expected {(m, packed.n)}", node, op)
    if z is not None and z.shape != out.shape:
        raise _fail(f"kernel '{kname}': Z is {z.shape}; expected {out.shape}", node, op)
    if not out.flags.writeable:
        raise _fail(f"kernel '{kname}': out is read-only", node, op)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.float32 or bias.size != packed.n:
            raise _fail(f"kernel '{kname}': bias is {bias.dtype} of {bias.size} values; expected {packed.n} float32",
                        node, op)
        bias = np.ascontiguousarray(bias.reshape(-1))
    args = (a, packed.data, k, packed.n, out, _EMPTY1 if bias is None else bias, bias is not None,
            _EMPTY2 if z is None else z, z is not None, int(act), float(alpha), float(beta))
    if m == 0:
        return (_nothing, ())
    if k == 0:
        return (_zero_then, (out, args))
    if packed.thin:
        # NOTE: the panels in (up to) 8 tasks, each a contiguous run of B: prange deals them out in contiguous halves
        return (drivers(isa)._thin_driver, args + (max(1, -(-packed.panels // 8)),))
    return (drivers(isa)._gemm_driver, args + blocking(m, packed.n, k, isa))


def conv_fusable(m: int, n: int, k: int, cg: int, isa: FmaIsa | str) -> bool:
    """Whether :func:`bind_conv` (im2col inside the GEMM tasks) beats a separate parallel im2col: the gathered
    runs are long enough to copy as vectors (>= one vector of channels, or a window of >= 9 taps whose rows merge
    into one run, e.g. the 7x7 stem on 3 channels), and each row block is gathered once (the panels are not split
    over tasks, which happens only for short M, where the separate im2col is cheap anyway). Measured on ResNet-50."""
    isa = _isa(isa)
    mc, pg, nmc = blocking(m, n, k, isa)
    return (cg >= isa.lanes or k // cg >= 9) and pg >= (n + isa.nr - 1) // isa.nr


def bind_conv(x: np.ndarray, packed: Any, out: np.ndarray, bias: np.ndarray | None, z: np.ndarray | None,
              act: int, alpha: float, beta: float, oh: int, ow: int, kh: int, kw: int,
              geo: tuple[int, int, int, int, int, int], *, node: str | None = None,
              op: str | None = None) -> tuple[Callable[..., Any], tuple]:
    """Prebound step for a group-1 NHWC conv with im2col fused into the GEMM tasks (``_conv_driver``):
    ``out (N*oh*ow, M) = act(im2col(x) @ B + bias + z)``, x (N, H, W, C), B packed from (kh*kw*C, M);
    ``geo`` = (sh, sw, dh, dw, pt, pl). Arguments are checked as in :func:`bind`."""
    kname = FMA_ISAS[packed.isa].kernel if isinstance(packed, PackedB) and packed.isa in FMA_ISAS \
        else "gemm_f32_packed"
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise _fail(f"kernel '{kname}': conv input must be a 4-D float32 NHWC array", node, op)
    if x.shape[3] > 1 and x.strides[3] != 4:
        raise _fail(f"kernel '{kname}': conv input has strides {x.strides}; expected unit channel stride", node, op)
    if isinstance(packed, PackedB) and packed.thin:
        raise _fail(f"kernel '{kname}': the conv driver reads B in {FMA_ISAS[packed.isa].nr}-column panels; "
                    f"this B is packed thin (nr={packed.nr})", node, op)
    n_img = x.shape[0]
    k = kh * kw * x.shape[3]
    # reuse bind's checks with a stand-in A of the im2col shape (never read)
    fake_a = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (n_img * oh * ow, k), (0, 4))
    fn, args = bind(fake_a, packed, out, bias, z, act, alpha, beta, node=node, op=op)
    mod = drivers(packed.isa)
    if fn is not mod._gemm_driver:  # M == 0 or K == 0: nothing to gather
        return fn, args
    xf = x.reshape(-1) if x.flags.c_contiguous else _EMPTY1
    return (mod._conv_driver, (x,) + args[1:] + (oh, ow, kw) + tuple(int(v) for v in geo) + (xf, kh))


def _nothing() -> None:
    """M == 0: no rows to compute."""


def _zero_then(out: np.ndarray, args: tuple) -> None:
    """K == 0: the product is zero; the epilogue still applies."""
    out[...] = 0.0
    a, bp, _, n, out_, bias, hb, z, hz, act, alpha, beta = args[:12]
    if hb:
        out_ += bias
    if hz:
        out_ += z
    if act:
        from quantgraph.kernels.fp32.eltwise_f32 import epilogue

        epilogue(out_, None, 0, None, act, alpha, beta)


def gemm(a: np.ndarray, packed: PackedB, out: np.ndarray | None = None, bias: np.ndarray | None = None,
         z: np.ndarray | None = None, act: int = 0, alpha: float = 0.0, beta: float = 0.0) -> np.ndarray:
    """``act(a @ B + bias + z)`` into ``out`` (allocated when None); see :func:`bind` for the checks."""
    if out is None:
        out = np.empty((a.shape[0] if isinstance(a, np.ndarray) and a.ndim == 2 else 0, packed.n
                        if isinstance(packed, PackedB) else 0), np.float32)
    fn, args = bind(a, packed, out, bias, z, act, alpha, beta)
    fn(*args)
    return out


def unpack_b(packed: PackedB) -> np.ndarray:
    """The dense B[K, N] back from its panels (slow twin / fallback paths)."""
    d = packed.data.reshape(packed.panels, packed.k, packed.nr).transpose(1, 0, 2).reshape(packed.k, -1)
    return np.ascontiguousarray(d[:, :packed.n])
