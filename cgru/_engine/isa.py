"""Which compiled build of the kernel runs: the widest instruction set this CPU supports.

The same source (pyx/_gru.pxi) is compiled for the x86-64 baseline, AVX2+FMA and AVX-512; on
other machines only the baseline exists. CGRU_ISA=baseline|avx2|avx512 forces one (for tests
and comparisons); asking for one the CPU cannot run is an error, not a crash.
"""
import importlib
import os

from .. import _cpu

ISAS = ("avx512", "avx2", "baseline")   # preferred first


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
