"""``python -m quantgraph.bench compile``: cold and warm compile time of the kernel set a ResNet/BERT-style int8
model needs, each measured in a fresh process (cold: empty temporary cache dir; warm: the same dir again).

Kernel set (best ISA of the host): GEMM and im2col conv with the epilogue kinds int32, float32, u8+relu and
u8+residual+relu; depthwise conv u8+relu; max/avg pooling; add and concat with requantization.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from quantgraph.bench.common import parse_args

CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from quantgraph.kernels import (Epilogue, cache_info, pack_weights, gemm_u8s8s32, PoolSpec, max_pool, avg_pool,
                                add_requant, concat_requant)
from quantgraph.kernels.conv_int8 import ConvSpec, conv_u8s8, pack_conv_weights
a = np.ones((9, 40), np.uint8); p = pack_weights(np.ones((40, 70), np.int8))
x = np.ones((1, 6, 6, 8), np.uint8)
pc = pack_conv_weights(np.ones((40, 8, 3, 3), np.int8), ConvSpec((3, 3), pads=(1, 1, 1, 1)))
pd = pack_conv_weights(np.ones((8, 1, 3, 3), np.int8), ConvSpec((3, 3), pads=(1, 1, 1, 1), group=8))
kinds = [Epilogue(), Epilogue(out_dtype="float32", scale=0.1),
         Epilogue(out_dtype="uint8", scale=0.1, activation="relu")]
for e in kinds:
    gemm_u8s8s32(a, p, e)
    conv_u8s8(x, pc, e)
gemm_u8s8s32(a, p, Epilogue(out_dtype="uint8", scale=0.1, residual=np.ones((9, 70), np.uint8), activation="relu"))
conv_u8s8(x, pc, Epilogue(out_dtype="uint8", scale=0.1, residual=np.ones((1, 6, 6, 40), np.uint8),
                          activation="relu"))
conv_u8s8(x, pd, Epilogue(out_dtype="uint8", scale=0.1, activation="relu"))
max_pool(x, PoolSpec((3, 3), (2, 2), (1, 1, 1, 1)))
avg_pool(x, PoolSpec((2, 2), (2, 2)), x_scale=0.1, x_zero_point=0, out_scale=0.1, out_zero_point=0)
add_requant(x, x, a_scale=0.1, a_zero_point=0, b_scale=0.1, b_zero_point=0, out_scale=0.2, out_zero_point=0)
concat_requant([x, x], [0.1, 0.2], [0, 0], axis=3, out_scale=0.2, out_zero_point=0)
info = cache_info()
info["wall_seconds"] = time.perf_counter() - t0
print(json.dumps(info))
"""


def _child(cache_dir: str) -> dict:
    env = dict(os.environ, QUANTGRAPH_CACHE_DIR=cache_dir)
    env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    args = parse_args(argv, "compile", __doc__ or "")
    with tempfile.TemporaryDirectory(prefix="qg_compile_") as tmp:
        t0 = time.perf_counter()
        cold = _child(tmp)
        cold_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = _child(tmp)
        warm_wall = time.perf_counter() - t0
    for phase, info, wall in (("cold", cold, cold_wall), ("warm", warm, warm_wall)):
        rec = {"op": "compile", "phase": phase, "process_seconds": round(wall, 2),
               "kernel_seconds": round(info["wall_seconds"], 2), "compiles": info["compiles"],
               "disk_loads": info["disk_loads"], "compile_seconds": round(info["compile_seconds"], 2),
               "load_seconds": round(info["load_seconds"], 2)}
        if args.json:
            print(json.dumps(rec))
        else:
            print(f"{phase}: {rec['kernel_seconds']:.2f}s in the kernels ({rec['compiles']} compiles, "
                  f"{rec['compile_seconds']:.1f}s; {rec['disk_loads']} disk loads, {rec['load_seconds']:.2f}s); "
                  f"whole process incl. interpreter start {rec['process_seconds']:.2f}s")
    return 0
