"""The installed package must carry every file the code reads at run time (not only importable modules)."""
from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _package_data_globs() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [g.strip() for g in cfg["options.package_data"]["quantgraph"].split(",") if g.strip()]


def test_runtime_files_are_package_data():
    """Kernel templates (``kernels/jit``, a folder without ``__init__.py`` that packages=find: skips) and bundled
    models are read by path; a wheel without them fails at the first int8 kernel call."""
    pkg = ROOT / "quantgraph"
    models = [p for p in (pkg / "models").iterdir() if p.suffix in (".onnx", ".npz")]
    needed = list((pkg / "kernels" / "jit").glob("*.py")) + models
    assert needed, "expected kernel templates and bundled models"
    globs = _package_data_globs()
    missing = [str(p.relative_to(pkg)) for p in needed
               if not any(fnmatch.fnmatch(str(p.relative_to(pkg)), g) for g in globs)]
    assert not missing, f"not in setup.cfg [options.package_data]: {missing}"
