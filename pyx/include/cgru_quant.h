/* The innermost loops of the reduced-precision recurrent product (pyx/_quant.pxi), in C: products
   of a few rows of h against one unit block's weight panel, whose weights are stored in pairs of
   consecutive k (the k-paired layout of cgru/quantized.py): panel word (k2, c) holds the weights
   of rows 2*k2 and 2*k2 + 1 of column c, the even one in the low half. That layout is the same for
   every instruction set, and it widens in registers without a shuffle:
     bfloat16: a 32-bit word (even | odd << 16): `word << 16` is the even weight as a float32 and
               `word & 0xffff0000` the odd one (a bfloat16 is the top half of a float32);
     int8:     a 16-bit pair, sign-extended to two int16 in one 32-bit lane: one pmaddwd
               multiplies it by the pair (h[2*k2], h[2*k2 + 1]) and adds the two products, exactly,
               into int32.
   Nothing here needs an instruction beyond the build's: the baseline build (SSE2, or no SIMD at
   all off x86) computes the same values as the AVX2 and AVX-512 builds. */

#ifndef CGRU_QUANT_H
#define CGRU_QUANT_H

#include "cgru_vec.h"

#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* ---- bfloat16 ------------------------------------------------------------------------- */
/* Rows of h per pass over a panel: every column's accumulators in registers (AVX-512: 8 x 3;
   AVX2: 2 x 6 of its 16 registers, beside the weights being widened) */
#if defined(__AVX512F__)
#define CGRU_BF16_ROWS 8
#elif defined(__AVX2__)
#define CGRU_BF16_ROWS 2
#else
#define CGRU_BF16_ROWS 1
#endif
typedef uint32_t cgru_vword __attribute__((vector_size(CGRU_VECTOR_BYTES), aligned(4)));
/* Two chains per accumulator for a single row (the even and the odd weights), so that 12
   chains of FMAs are in flight as in the float32 kernel; with two rows or more, one. */
