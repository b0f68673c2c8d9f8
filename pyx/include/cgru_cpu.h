/* What the CPU and the OS support, for cgru/_engine/isa.py: which kernel build may run, and the
   reduced-precision instructions that `cgru info` reports. CPUID is asked directly (<cpuid.h>,
   GCC and Clang alike) rather than through __builtin_cpu_supports, which older compilers do not
   know every name for (avx512bf16, avxvnni, amx-*).

   An instruction set counts only when the OS also saves its registers across context switches
   (XCR0, read with xgetbv once CPUID says OSXSAVE): YMM state (bits 1, 2) for AVX2, FMA and
   AVX-VNNI; opmask and ZMM state (bits 5, 6, 7) for AVX-512; tile configuration and tile data
   (bits 17, 18) for AMX. Linux additionally hands out AMX tile data per process: cgru asks for
   it (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) only when CPUID and XCR0 both say
   AMX is there, and only when asked for the AMX bits; a refused request (an old kernel, a
   sigaltstack too small for the tile state, a seccomp filter) reports AMX as absent.

   Nothing here executes an instruction beyond the x86-64 baseline (xgetbv only after OSXSAVE),
   so it is safe on every x86 CPU; elsewhere every feature is reported absent. */

#ifndef CGRU_CPU_H
#define CGRU_CPU_H

/* one bit per feature: cgru_cpu_features()'s result, named in pyx/_cpu.pyx */
enum {
    CGRU_CPU_AVX2 = 1 << 0,
    CGRU_CPU_FMA = 1 << 1,
    CGRU_CPU_AVX512F = 1 << 2,
    CGRU_CPU_AVX512DQ = 1 << 3,
    CGRU_CPU_AVX512BW = 1 << 4,
    CGRU_CPU_AVX512VL = 1 << 5,
    CGRU_CPU_AVX512_BF16 = 1 << 6,
    CGRU_CPU_AVX512_VNNI = 1 << 7,
    CGRU_CPU_AVX_VNNI = 1 << 8,
    CGRU_CPU_AMX_TILE = 1 << 9,
    CGRU_CPU_AMX_BF16 = 1 << 10,
    CGRU_CPU_AMX_INT8 = 1 << 11,
    CGRU_CPU_AMX = CGRU_CPU_AMX_TILE | CGRU_CPU_AMX_BF16 | CGRU_CPU_AMX_INT8
};

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>

#if defined(__linux__)
#include <sys/syscall.h>
long syscall(long number, ...);   /* <unistd.h>'s, which declares it only for _GNU_SOURCE */
#endif

#define CGRU_BIT(word, n) (((word) >> (n)) & 1u)

/* regs = CPUID(leaf, subleaf) (eax, ebx, ecx, edx); 0 and all zero when the CPU has no such
   leaf (__get_cpuid_count is GCC 7+ only: the max-leaf check and __cpuid_count are older) */
static inline int cgru_cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4]) {
    regs[0] = regs[1] = regs[2] = regs[3] = 0;
    if ((unsigned)__get_cpuid_max(leaf & 0x80000000u, 0) < leaf)
        return 0;
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
    return 1;
}

/* XCR0: the register state the OS saves; 0 without OSXSAVE (then xgetbv would fault). The
   instruction by its bytes: no -mxsave needed, and old assemblers know it too. */
static inline unsigned long long cgru_xcr0(void) {
    unsigned regs[4], lo, hi;
    if (!cgru_cpuid(1, 0, regs) || !CGRU_BIT(regs[2], 27))
        return 0;
    __asm__ __volatile__(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

#define CGRU_XCR0_YMM 0x6ull            /* SSE and AVX state */
#define CGRU_XCR0_ZMM 0xe6ull           /* and opmask, ZMM_Hi256, Hi16_ZMM */
#define CGRU_XCR0_TILES 0x60000ull      /* XTILECFG (17), XTILEDATA (18) */
#define CGRU_XFEATURE_XTILEDATA 18
#ifndef ARCH_GET_XCOMP_PERM
#define ARCH_GET_XCOMP_PERM 0x1022
#endif
#ifndef ARCH_REQ_XCOMP_PERM
#define ARCH_REQ_XCOMP_PERM 0x1023
#endif

/* Whether this process may use AMX tile data. Linux (5.16 and later) grants it on request, once
   per process; an older kernel answers the request with EINVAL (and has not enabled the tile
   state in XCR0 either). Other systems enable it for every process with XCR0. */
static inline int cgru_amx_permitted(void) {
#if defined(__linux__)
#if defined(SYS_arch_prctl)
    unsigned long long permitted = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &permitted) == 0
            && CGRU_BIT(permitted, CGRU_XFEATURE_XTILEDATA))
        return 1;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, CGRU_XFEATURE_XTILEDATA) != 0)
        return 0;
    permitted = 0;
    return syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &permitted) == 0
           && CGRU_BIT(permitted, CGRU_XFEATURE_XTILEDATA);
