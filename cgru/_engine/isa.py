"""Which compiled build of the kernel runs: the widest instruction set this CPU supports; and
what the CPU offers beyond it (cpu_features, cpu_model), for `cgru info`.

The same source (pyx/_gru.pxi) is compiled for the x86-64 baseline, AVX2+FMA and AVX-512; on
other machines only the baseline exists. CGRU_ISA=baseline|avx2|avx512 forces one (for tests
and comparisons); asking for one the CPU cannot run is an error, not a crash.
"""
import importlib
import os
import platform

from .. import _cpu

ISAS = ("avx512", "avx2", "baseline")   # preferred first


def cpu_features(amx=True):
    """{name: bool} of the instruction sets that matter to cgru, by Linux's /proc/cpuinfo names:
    avx2, fma, avx512f, avx512dq, avx512bw, avx512vl, avx512_bf16, avx512_vnni, avx_vnni
    (AVX-VNNI, the VEX form), amx_tile, amx_bf16, amx_int8. True where the CPU has it (CPUID)
    and the OS saves its registers (XCR0); AMX also needs this process's permission for tile
    data, which on Linux this asks for once (refused: False). amx=False: the amx_* entries
    False, without asking. Off x86 every entry is False."""
    return _cpu.features(amx)


def cpu_model():
    """The processor's name: CPUID's brand string on x86, else what the platform says."""
    name = _cpu.brand()
    if not name and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    name = value.strip()
                    break
    return name or platform.processor() or platform.machine() or "unknown"


def available_isas():
    """The kernel builds present in this installation that this CPU can run, best first."""
    found = []
    for isa in ISAS:
        # Ask the CPU first: importing a build the CPU cannot run may already execute its
        # instructions (module set-up code compiled with -mavx512f crashed an AVX2-only AMD
        # EPYC with SIGILL).
        if not _cpu.supports(isa):
            continue
        try:
            importlib.import_module(f"cgru._gru_{isa}")
        except ImportError:
            continue
        found.append(isa)
    return found


def load(isa=None):
    """The kernel module for `isa` (default: CGRU_ISA, else the best available)."""
    isa = isa or os.environ.get("CGRU_ISA") or available_isas()[0]
    if isa not in ISAS:
        raise ValueError(f"CGRU_ISA must be one of {', '.join(ISAS)}, got {isa!r}")
    if not _cpu.supports(isa):
        raise RuntimeError(f"this CPU cannot run the {isa} build of cgru's kernel")
    return importlib.import_module(f"cgru._gru_{isa}")


kernel = load()
