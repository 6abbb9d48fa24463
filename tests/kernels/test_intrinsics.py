"""Every llvm.x86 declaration builds on the installed llvmlite and computes the right thing on this host."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from quantgraph.kernels.intrinsics.x86 import ISA_DOT, decls, dot_probe, tile_kernel
from tests.kernels.conftest import host_has, requires

X86_ISAS = [name for name in ISA_DOT]


def test_declarations_parse_and_verify():
    """Each table entry is declared and called in a module that LLVM verifies (catches operand-type drift)."""
    import llvmlite.binding as llvm
    from llvmlite import ir

    for key, d in decls().items():
        mod = ir.Module(name=key)
        fn = d.function(mod)
        wrapper = ir.Function(mod, ir.FunctionType(fn.function_type.return_type, fn.function_type.args), "w")
        b = ir.IRBuilder(wrapper.append_basic_block())
        b.ret(b.call(fn, wrapper.args))
        llvm.parse_assembly(str(mod)).verify()


def _probe_ref(kind, acc, a32, bvec):
    if kind == "u8s8":
        a = np.frombuffer(np.int32(a32).tobytes(), np.uint8).astype(np.int64)
        b = bvec.view(np.int8).reshape(-1, 4).astype(np.int64)
    else:
        a = np.frombuffer(np.int32(a32).tobytes(), np.int16).astype(np.int64)
        b = bvec.view(np.int16).reshape(-1, 2).astype(np.int64)
    return (acc.astype(np.int64) + b @ a).astype(np.int32)


@pytest.mark.parametrize("isa", X86_ISAS)
@pytest.mark.parametrize("kind", ["u8s8", "s16s16"])
def test_dot_step_matches_numpy(isa, kind):
    if not host_has(isa):
        pytest.skip(f"host cannot run {isa}")
    probe = dot_probe(isa, kind)

    @njit
    def run(acc, a32, b):
        probe(acc, a32, b)

    lanes = ISA_DOT[isa][0]
    rng = np.random.default_rng(0)
    for a32 in (np.int32(-1), np.int32(0x7F80FF01), np.int32(rng.integers(-2**31, 2**31))):
        acc = rng.integers(-2**31, 2**31, lanes).astype(np.int32)
        acc[0] = 2**31 - 1  # wraps
        b = rng.integers(-2**31, 2**31, lanes).astype(np.int32)
        b[1] = np.int32(-2139062144)  # 0x80808080: all -128 bytes / -32640 words
        want = _probe_ref(kind, acc, a32, b)
        run(acc, a32, b)
        assert np.array_equal(acc, want), isa


@requires("avx512vnni")
def test_tile_kernel_vnni_512():
    t8 = tile_kernel("avx512vnni", "u8s8", 8)

    @njit
    def run(a, b, kg, c):
        t8(a, 0, 12, b, 0, kg, c, 0, 32)

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, 8 * 12).astype(np.uint8)
    bm = rng.integers(-128, 128, (12, 32)).astype(np.int8)
    bp = np.ascontiguousarray(bm.reshape(3, 4, 32).transpose(0, 2, 1)).reshape(-1)
    c = np.zeros(8 * 32, np.int32)
    run(a, bp, 3, c)
    want = a.reshape(8, 12).astype(np.int32) @ bm.astype(np.int32)
    assert np.array_equal(c.reshape(8, 32), want)
