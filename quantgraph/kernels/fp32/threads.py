"""Thread settings shared by Numba's parallel loops and numpy's BLAS, so the two pools do not oversubscribe."""
from __future__ import annotations

import os

_configured: int | None = None


def configure_threads(threads: int | None = None) -> int:
    """Use ``threads`` (default: all cores) for Numba prange loops; returns the count in force.

    NOTE: OpenBLAS sizes its pool at import from OPENBLAS_NUM_THREADS (default: all cores). Both pools use the same
    cores and never run at the same time (steps are sequential), but GNU OpenMP's worker threads spin after each
    prange loop and starve OpenBLAS's threads (measured 10x slower ResNet-50 on a loaded 2-core machine), so unless
    the user chose a layer (NUMBA_THREADING_LAYER) we ask for the "workqueue" layer, whose workers sleep. The layer
    is process-wide and fixed by the first parallel launch, so this must run before any prange kernel.
    """
    global _configured
    import numba

    if _configured is None and "NUMBA_THREADING_LAYER" not in os.environ:
        try:
            from numba.np.ufunc import parallel

            if not getattr(parallel, "_is_initialized", False):
                numba.config.THREADING_LAYER = "workqueue"
        except ImportError:  # pragma: no cover - numba internals moved
            pass

    want = threads or numba.config.NUMBA_NUM_THREADS
    want = max(1, min(int(want), numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1))
    if _configured != want:
        numba.set_num_threads(want)
        _configured = want
    return want
