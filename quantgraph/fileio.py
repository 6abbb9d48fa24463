"""Atomic file writes: a temporary file beside the target, fsynced, then renamed over it, so a reader (or a crash)
never sees half a file."""
from __future__ import annotations

import io
import os
import tempfile

import numpy as np

from quantgraph.errors import QuantgraphError


def umask_mode(directory: bool = False) -> int:
    """The permissions a plain ``open``/``mkdir`` would give under the process umask (mkstemp and mkdtemp make
    0600/0700, which would leave a saved model unreadable to the service that deploys it)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write(path: str | os.PathLike, data: bytes) -> str:
    """Write one file atomically (temp file beside it, fsync, rename); returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> str:
    """``np.savez`` to ``path`` atomically, refusing object arrays (they would be pickled)."""
    bad = [k for k, a in arrays.items() if a.dtype == object]
    if bad:
        raise QuantgraphError(f"cannot save {bad[0]!r}: object arrays would need pickle")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue())
