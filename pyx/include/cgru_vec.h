/* The innermost code of a step, in C with GCC/Clang vector types: a block of 16 hidden units is
   one vector value, so the gate pass and the register-blocked products compile to straight-line
   SIMD code for whatever instruction set the build targets (one AVX-512 register holds 16
   floats, two AVX2 ones, four SSE ones). Each routine is one template for float and double.

   This header: the vector types, exp and the reciprocal that sigmoid and tanh are made of,
   aligned workspace, prefetching. cgru_gates.h and cgru_panels.h build on it.

   Sigmoid and tanh: from exp, within an ulp or two (float: a 16-entry table and a cubic with
   AVX-512, else Cephes' polynomial; double: Cephes' rational). Absolute error of sigmoid and
   tanh: below 2.5e-7 (float), 5e-16 (double), which the parity tests bound. */

#ifndef CGRU_VEC_H
#define CGRU_VEC_H

#include <stdint.h>
#include <string.h>

#if !defined(__GNUC__)
#error "cgru's kernel needs GCC or Clang (vector extensions); on Windows use clang-cl"
#endif

#define CGRU_UB 16              /* hidden units per block: one vector */
#define CGRU_PANEL 48           /* columns of a weight panel: r, z, n of one block */
#define CGRU_UNROLL _Pragma("GCC unroll 16")

/* Vectors of the build's register width: wider ones (16 doubles in one vector, or 16 floats
   in an AVX2 build) made GCC pass them through the stack. aligned(element): loads and
   stores need no vector alignment (they get it anyway). */
#if defined(__AVX512F__)
#define CGRU_VECTOR_BYTES 64
#elif defined(__AVX2__)
#define CGRU_VECTOR_BYTES 32
#else
#define CGRU_VECTOR_BYTES 16
#endif
#define CGRU_LANES(T) (CGRU_VECTOR_BYTES / (int)sizeof(T))
typedef float cgru_vfloat __attribute__((vector_size(CGRU_VECTOR_BYTES), aligned(4)));
typedef double cgru_vdouble __attribute__((vector_size(CGRU_VECTOR_BYTES), aligned(8)));
typedef int32_t cgru_vfloat_bits __attribute__((vector_size(CGRU_VECTOR_BYTES)));
typedef int64_t cgru_vdouble_bits __attribute__((vector_size(CGRU_VECTOR_BYTES)));

/* Fused multiply-adds, written out: every extension builds with -ffp-contract=off (setup.py), so
   that no a * b + c is fused or not by the optimisation level's choice (the sanitizer build at
   -O1 fused fewer than -O3 and rounded sigmoid differently); the kernel fuses exactly these.
   CGRU_FMA(T, a, b, c) = a * b + c rounded once, on vectors; CGRU_FMA1 with a scalar a. The
   baseline build (SSE2) has no FMA instruction: there the two roundings of a * b + c. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define CGRU_FMA_PS(a, b, c) ((cgru_vfloat)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define CGRU_FMA_PD(a, b, c) \
    ((cgru_vdouble)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#define CGRU_SPLAT_PS(x) ((cgru_vfloat)_mm512_set1_ps(x))
#define CGRU_SPLAT_PD(x) ((cgru_vdouble)_mm512_set1_pd(x))
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CGRU_FMA_PS(a, b, c) ((cgru_vfloat)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define CGRU_FMA_PD(a, b, c) \
    ((cgru_vdouble)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define CGRU_SPLAT_PS(x) ((cgru_vfloat)_mm256_set1_ps(x))
#define CGRU_SPLAT_PD(x) ((cgru_vdouble)_mm256_set1_pd(x))
#else
#define CGRU_NO_FMA 1
#define CGRU_FMA_PS(a, b, c) ((a) * (b) + (c))
#define CGRU_FMA_PD(a, b, c) ((a) * (b) + (c))
#define CGRU_SPLAT_PS(x) (x)      /* a scalar operand of a vector operation is broadcast */
#define CGRU_SPLAT_PD(x) (x)
#endif
/* Non-temporal vector stores (to memory past the caches, no read of the line first) for the
   saved gates of the backward pass (cgru_gates.h); p vector-aligned. cgru_stream_fence orders
   them before what the thread stores next. */
