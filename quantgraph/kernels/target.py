"""Host CPU features and the ISA ladder the int8 kernels and the packed fp32 GEMM dispatch on.

Features come from ``llvmlite.binding.get_host_cpu_features()`` (the same source LLVM uses when Numba compiles
for the host), so a path is only chosen when the code LLVM emits for it can run here. ``QUANTGRAPH_ISA`` (read by
``quantgraph.config``; tests use ``config.override(isa=...)``) forces one rung of the ladder; forcing a rung the host
cannot execute raises ``KernelError`` instead of dying on an illegal instruction. The packed fp32 GEMM follows the
rung's vector width (``kernels/fp32/gemm_f32_packed.py``: 16 lanes -> its AVX-512 kernel, 8 -> AVX2, 0 -> none).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from quantgraph import config
from quantgraph.errors import KernelError


@dataclass(frozen=True)
class Isa:
    """One rung of the ladder: its name, the LLVM host features it needs and its vector width in int32 lanes."""

    name: str
    requires: tuple[str, ...]
    lanes: int
    doc: str
    auto: bool = True  # chosen without QUANTGRAPH_ISA; False = only when forced


# NOTE: best first. Every rung computes the same int32 results (see intrinsics/x86.py for how each one avoids the
# 16-bit saturation of vpmaddubsw).
LADDER: tuple[Isa, ...] = (
    Isa("amx", ("amx-tile", "amx-int8", "avx512f", "avx512bw", "avx512vnni"), 16,
        "tdpbusd tile strips for int8 GEMM/conv (weights in the amx layout); avx512vnni for int16 and depthwise"),
    Isa("avx512vnni", ("avx512f", "avx512bw", "avx512vnni"), 16, "vpdpbusd/vpdpwssd on zmm"),
    Isa("avxvnni", ("avx2", "avxvnni"), 8, "vpdpbusd/vpdpwssd on ymm (VEX AVX-VNNI, or EVEX with AVX512VL)"),
    Isa("avx512bw", ("avx512f", "avx512bw"), 16, "vpmaddubsw+vpmaddwd on zmm, exact 7+1-bit split"),
    Isa("avx2", ("avx2",), 8, "vpmaddubsw+vpmaddwd on ymm, exact 7+1-bit split"),
    Isa("portable", (), 0, "plain Numba loops; any CPU"),
)
ISAS: dict[str, Isa] = {isa.name: isa for isa in LADDER}


@functools.lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """The LLVM feature names the host CPU has (e.g. ``avx512vnni``, ``avxvnni``)."""
    import llvmlite.binding as llvm

    feats = llvm.get_host_cpu_features()
    return frozenset(name for name, on in feats.items() if on)


@functools.lru_cache(maxsize=1)
def host_cpu_name() -> str:
    import llvmlite.binding as llvm

    return str(llvm.get_host_cpu_name())


@functools.lru_cache(maxsize=1)
def amx_permitted() -> bool:
    """Ask Linux for the AMX tile-data state (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``), once.

    Without this grant the first ``tileloadd`` kills the process, so the ``amx`` rung exists only when it succeeds.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(158, 0x1023, 18) == 0  # SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    except (OSError, AttributeError):
        return False


def has(feature: str) -> bool:
    """True when the host has the LLVM feature ``feature`` or, for an ISA name, every feature that rung needs."""
    if feature in ISAS:
        ok = set(ISAS[feature].requires) <= host_features()
        return ok and (feature != "amx" or amx_permitted())
    return feature in host_features()


@functools.lru_cache(maxsize=1)
def available_isas() -> tuple[str, ...]:
    """Names of the rungs this host can run, best first (always ends with ``portable``)."""
    return tuple(isa.name for isa in LADDER if has(isa.name))


def select_isa(kernel: str = "int8 kernels") -> str:
    """The ISA to use now: the forced one (``config.isa``) if set and runnable, else the best available."""
    forced = config.get().isa
    if forced:
        name = forced.strip().lower()
        if name not in ISAS:
            raise KernelError(f"{kernel}: unknown ISA {forced!r}; expected one of {sorted(ISAS)}")
        if not has(name):
            missing = sorted(set(ISAS[name].requires) - host_features())
            raise KernelError(f"{kernel}: forced ISA {name!r} needs CPU features {missing} this host lacks; "
                              f"available: {list(available_isas())}")
        return name
    return default_isa()


@functools.lru_cache(maxsize=1)
def default_isa() -> str:
    """The best rung chosen automatically (rungs with ``auto=False`` need ``QUANTGRAPH_ISA``)."""
    return next(name for name in available_isas() if ISAS[name].auto)


def features_key() -> str:
    """A stable string of the features that matter for code generation (part of the primitive cache key)."""
    return host_cpu_name() + ":" + ",".join(sorted(host_features()))
