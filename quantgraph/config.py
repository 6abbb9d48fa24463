"""Environment knobs, read in one place.

``QUANTGRAPH_DEBUG``      0/1/2: extra diagnostics (2 prints the nearest miss of each rewrite rule)
``QUANTGRAPH_VERIFY``     1: run ``verify()`` after every pass (always on in tests)
``QUANTGRAPH_STRICT``     1: an exception raised inside a rewrite rule is a ``PassError`` (always on in tests);
                          otherwise that rewrite is skipped with a logged warning and the model still compiles
``QUANTGRAPH_DUMP_DIR``   directory for per-pass graph dumps
``QUANTGRAPH_CACHE_DIR``  on-disk kernel cache (default: ~/.cache/quantgraph)
``QUANTGRAPH_ISA``        force a kernel ISA rung (e.g. ``portable``, ``avx2``, ``avx512bw``, ``avx512vnni``) for the
                          int8 kernels and the packed fp32 GEMM (see ``kernels/target.py``)
``QUANTGRAPH_THREADS``    number of kernel threads (default: all cores)
``QUANTGRAPH_PROGRESS``   1: a progress bar while kernels are JIT-compiled for the first time (the CLI and the demo
                          turn it on unless ``-q``)

Tests use :func:`override` rather than touching ``os.environ``.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, fields, replace
from typing import Iterator


@dataclass(frozen=True)
class Config:
    debug: int = 0
    verify: bool = False
    strict: bool = False
    dump_dir: str | None = None
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "quantgraph")
    isa: str | None = None
    threads: int | None = None
    progress: bool = False


def _flag(value: str | None) -> bool:
    return (value or "0") not in ("", "0", "false", "False")


def _from_env() -> Config:
    env = os.environ
    base = Config()
    threads = env.get("QUANTGRAPH_THREADS")
    return Config(
        debug=int(env.get("QUANTGRAPH_DEBUG", "0") or 0),
        verify=_flag(env.get("QUANTGRAPH_VERIFY")),
        strict=_flag(env.get("QUANTGRAPH_STRICT")),
        dump_dir=env.get("QUANTGRAPH_DUMP_DIR") or None,
        cache_dir=env.get("QUANTGRAPH_CACHE_DIR") or base.cache_dir,
        isa=env.get("QUANTGRAPH_ISA") or None,
        threads=int(threads) if threads else None,
        progress=_flag(env.get("QUANTGRAPH_PROGRESS")),
    )


_current = _from_env()


def get() -> Config:
    """The configuration in force."""
    return _current


@contextlib.contextmanager
def override(**changes: object) -> Iterator[Config]:
    """Temporarily change knobs: ``with config.override(isa="portable"): ...``."""
    global _current
    names = {f.name for f in fields(Config)}
    unknown = set(changes) - names
    if unknown:
        raise TypeError(f"unknown config knob(s) {sorted(unknown)}; known: {sorted(names)}")
    saved = _current
    _current = replace(_current, **changes)  # type: ignore[arg-type]
    try:
        yield _current
    finally:
        _current = saved