#if defined(__AVX512F__)
#define CGRU_STREAM_float(p, v) _mm512_stream_ps((float *)(p), (__m512)(v))
#define CGRU_STREAM_double(p, v) _mm512_stream_pd((double *)(p), (__m512d)(v))
#elif defined(__AVX2__)
#define CGRU_STREAM_float(p, v) _mm256_stream_ps((float *)(p), (__m256)(v))
#define CGRU_STREAM_double(p, v) _mm256_stream_pd((double *)(p), (__m256d)(v))
#elif defined(__SSE2__)
#include <emmintrin.h>
#define CGRU_STREAM_float(p, v) _mm_stream_ps((float *)(p), (__m128)(v))
#define CGRU_STREAM_double(p, v) _mm_stream_pd((double *)(p), (__m128d)(v))
#else
#define CGRU_STREAM_float(p, v) (*(cgru_vfloat *)(p) = (v))
#define CGRU_STREAM_double(p, v) (*(cgru_vdouble *)(p) = (v))
#endif
#define CGRU_STREAM(T, p, v) CGRU_STREAM_##T(p, v)
static inline void cgru_stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#else
    __sync_synchronize();
#endif
}
#define CGRU_FMA_float CGRU_FMA_PS
#define CGRU_FMA_double CGRU_FMA_PD
#define CGRU_SPLAT_float CGRU_SPLAT_PS
#define CGRU_SPLAT_double CGRU_SPLAT_PD
#define CGRU_FMA(T, a, b, c) CGRU_FMA_##T(a, b, c)
/* The same on scalars, in loops that GCC vectorizes (fma() is one instruction only with FMA
   hardware: elsewhere a slow library call) */
#if defined(__FMA__)
#define CGRU_FMAS_float(a, b, c) __builtin_fmaf(a, b, c)
#define CGRU_FMAS_double(a, b, c) __builtin_fma(a, b, c)
#else
#define CGRU_FMAS_float(a, b, c) ((a) * (b) + (c))
#define CGRU_FMAS_double(a, b, c) ((a) * (b) + (c))
#endif
#define CGRU_FMAS(T, a, b, c) CGRU_FMAS_##T(a, b, c)
#define CGRU_FMA1(T, a, b, c) CGRU_FMA_##T(CGRU_SPLAT_##T(a), b, c)

/* Start the accumulators V a[S][R][NV] of a panel product (cgru_panels.h, cgru_quant.h): all
   zero, or with accumulate, chain 0 of row m from acc + m * 48 (VL lanes a vector) */
#define CGRU_ACC_START(V, a, S, R, NV, VL, acc, accumulate)                                 \
    CGRU_UNROLL for (int s_ = 0; s_ < (S); s_++)                                            \
        CGRU_UNROLL for (int m_ = 0; m_ < (R); m_++)                                        \
            CGRU_UNROLL for (int v_ = 0; v_ < (NV); v_++) (a)[s_][m_][v_] = (V){0};         \
    if (accumulate)                                                                         \
        CGRU_UNROLL for (int m_ = 0; m_ < (R); m_++)                                        \
            CGRU_UNROLL for (int v_ = 0; v_ < (NV); v_++)                                   \
                (a)[0][m_][v_] = *(const V *)((acc) + m_ * CGRU_PANEL + v_ * (VL));

