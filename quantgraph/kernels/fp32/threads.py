"""Thread settings shared by Numba's parallel loops and numpy's BLAS, so the two pools never fight over cores.

Measured on the 2-core CI machine (``python -m quantgraph.bench model --nhwc``, ResNet-50 NHWC batch 1):

    numba workqueue layer, OpenBLAS 2 threads    62 ms
    numba OpenMP layer,    OpenBLAS 2 threads    51 ms  (ResNet-50 NCHW: 424 ms, BERT: 64 ms: OpenMP workers
                                                         spin after each prange loop and starve OpenBLAS's threads)
    numba OpenMP layer,    OpenBLAS 1 thread     49 ms  (NCHW 94 ms, BERT 15 ms)

So compiled models use the OpenMP layer when numba has it (the workqueue layer otherwise) and run with OpenBLAS
limited to one thread (``single_threaded_blas``): every heavy GEMM of a plan is our own parallel kernel, and the
few BLAS calls left (attention scores, small or non-constant matmuls) are cheap enough single-threaded.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from typing import Callable, Iterator

log = logging.getLogger(__name__)
_configured: int | None = None
# (setter, getter) of every OpenBLAS loaded in this process; None until looked up
_blas: list[tuple[Callable[[int], None], Callable[[], int]]] | None = None
_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
            ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))


def configure_threads(threads: int | None = None) -> int:
    """Use ``threads`` (default: all cores) for Numba prange loops; returns the count in force.

    The threading layer is process-wide and fixed by the first parallel launch, so this runs before any prange
    kernel; a layer chosen by the user (NUMBA_THREADING_LAYER) is kept.
    """
    global _configured
    import numba

    if _configured is None and "NUMBA_THREADING_LAYER" not in os.environ:
        try:
            from numba.np.ufunc import parallel

            if not getattr(parallel, "_is_initialized", False):
                numba.config.THREADING_LAYER = "omp" if _has_omp() else "workqueue"
        except ImportError:  # pragma: no cover - numba internals moved
            pass

    want = threads or numba.config.NUMBA_NUM_THREADS
    want = max(1, min(int(want), numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1))
    if _configured != want:
        numba.set_num_threads(want)
        _configured = want
    return want


def _has_omp() -> bool:
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        return False
    return True


def _openblas() -> list[tuple[Callable[[int], None], Callable[[], int]]]:
    """Thread setters/getters of the OpenBLAS libraries this process has loaded (numpy's, usually one)."""
    global _blas
    if _blas is not None:
        return _blas
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = {p for p in (line.split()[-1] for line in f) if "openblas" in p.lower() and ".so" in p}
    except OSError:  # not Linux: leave BLAS alone
        paths = set()
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                found.append((setter, getter))
                break
    if not found:
        log.debug("no OpenBLAS thread control found; BLAS keeps its own thread count")
    _blas = found
    return found


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the body with OpenBLAS on one thread, restoring the caller's setting afterwards."""
    libs = _openblas()
    saved = [get() for _, get in libs]
    for (setter, _), n in zip(libs, saved):
        if n != 1:
            setter(1)
    try:
        yield
    finally:
        for (setter, _), n in zip(libs, saved):
            if n != 1:
                setter(n)
