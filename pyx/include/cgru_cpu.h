/* What the CPU (and the OS) supports, for cgru/_engine.py to choose a kernel build: in C for
   GCC and Clang's __builtin_cpu_supports, which asks CPUID and the OS (XSAVE state) at once. */

#ifndef CGRU_CPU_H
#define CGRU_CPU_H

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

#endif  /* CGRU_CPU_H */