/* where(mask, a, b) on vectors: lanes of a where mask is all ones, else b */
#define CGRU_WHERE(T, mask, a, b) \
    ((cgru_v##T)(((mask) & (cgru_v##T##_bits)(a)) | (~(mask) & (cgru_v##T##_bits)(b))))

/* cgru_exp1p_T(x) = 1 + exp(x), the denominator of sigmoid and tanh: exp's last step, the
   scaling by a power of two, fused with the 1 where it is a multiply (it is exact, so fused or
   not the sum rounds once; one instruction less in the gate pass). */
#if defined(__AVX512F__)
#include <immintrin.h>
/* exp(x) = 2^(k / 16) * exp(r), k = round(16 x / ln 2), |r| <= ln 2 / 32: the 16 powers
   2^(j / 16) from a register table (one permute), exp(r) by a cubic (truncation error
   9e-9), 2^floor(k / 16) by scalef. About 13 instructions against 20 for the Cephes
   polynomial below, with the same accuracy of sigmoid and tanh (max abs error 9.0e-8 and
   1.8e-7 on [-30, 30], both ways): gate pass alone 1.43 -> 1.18 ms. */
static inline cgru_vfloat cgru_exp1p_float(cgru_vfloat value) {
    const __m512 table = _mm512_setr_ps(
        1.000000000e+00f, 1.044273782e+00f, 1.090507733e+00f, 1.138788635e+00f,
        1.189207115e+00f, 1.241857812e+00f, 1.296839555e+00f, 1.354255547e+00f,
        1.414213562e+00f, 1.476826146e+00f, 1.542210825e+00f, 1.610490332e+00f,
        1.681792831e+00f, 1.756252160e+00f, 1.834008086e+00f, 1.915206561e+00f);
    /* max/min return their second operand for a NaN: NaN passes through */
    __m512 x = _mm512_min_ps(_mm512_set1_ps(88.0f),
                             _mm512_max_ps(_mm512_set1_ps(-87.0f), (__m512)value));
    /* t = 16 x / ln 2 + 1.5 * 2^23: k in its low mantissa bits, the table index in the
       lowest four (the permute reads only those) */
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(23.083120654223414f),
                               _mm512_set1_ps(12582912.0f));
    __m512 k = _mm512_sub_ps(t, _mm512_set1_ps(12582912.0f));
    /* r = x - k ln2 / 16 in two parts; the first has 13 bits, so k times it is exact */
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.0433197021484375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.996636559080e-06f), r);
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 6), r, _mm512_set1_ps(0.5f));
    q = _mm512_mul_ps(_mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f)), r);   /* exp(r) - 1 */
    __m512 power = _mm512_permutexvar_ps(_mm512_castps_si512(t), table);
    return 1.0f + (cgru_vfloat)_mm512_scalef_ps(_mm512_fmadd_ps(q, power, power),
                                                _mm512_mul_ps(k, _mm512_set1_ps(0.0625f)));
}
#else
static inline cgru_vfloat cgru_exp1p_float(cgru_vfloat x) {
    const cgru_vfloat zero = {0};
    /* clamped to [-87, 88] so the power of two below is finite; NaN passes through */
    x = CGRU_WHERE(float, x < zero - 87.0f, zero - 87.0f, x);
    x = CGRU_WHERE(float, x > zero + 88.0f, zero + 88.0f, x);
    /* n = round(x / ln 2) with the 1.5 * 2^23 trick */
    cgru_vfloat n = CGRU_FMA1(float, 1.44269504088896341f, x, zero + 12582912.0f) - 12582912.0f;
    cgru_vfloat r = CGRU_FMA1(float, -0.693359375f, n, x);
    r = CGRU_FMA1(float, 2.12194440e-4f, n, r);
    cgru_vfloat p = zero + 1.9875691500e-4f;
    p = CGRU_FMA(float, p, r, zero + 1.3981999507e-3f);
    p = CGRU_FMA(float, p, r, zero + 8.3334519073e-3f);
    p = CGRU_FMA(float, p, r, zero + 4.1665795894e-2f);
    p = CGRU_FMA(float, p, r, zero + 1.6666665459e-1f);
    p = CGRU_FMA(float, p, r, zero + 5.0000001201e-1f);
    p = CGRU_FMA(float, p * r, r, r) + 1.0f;
    /* 2^n: n + 127 sits in the low mantissa bits of n + 127 + 2^23; shift it to the exponent */
    cgru_vfloat_bits bits = (cgru_vfloat_bits)(n + (127.0f + 8388608.0f)) << 23;
    return CGRU_FMA(float, p, (cgru_vfloat)bits, zero + 1.0f);
}
#endif