#define CGRU_BF16_CHAINS(R) ((R) == 1 ? 2 : 1)
#define CGRU_BF16_ROWS_KERNEL(R)                                                          \
static inline void cgru_bf16_panel_##R(int K, const float *restrict h, long ldh,          \
                                       const uint32_t *restrict panel,                    \
                                       float *restrict acc, int accumulate) {             \
    typedef cgru_vfloat V;                                                                \
    enum { S = CGRU_BF16_CHAINS(R), VL = CGRU_LANES(float), NV = CGRU_PANEL / VL };       \
    const cgru_vword high = (cgru_vword){0} + 0xffff0000u;                                \
    V a[S][R][NV];                                                                        \
    CGRU_ACC_START(V, a, S, R, NV, VL, acc, accumulate)                                   \
    int k2 = 0;                                                                           \
    for (; 2 * k2 + 1 < K; k2++) {                                                        \
        const cgru_vword *w = (const cgru_vword *)(panel + (long)k2 * CGRU_PANEL);        \
        float he[R], ho[R];                                                               \
        CGRU_UNROLL for (int m = 0; m < R; m++) {                                         \
            he[m] = h[m * ldh + 2 * k2];                                                  \
            ho[m] = h[m * ldh + 2 * k2 + 1];                                              \
        }                                                                                 \
        CGRU_UNROLL for (int v = 0; v < NV; v++) {                                        \
            const V even = (V)(w[v] << 16), odd = (V)(w[v] & high);                       \
            CGRU_UNROLL for (int m = 0; m < R; m++) {                                     \
                a[0][m][v] = CGRU_FMA1(float, he[m], even, a[0][m][v]);                   \
                a[S - 1][m][v] = CGRU_FMA1(float, ho[m], odd, a[S - 1][m][v]);            \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    if (2 * k2 < K) {   /* odd K: the last word's odd half is zero padding */             \
        const cgru_vword *w = (const cgru_vword *)(panel + (long)k2 * CGRU_PANEL);        \
        CGRU_UNROLL for (int v = 0; v < NV; v++) {                                        \
            const V even = (V)(w[v] << 16);                                               \
            CGRU_UNROLL for (int m = 0; m < R; m++)                                       \
                a[0][m][v] = CGRU_FMA1(float, h[m * ldh + 2 * k2], even, a[0][m][v]);     \
        }                                                                                 \
    }                                                                                     \
    CGRU_UNROLL for (int m = 0; m < R; m++)                                               \
        CGRU_UNROLL for (int v = 0; v < NV; v++) {                                        \
            V total = a[0][m][v];                                                         \
            if (S > 1) total += a[S - 1][m][v];                                           \
            *(V *)(acc + m * CGRU_PANEL + v * VL) = total;                                \
        }                                                                                 \
}
CGRU_BF16_ROWS_KERNEL(8)
CGRU_BF16_ROWS_KERNEL(7)
CGRU_BF16_ROWS_KERNEL(6)
CGRU_BF16_ROWS_KERNEL(5)
CGRU_BF16_ROWS_KERNEL(4)
CGRU_BF16_ROWS_KERNEL(3)
CGRU_BF16_ROWS_KERNEL(2)
CGRU_BF16_ROWS_KERNEL(1)
#define CGRU_BF16_CASE(R)                                                                 \
    case R:                                                                               \
        if (CGRU_BF16_ROWS >= R) {                                                        \
            cgru_bf16_panel_##R(K, h, ldh, panel, acc, accumulate);                       \
            return;                                                                       \
        }                                                                                 \
        break;
/* acc[m][c] (+)= sum_k h[m * ldh + k] * W[k][c], 1 <= rows <= CGRU_BF16_ROWS */
static inline void cgru_bf16_panel_product(int rows, int K, const float *restrict h,
                                           long ldh, const uint32_t *restrict panel,
                                           float *restrict acc, int accumulate) {
    switch (rows) {
        CGRU_BF16_CASE(8) CGRU_BF16_CASE(7) CGRU_BF16_CASE(6) CGRU_BF16_CASE(5)
        CGRU_BF16_CASE(4) CGRU_BF16_CASE(3) CGRU_BF16_CASE(2) CGRU_BF16_CASE(1)
    }
    for (; rows > 0; rows--, h += ldh, acc += CGRU_PANEL)
        cgru_bf16_panel_1(K, h, ldh, panel, acc, accumulate);
}

/* What the bfloat16 product compiles to in this build, for `cgru info` (cgru/_engine/isa.py):
   the FMA of cgru_vec.h on cgru_vfloat vectors of the build's width. */
#if defined(__AVX512F__)
#define CGRU_BF16_PRODUCT "float32 FMA on zmm (AVX-512F)"
#elif defined(__AVX2__) && defined(__FMA__)
#define CGRU_BF16_PRODUCT "float32 FMA on ymm (AVX2, FMA)"
#elif defined(__SSE2__)
#define CGRU_BF16_PRODUCT "float32 mulps + addps on xmm (SSE2)"
#else
#define CGRU_BF16_PRODUCT "float32 multiply and add on 16-byte C vectors (not x86)"
#endif

/* ---- int8 ----------------------------------------------------------------------------- */
/* One vector of int32 accumulators per CGRU_QI_LANES columns; a pair of int8 weights per
   lane, widened to two int16 (pmovsxbw, or unpack and shift on SSE2). */
#if defined(__AVX512BW__)
#define CGRU_QI_PRODUCT "vpmovsxbw + vpmaddwd on zmm (AVX512BW)"
typedef __m512i cgru_qi;
#define CGRU_QI_LANES 16
#define CGRU_QI_ROWS 8
#define CGRU_QI_LOADW(p) _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p)))
#define CGRU_QI_MADD(w, hp) _mm512_madd_epi16((w), (hp))
#define CGRU_QI_ADD(a, b) _mm512_add_epi32((a), (b))
#define CGRU_QI_SET1(x) _mm512_set1_epi32(x)
#define CGRU_QI_ZERO() _mm512_setzero_si512()
#define CGRU_QI_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define CGRU_QI_STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#elif defined(__AVX2__)
#define CGRU_QI_PRODUCT "vpmovsxbw + vpmaddwd on ymm (AVX2)"
typedef __m256i cgru_qi;
#define CGRU_QI_LANES 8
#define CGRU_QI_ROWS 2     /* 2 x 6 accumulators, a weight and two pairs: 15 registers */
#define CGRU_QI_LOADW(p) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p)))
#define CGRU_QI_MADD(w, hp) _mm256_madd_epi16((w), (hp))
#define CGRU_QI_ADD(a, b) _mm256_add_epi32((a), (b))
#define CGRU_QI_SET1(x) _mm256_set1_epi32(x)
#define CGRU_QI_ZERO() _mm256_setzero_si256()
#define CGRU_QI_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define CGRU_QI_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#elif defined(__SSE2__)
#define CGRU_QI_PRODUCT "punpcklbw + psraw + pmaddwd on xmm (SSE2)"
typedef __m128i cgru_qi;
#define CGRU_QI_LANES 4
#define CGRU_QI_ROWS 1
static inline __m128i cgru_qi_loadw_sse2(const int8_t *p) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    return _mm_srai_epi16(_mm_unpacklo_epi8(b, b), 8);   /* sign-extend bytes to int16 */
}
#define CGRU_QI_LOADW(p) cgru_qi_loadw_sse2(p)
#define CGRU_QI_MADD(w, hp) _mm_madd_epi16((w), (hp))
#define CGRU_QI_ADD(a, b) _mm_add_epi32((a), (b))
#define CGRU_QI_SET1(x) _mm_set1_epi32(x)
#define CGRU_QI_ZERO() _mm_setzero_si128()
#define CGRU_QI_LOAD(p) _mm_loadu_si128((const __m128i *)(p))
#define CGRU_QI_STORE(p, v) _mm_storeu_si128((__m128i *)(p), (v))
#else
#define CGRU_QI_PRODUCT "scalar int32 multiply-adds in C (not x86)"
#define CGRU_QI_ROWS 1
#endif

#if defined(__SSE2__)
#define CGRU_QI_ROWS_KERNEL(R)                                                            \
static inline void cgru_int8_panel_##R(int K2, const int16_t *restrict q, long ldq,       \
                                       const int8_t *restrict panel,                      \
                                       int32_t *restrict acc, int accumulate) {           \
    enum { NV = CGRU_PANEL / CGRU_QI_LANES };                                             \
    cgru_qi a[R][NV];                                                                     \
    CGRU_UNROLL for (int m = 0; m < R; m++)                                               \
        CGRU_UNROLL for (int v = 0; v < NV; v++)                                          \
            a[m][v] = accumulate ? CGRU_QI_LOAD(acc + m * CGRU_PANEL + v * CGRU_QI_LANES) \
                                 : CGRU_QI_ZERO();                                        \
    for (int k2 = 0; k2 < K2; k2++) {                                                     \
        const int8_t *w = panel + (long)k2 * 2 * CGRU_PANEL;                              \
        cgru_qi hp[R];                                                                    \
        CGRU_UNROLL for (int m = 0; m < R; m++) {                                         \
            int32_t pair;                                                                 \
            memcpy(&pair, q + m * ldq + 2 * k2, sizeof pair);                             \
            hp[m] = CGRU_QI_SET1(pair);                                                   \
        }                                                                                 \
        CGRU_UNROLL for (int v = 0; v < NV; v++) {                                        \
            const cgru_qi wv = CGRU_QI_LOADW(w + 2 * v * CGRU_QI_LANES);                  \
            CGRU_UNROLL for (int m = 0; m < R; m++)                                       \
                a[m][v] = CGRU_QI_ADD(a[m][v], CGRU_QI_MADD(wv, hp[m]));                  \
        }                                                                                 \
    }                                                                                     \
    CGRU_UNROLL for (int m = 0; m < R; m++)                                               \
        CGRU_UNROLL for (int v = 0; v < NV; v++)                                          \
            CGRU_QI_STORE(acc + m * CGRU_PANEL + v * CGRU_QI_LANES, a[m][v]);             \
}
#else
/* no SIMD: the same sums, exactly (int32 arithmetic is exact, in any order) */
#define CGRU_QI_ROWS_KERNEL(R)                                                            \
static inline void cgru_int8_panel_##R(int K2, const int16_t *restrict q, long ldq,       \
                                       const int8_t *restrict panel,                      \
                                       int32_t *restrict acc, int accumulate) {           \
    for (int m = 0; m < R; m++)                                                           \
        for (int c = 0; c < CGRU_PANEL; c++) {                                            \
            int32_t sum = accumulate ? acc[m * CGRU_PANEL + c] : 0;                       \
            for (int k2 = 0; k2 < K2; k2++) {                                             \
                const int8_t *w = panel + (long)k2 * 2 * CGRU_PANEL + 2 * c;              \
                sum += (int32_t)w[0] * q[m * ldq + 2 * k2]                                \
                       + (int32_t)w[1] * q[m * ldq + 2 * k2 + 1];                         \
            }                                                                             \
            acc[m * CGRU_PANEL + c] = sum;                                                \
        }                                                                                 \
}
#endif
CGRU_QI_ROWS_KERNEL(8)
CGRU_QI_ROWS_KERNEL(4)
CGRU_QI_ROWS_KERNEL(2)
CGRU_QI_ROWS_KERNEL(1)
/* acc[m][c] (+)= sum_k q[m * ldq + k] * W[k][c] in int32, for K2 pairs of k (q and the
   panel zero padded to an even depth), 1 <= rows <= CGRU_QI_ROWS. */
