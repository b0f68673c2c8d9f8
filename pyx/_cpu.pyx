# What the CPU (and the OS) supports, for cgru/_engine.py to choose a kernel build.

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int cgru_has(int feature) {
        __builtin_cpu_init();
        switch (feature) {
            case 0: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
            case 1: return __builtin_cpu_supports("avx512f")
                           && __builtin_cpu_supports("avx512dq")
                           && __builtin_cpu_supports("avx512bw")
                           && __builtin_cpu_supports("avx512vl")
                           && __builtin_cpu_supports("fma");
        }
        return 0;
    }
    #else
    static int cgru_has(int feature) { (void)feature; return 0; }
    #endif
    """
    int cgru_has(int feature)


def supports(str isa):
    """Whether this CPU and OS can run the kernel built for `isa` ('avx2' or 'avx512')."""
    if isa == "baseline":
        return True
    return bool(cgru_has({"avx2": 0, "avx512": 1}[isa]))