static inline cgru_vdouble cgru_exp1p_double(cgru_vdouble x) {
    const cgru_vdouble zero = {0};
    x = CGRU_WHERE(double, x < zero - 708.0, zero - 708.0, x);
    x = CGRU_WHERE(double, x > zero + 709.0, zero + 709.0, x);
    cgru_vdouble n = CGRU_FMA1(double, 1.4426950408889634074, x,
                               zero + 6755399441055744.0) - 6755399441055744.0;
    cgru_vdouble r = CGRU_FMA1(double, -6.93145751953125e-1, n, x);
    r = CGRU_FMA1(double, -1.42860682030941723212e-6, n, r);
    cgru_vdouble rr = r * r;
    cgru_vdouble px = CGRU_FMA1(double, 1.26177193074810590878e-4, rr,
                                zero + 3.02994407707441961300e-2);
    px = r * CGRU_FMA(double, px, rr, zero + 9.99999999999999999910e-1);
    cgru_vdouble qx = CGRU_FMA1(double, 3.00198505138664455042e-6, rr,
                                zero + 2.52448340349684104192e-3);
    qx = CGRU_FMA(double, qx, rr, zero + 2.27265548208155028766e-1);
    qx = CGRU_FMA(double, qx, rr, zero + 2.00000000000000000009e0);
    cgru_vdouble e = CGRU_FMA1(double, 2.0, px / (qx - px), zero + 1.0);
    cgru_vdouble_bits bits = (cgru_vdouble_bits)(n + (1023.0 + 4503599627370496.0)) << 52;
    return CGRU_FMA(double, e, (cgru_vdouble)bits, zero + 1.0);
}

/* 1 / d for the gates. With AVX-512, a 14-bit reciprocal estimate refined by one Newton
   step (relative error about 2^-23, within an ulp or two) in place of a division, which
   took a third of the gate pass. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline cgru_vfloat cgru_recip_float(cgru_vfloat d) {
    cgru_vfloat y = (cgru_vfloat)_mm512_rcp14_ps((__m512)d);
    cgru_vfloat e = (cgru_vfloat)_mm512_fnmadd_ps((__m512)d, (__m512)y, _mm512_set1_ps(1.0f));
    return CGRU_FMA(float, y, e, y);
}
#else
static inline cgru_vfloat cgru_recip_float(cgru_vfloat d) { return 1.0f / d; }
#endif
static inline cgru_vdouble cgru_recip_double(cgru_vdouble d) { return 1.0 / d; }

/* Workspace on 64-byte boundaries: a vector load across two cache lines costs two. */
#include <stdlib.h>
#if defined(_WIN32)
#include <malloc.h>
static inline void *cgru_alloc(size_t n) { return _aligned_malloc(n ? n : 64, 64); }
static inline void cgru_free(void *p) { _aligned_free(p); }
#else
static inline void *cgru_alloc(size_t n) {
    void *p = NULL;
    return posix_memalign(&p, 64, n ? n : 64) == 0 ? p : NULL;
}
static inline void cgru_free(void *p) { free(p); }
#endif

/* Start loading rows of h(t-1) that another thread wrote: with the hidden units split
   across threads, their cache-line transfers otherwise stall the products one by one. */
static inline void cgru_prefetch_rows(const void *p, long ld_bytes, int rows, long bytes) {
    for (int m = 0; m < rows; m++)
        for (long c = 0; c < bytes; c += 64)
            __builtin_prefetch((const char *)p + m * ld_bytes + c, 0, 3);
}

#endif  /* CGRU_VEC_H */