static inline void cgru_int8_panel_product(int rows, int K2, const int16_t *restrict q,
                                           long ldq, const int8_t *restrict panel,
                                           int32_t *restrict acc, int accumulate) {
    while (rows > 0) {
        int r = rows >= 8 && CGRU_QI_ROWS >= 8 ? 8 : rows >= 4 && CGRU_QI_ROWS >= 4 ? 4
                : rows >= 2 && CGRU_QI_ROWS >= 2 ? 2 : 1;
        if (r == 8) cgru_int8_panel_8(K2, q, ldq, panel, acc, accumulate);
        else if (r == 4) cgru_int8_panel_4(K2, q, ldq, panel, acc, accumulate);
        else if (r == 2) cgru_int8_panel_2(K2, q, ldq, panel, acc, accumulate);
        else cgru_int8_panel_1(K2, q, ldq, panel, acc, accumulate);
        rows -= r;
        q += r * ldq;
        acc += r * CGRU_PANEL;
    }
}

/* Row m of h (K values at h + m * ldh) as int8 values in int16 slots, symmetric per row:
   q = rint(h * 127 / max|h|), scale[m] = max|h| / 127 (0 for a zero row); slot K (odd K)
   is zero padding. A NaN anywhere makes the row's scale NaN, so the NaN propagates. */