#else
    return 0;           /* no arch_prctl to ask with: the tile data may not be ours */
#endif
#else
    return 1;
#endif
}

/* The CGRU_CPU_* bits of the features this CPU has and the OS enables. with_amx: also the AMX
   bits, asking Linux for the tile data permission when the hardware has AMX (the request is the
   only side effect here, which is why it happens only when asked). */
static inline int cgru_cpu_features(int with_amx) {
    unsigned l1[4], l7[4], l7s1[4];
    unsigned long long xcr0;
    int f = 0;
    if (!cgru_cpuid(1, 0, l1))
        return 0;
    cgru_cpuid(7, 0, l7);
    if (l7[0] >= 1)                 /* leaf 7's highest subleaf */
        cgru_cpuid(7, 1, l7s1);
    else
        l7s1[0] = l7s1[1] = l7s1[2] = l7s1[3] = 0;
    xcr0 = cgru_xcr0();
    if ((xcr0 & CGRU_XCR0_YMM) == CGRU_XCR0_YMM && CGRU_BIT(l1[2], 28)) {     /* AVX */
        if (CGRU_BIT(l7[1], 5)) f |= CGRU_CPU_AVX2;
        if (CGRU_BIT(l1[2], 12)) f |= CGRU_CPU_FMA;
        if (CGRU_BIT(l7s1[0], 4)) f |= CGRU_CPU_AVX_VNNI;
        if ((xcr0 & CGRU_XCR0_ZMM) == CGRU_XCR0_ZMM && CGRU_BIT(l7[1], 16)) {   /* AVX512F */
            f |= CGRU_CPU_AVX512F;
            if (CGRU_BIT(l7[1], 17)) f |= CGRU_CPU_AVX512DQ;
            if (CGRU_BIT(l7[1], 30)) f |= CGRU_CPU_AVX512BW;
            if (CGRU_BIT(l7[1], 31)) f |= CGRU_CPU_AVX512VL;
            if (CGRU_BIT(l7s1[0], 5)) f |= CGRU_CPU_AVX512_BF16;
            if (CGRU_BIT(l7[2], 11)) f |= CGRU_CPU_AVX512_VNNI;
        }
    }
    if (with_amx && CGRU_BIT(l7[3], 24) && (xcr0 & CGRU_XCR0_TILES) == CGRU_XCR0_TILES
            && cgru_amx_permitted()) {
        f |= CGRU_CPU_AMX_TILE;
        if (CGRU_BIT(l7[3], 22)) f |= CGRU_CPU_AMX_BF16;
        if (CGRU_BIT(l7[3], 25)) f |= CGRU_CPU_AMX_INT8;
    }
    return f;
}

/* The processor's brand string (CPUID 0x80000002-4), 48 characters and a NUL, leading spaces
   removed; empty when the CPU has none. */
static inline void cgru_cpu_brand(char out[49]) {
    unsigned regs[4];
    char text[49];
    int i, start = 0;
    out[0] = '\0';
    for (i = 0; i < 3; i++) {
        if (!cgru_cpuid(0x80000002u + i, 0, regs))
            return;
        __builtin_memcpy(text + 16 * i, regs, 16);
    }
    text[48] = '\0';
    while (text[start] == ' ')
        start++;
    for (i = 0; text[start + i]; i++)
        out[i] = text[start + i];
    out[i] = '\0';
}

#else   /* not x86, or a compiler without <cpuid.h>: nothing of the above exists */
static inline int cgru_cpu_features(int with_amx) { (void)with_amx; return 0; }
static inline int cgru_amx_permitted(void) { return 0; }
static inline void cgru_cpu_brand(char out[49]) { out[0] = '\0'; }
#endif

#endif  /* CGRU_CPU_H */
