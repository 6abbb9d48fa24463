"""Primitive cache: counters, shape-independent keys, and disk reuse across processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from quantgraph import config
from quantgraph.kernels import Epilogue, cache_info, gemm_u8s8s32, pack_weights

ROOT = Path(__file__).resolve().parents[2]


def test_counters_hit_on_second_call_and_other_shapes():
    a = np.ones((5, 12), np.uint8)
    p = pack_weights(np.ones((12, 7), np.int8))
    gemm_u8s8s32(a, p, Epilogue(out_dtype="float32"))
    before = cache_info()
    gemm_u8s8s32(np.ones((33, 40), np.uint8), pack_weights(np.ones((40, 70), np.int8)), Epilogue(out_dtype="float32"))
    after = cache_info()
    assert after["hits"] == before["hits"] + 1
    assert after["misses"] == before["misses"]
    assert after["compiles"] == before["compiles"], "a new shape must not recompile"
    assert {"hits", "misses", "compiles", "disk_loads", "compile_seconds", "load_seconds"} <= set(after)


SCRIPT = textwrap.dedent("""
    import json, numpy as np
    from quantgraph.kernels import pack_weights, gemm_u8s8s32, Epilogue, cache_info
    a = np.arange(60, dtype=np.uint8).reshape(5, 12)
    p = pack_weights(np.ones((12, 40), np.int8), a_zero_point=3)
    out = gemm_u8s8s32(a, p, Epilogue(out_dtype="uint8", scale=0.5, activation="relu", out_scale=1.0))
    info = cache_info()
    info["sum"] = int(out.astype(np.int64).sum())
    print(json.dumps(info))
""")


def _run(cache_dir: str, isa: str) -> dict:
    env = dict(os.environ, QUANTGRAPH_CACHE_DIR=cache_dir, QUANTGRAPH_ISA=isa, PYTHONPATH=str(ROOT))
    env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_from_disk_without_compiling(tmp_path):
    isa = "portable"
    first = _run(str(tmp_path), isa)
    second = _run(str(tmp_path), isa)
    assert first["compiles"] >= 1 and first["disk_loads"] == 0
    assert second["compiles"] == 0 and second["disk_loads"] >= 1
    assert second["sum"] == first["sum"]
    assert second["cache_dir"].startswith(str(tmp_path))
    assert any((tmp_path / "kernels" / "__pycache__").glob("*.nbi"))


def test_cache_dir_follows_config(tmp_path):
    with config.override(cache_dir=str(tmp_path)):
        assert cache_info()["cache_dir"] == str(tmp_path / "kernels")


def test_registry_selects_entry_points():
    from quantgraph.errors import UnsupportedOpError
    from quantgraph.kernels import registry, target

    entry, isa = registry.select("QGemm", ("uint8", "int8", "int32"))
    assert entry.load() is gemm_u8s8s32 and isa == target.select_isa()  # the rung in force (QUANTGRAPH_ISA may set it)
    with config.override(isa="portable"):
        assert registry.select("QConv", ("int8", "int8", "int32"))[1] == "portable"
    assert registry.select("QMaxPool", ("uint8",))[1] == "portable"
    for k in registry.KERNELS:
        assert callable(k.load())
    import pytest

    with pytest.raises(UnsupportedOpError, match="no int kernel"):
        registry.select("QGemm", ("float32", "float32", "float32"), node="fc")