static inline void cgru_quantize_rows(int rows, int K, const float *h, long ldh,
                                      int16_t *q, long ldq, float *scale) {
    for (int m = 0; m < rows; m++) {
        const float *x = h + m * ldh;
        float amax = 0.0f;
        int nan = 0;
        for (int k = 0; k < K; k++) {
            float a = fabsf(x[k]);
            amax = a > amax ? a : amax;
            nan |= x[k] != x[k];
        }
        int16_t *out = q + m * ldq;
        if (amax > 0.0f && !nan && amax <= 3.4e38f) {
            const float inv = 127.0f / amax;
            for (int k = 0; k < K; k++) out[k] = (int16_t)lrintf(x[k] * inv);
            scale[m] = amax / 127.0f;
        } else {
            for (int k = 0; k < K; k++) out[k] = 0;
            scale[m] = nan || amax > 3.4e38f ? NAN : 0.0f;
        }
        if (K & 1) out[K] = 0;
    }
}

/* acc (rows x 48 int32, in place) -> float32: sum * row scale * column scale */
static inline void cgru_dequantize_acc(int rows, void *acc, const float *row_scale,
                                       const float *col_scale) {
    for (int m = 0; m < rows; m++) {
        int32_t *from = (int32_t *)acc + m * CGRU_PANEL;
        float *to = (float *)acc + m * CGRU_PANEL;
        const float s = row_scale[m];
        for (int c = 0; c < CGRU_PANEL; c++) {
            int32_t v;
            memcpy(&v, from + c, sizeof v);
            to[c] = (float)v * s * col_scale[c];
        }
    }
}

#endif  /* CGRU_QUANT_H */
