# What the CPU (and the OS) supports, for cgru/_engine/isa.py: which kernel build may run, and
# the reduced-precision instructions `cgru info` reports. The C (CPUID, XCR0, Linux's AMX
# permission) is in pyx/include/cgru_cpu.h.

cdef extern from "cgru_cpu.h":
    enum:
        CGRU_CPU_AVX2
        CGRU_CPU_FMA
        CGRU_CPU_AVX512F
        CGRU_CPU_AVX512DQ
        CGRU_CPU_AVX512BW
        CGRU_CPU_AVX512VL
        CGRU_CPU_AVX512_BF16
        CGRU_CPU_AVX512_VNNI
        CGRU_CPU_AVX_VNNI
        CGRU_CPU_AMX_TILE
        CGRU_CPU_AMX_BF16
        CGRU_CPU_AMX_INT8
    int cgru_cpu_features(int with_amx)
    int cgru_amx_permitted()
    void cgru_cpu_brand(char *out)

# Linux's /proc/cpuinfo names, in the order `cgru info` lists them
FEATURES = {
    "avx2": CGRU_CPU_AVX2,
    "fma": CGRU_CPU_FMA,
    "avx512f": CGRU_CPU_AVX512F,
    "avx512dq": CGRU_CPU_AVX512DQ,
    "avx512bw": CGRU_CPU_AVX512BW,
    "avx512vl": CGRU_CPU_AVX512VL,
    "avx512_bf16": CGRU_CPU_AVX512_BF16,
    "avx512_vnni": CGRU_CPU_AVX512_VNNI,
    "avx_vnni": CGRU_CPU_AVX_VNNI,
    "amx_tile": CGRU_CPU_AMX_TILE,
    "amx_bf16": CGRU_CPU_AMX_BF16,
    "amx_int8": CGRU_CPU_AMX_INT8,
}
# What each kernel build (setup.py's flags) needs
_BUILDS = {"avx2": CGRU_CPU_AVX2 | CGRU_CPU_FMA,
           "avx512": (CGRU_CPU_AVX512F | CGRU_CPU_AVX512DQ | CGRU_CPU_AVX512BW
                      | CGRU_CPU_AVX512VL | CGRU_CPU_FMA)}
_found = {}     # with_amx -> bits: CPUID and XCR0 do not change, and the AMX request is once


cdef int _bits(bint with_amx):
    if with_amx not in _found:
        _found[with_amx] = cgru_cpu_features(with_amx)
    return _found[with_amx]


def features(bint amx=True):
    """{name: bool} for every feature in FEATURES: the CPU has it and the OS enables it. amx:
    also find out about AMX, which on Linux asks the kernel for this process's permission to
    use tile data (once; refused: AMX reported absent); False reports the amx_* entries False
    without asking."""
    cdef int bits = _bits(amx)
    return {name: bool(bits & bit) for name, bit in FEATURES.items()}


def amx_permitted():
    """Whether this process may use AMX tile data: on Linux, asks the kernel for it (refused on
    a CPU or kernel without AMX); on other x86 systems True; off x86 False. features() asks only
    where the CPU has AMX; this asks anyway (for tests)."""
    return bool(cgru_amx_permitted())


def brand():
    """The processor's name from CPUID ('' off x86 or where the CPU has none)."""
    cdef char text[49]
    cgru_cpu_brand(text)
    return text.decode("ascii", "replace").strip()


def supports(str isa):
    """Whether this CPU and OS can run the kernel built for `isa` ('baseline', 'avx2' or
    'avx512')."""
    if isa == "baseline":
        return True
    need = _BUILDS[isa]
    return (_bits(False) & need) == need
