"""A progress bar over first-time JIT compiles: the first run of a model on a fresh machine compiles its kernels
(about 10 s for the bundled digits model), which would otherwise pass in silence.

Numba announces each real compile (not a load from its disk cache) as a ``numba:compile`` event; while
:func:`jit_progress` is active a listener counts the outermost ones on a tqdm bar, created at the first compile so
that warm runs print nothing. Enabled by ``config.progress`` (``QUANTGRAPH_PROGRESS=1``; the CLI and the demo turn
it on unless ``-q``).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Iterator

from quantgraph import config

_active = threading.local()


class _Listener:
    """Counts outermost ``numba:compile`` events on a lazily created bar."""

    def __init__(self) -> None:
        self.depth = 0
        self.bar: Any = None
        self.lock = threading.Lock()

    def notify(self, event: Any) -> None:
        with self.lock:
            if event.is_start:
                self.depth += 1
                if self.depth == 1:
                    if self.bar is None:
                        from tqdm import tqdm

                        self.bar = tqdm(desc="JIT-compiling kernels (first run only)", unit="kernel",
                                        file=sys.stderr, leave=False, dynamic_ncols=True)
                    name = getattr(event.data.get("dispatcher"), "__name__", "")
                    self.bar.set_postfix_str(str(name), refresh=True)
            else:
                self.depth = max(0, self.depth - 1)
                if self.depth == 0 and self.bar is not None:
                    self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def jit_progress(enabled: bool | None = None) -> Iterator[None]:
    """Show a bar while Numba compiles inside this block (nested blocks share the outer bar)."""
    on = config.get().progress if enabled is None else enabled
    if not on or getattr(_active, "listener", None) is not None:
        yield
        return
    from numba.core import event

    listener = _Listener()

    class _Adapter(event.Listener):  # numba's abstract base wants on_start/on_end
        def on_start(self, ev: Any) -> None:
            listener.notify(ev)

        def on_end(self, ev: Any) -> None:
            listener.notify(ev)

    adapter = _Adapter()
    event.register("numba:compile", adapter)
    _active.listener = listener
    try:
        yield
    finally:
        _active.listener = None
        event.unregister("numba:compile", adapter)
        listener.close()
