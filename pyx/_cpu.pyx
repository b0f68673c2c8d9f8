# What the CPU (and the OS) supports, for cgru/_engine.py to choose a kernel build; the C
# (compiler builtins) is in pyx/include/cgru_cpu.h.

cdef extern from "cgru_cpu.h":
    int cgru_has(int feature)


def supports(str isa):
    """Whether this CPU and OS can run the kernel built for `isa` ('avx2' or 'avx512')."""
    if isa == "baseline":
        return True
    return bool(cgru_has({"avx2": 0, "avx512": 1}[isa]))
