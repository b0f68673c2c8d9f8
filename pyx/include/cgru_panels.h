/* The register-blocked products of a few rows of h (or x) against the weight panels of one
   block of 16 hidden units, in C with the vector types of cgru_vec.h: the accumulators stay in
   registers and the panel is read once per group of rows, which a BLAS call (re-packing its
   operand every call) does not do for small batches. */

#ifndef CGRU_PANELS_H
#define CGRU_PANELS_H

#include "cgru_vec.h"

/* Products of `rows` rows against one weight panel: acc[m][c] = sum_k h[m * ldh + k] *
   panel[k * 48 + c] for c < 48, the r|z|n columns (16 each, zero padded) of one block of
   hidden units. The panel is read once per group of rows, and the accumulators stay in
   registers: one routine per row count, unrolled completely. */
#if defined(__AVX512F__)
#define CGRU_PANEL_ROWS_F 8    /* 8 x 3 = 24 of AVX-512's 32 registers accumulate */
#define CGRU_PANEL_ROWS_D 4    /* 4 x 6 = 24: a double row of 48 takes 6 registers */
#elif defined(__AVX2__)
#define CGRU_PANEL_ROWS_F 4    /* 4 x 3 = 12 of AVX2's 16 registers, two passes of 24 columns */
#define CGRU_PANEL_ROWS_D 1
#else
#define CGRU_PANEL_ROWS_F 1    /* SSE2's 16 registers hold one row of 48 floats */
#define CGRU_PANEL_ROWS_D 1
#endif
#define CGRU_PANEL_ROWS CGRU_PANEL_ROWS_F   /* the most of either: sizes the buffers */
/* S independent partial sums per accumulator, so that at least 12 chains of FMAs are in
   flight: with one or two rows, a single chain per register waits on the FMA latency
   (4 cycles) every step of k (batch-1 steps 1.4x faster with two chains here). */
#define CGRU_CHAINS(T, R) (12 * CGRU_VECTOR_BYTES / (R * CGRU_PANEL * (int)sizeof(T)) > 1 \
                           ? 12 * CGRU_VECTOR_BYTES / (R * CGRU_PANEL * (int)sizeof(T)) : 1)
/* Accumulator registers a kernel may hold: 24 of AVX-512's 32, 12 of the 16 of AVX2 and
   SSE2 (the rest hold the panel's vectors and the broadcast h values). */
#if defined(__AVX512F__)
#define CGRU_MAX_ACCUMULATORS 24
#else
#define CGRU_MAX_ACCUMULATORS 12
#endif
/* Vectors of the 48 columns one pass over the panel covers: all of them, or half where the
   rows' accumulators would not fit (AVX2's 4 rows: two passes of 24 columns, each reading
   its half of the panel once for 4 rows where the 2-row kernel read all of it for 2: half
   the panel traffic from L2, for the same sums in the same order). */
#define CGRU_PASS_VECTORS(S, R, NV) ((S) * (R) * (NV) <= CGRU_MAX_ACCUMULATORS ? (NV) : (NV) / 2)
/* NAME: the kernel's name suffix; CHAINS: its S (CGRU_CHAINS(T, R), or 1 for the
   single-chain kernels of cgru_panel_tile below); WIDTH: the columns it computes, the
   first WIDTH of the panel's 48 (16, 32 or 48: see cgru_panel_tile_cols) */
#define CGRU_PANEL_ROWS_KERNEL(T, R, NAME, CHAINS, WIDTH)                                 \
static inline void cgru_panel_##T##_##NAME(int K, const T *restrict h, long ldh,          \
                                           const T *restrict panel, T *restrict acc,      \
                                           int accumulate) {                              \
    typedef cgru_v##T V;                                                                  \
    enum { S = CHAINS, VL = CGRU_LANES(T), NV_ALL = (WIDTH) / VL,                         \
           NV = CGRU_PASS_VECTORS(CHAINS, R, NV_ALL) };                                   \
    for (int pass = 0; pass < NV_ALL / NV; pass++, panel += NV * VL, acc += NV * VL) {    \
    V a[S][R][NV];                                                                        \
    CGRU_ACC_START(V, a, S, R, NV, VL, acc, accumulate)                                   \
    /* Rows addressed from two moving pointers (rows 0-3 and 4-7) plus fixed multiples of \
       ldh: 8 broadcasts with no address arithmetic, where GCC had added ldh once per row \
       and step of k (S3 7%, S5 2.5% faster) */                                           \
    int k = 0;                                                                            \
    const T *hq = h;                                                                      \
    const T *hq4 = h + (R > 4 ? 4 * ldh : 0);                                             \
    const long l2 = 2 * ldh, l3 = 3 * ldh;                                                \
    for (; k + S <= K; k += S, hq += S, hq4 += S)                                         \
        CGRU_UNROLL for (int s = 0; s < S; s++) {                                         \
            const V *w = (const V *)(panel + (long)(k + s) * CGRU_PANEL);                 \
            CGRU_UNROLL for (int m = 0; m < R; m++) {                                     \
                const T *base = m < 4 ? hq : hq4;                                         \
                T hk = (m % 4 == 0) ? base[s] : (m % 4 == 1) ? base[ldh + s]              \
                       : (m % 4 == 2) ? base[l2 + s] : base[l3 + s];                      \
                CGRU_UNROLL for (int v = 0; v < NV; v++)                                  \
                    a[s][m][v] = CGRU_FMA1(T, hk, w[v], a[s][m][v]);                      \
            }                                                                             \
        }                                                                                 \
    for (; k < K; k++) {                                                                  \
        const V *w = (const V *)(panel + (long)k * CGRU_PANEL);                           \
        CGRU_UNROLL for (int m = 0; m < R; m++)                                           \
            CGRU_UNROLL for (int v = 0; v < NV; v++)                                      \
                a[0][m][v] = CGRU_FMA1(T, h[m * ldh + k], w[v], a[0][m][v]);              \
    }                                                                                     \
    CGRU_UNROLL for (int m = 0; m < R; m++)                                               \
        CGRU_UNROLL for (int v = 0; v < NV; v++) {                                        \
            V total = a[0][m][v];                                                         \
            CGRU_UNROLL for (int s = 1; s < S; s++) total += a[s][m][v];                  \
            *(V *)(acc + m * CGRU_PANEL + v * VL) = total;                                \
        }                                                                                 \
    }                                                                                     \
}
/* One kernel per row count, so that the rows left over after the blocks of 8 (a packed
   batch shrinks one sequence at a time) take one pass over the panel, not up to three
   (4 + 2 + 1 rows). 100 steps of H = 128, input 64 fused, gates included: 61 rows
   5.50 -> 5.35 ms, 5 rows 0.55 -> 0.51 ms, 3 rows 0.40 -> 0.35 ms. */
#define CGRU_PANEL_CASE(T, MAX_ROWS, R, KERNEL)                                           \
    case R:                                                                               \
        if (MAX_ROWS >= R) {                                                              \
            cgru_panel_##T##_##KERNEL(K, h, ldh, panel, acc, accumulate);                 \
            return;                                                                       \
        }                                                                                 \
        break;
/* W: the name prefix of one width's functions (empty for 48 columns, w16_ / w32_) */
#define CGRU_PANEL_PRODUCT(T, MAX_ROWS, WIDTH, W)                                         \
CGRU_PANEL_ROWS_KERNEL(T, 8, W##8, CGRU_CHAINS(T, 8), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 7, W##7, CGRU_CHAINS(T, 7), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 6, W##6, CGRU_CHAINS(T, 6), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 5, W##5, CGRU_CHAINS(T, 5), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 4, W##4, CGRU_CHAINS(T, 4), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 3, W##3, CGRU_CHAINS(T, 3), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 2, W##2, CGRU_CHAINS(T, 2), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 1, W##1, CGRU_CHAINS(T, 1), WIDTH)                              \
CGRU_PANEL_ROWS_KERNEL(T, 2, W##2_single, 1, WIDTH)                                       \
CGRU_PANEL_ROWS_KERNEL(T, 1, W##1_single, 1, WIDTH)                                       \
/* 1 <= rows <= MAX_ROWS; accumulate: add to acc instead of overwriting it; single_chain: \
   one chain per accumulator for every row count (CGRU_CHAINS is 1 from 3 rows on in      \
   every build, so only the 1- and 2-row kernels differ) */                               \
static inline void cgru_panel_##W##product_##T(int rows, int K, const T *restrict h,      \
                                               long ldh, const T *restrict panel,         \
                                               T *restrict acc, int accumulate,           \
                                               int single_chain) {                        \
    _Static_assert(CGRU_CHAINS(T, 3) == 1, "kernels of 3 rows and more sum in one chain");\
    if (single_chain && rows <= 2) {                                                      \
        if (rows == 2 && MAX_ROWS >= 2)                                                   \
            cgru_panel_##T##_##W##2_single(K, h, ldh, panel, acc, accumulate);            \
        else                                                                              \
            for (; rows > 0; rows--, h += ldh, acc += CGRU_PANEL)                         \
                cgru_panel_##T##_##W##1_single(K, h, ldh, panel, acc, accumulate);        \
        return;                                                                           \
    }                                                                                     \
    switch (rows) {                                                                       \
        CGRU_PANEL_CASE(T, MAX_ROWS, 8, W##8)                                             \
        CGRU_PANEL_CASE(T, MAX_ROWS, 7, W##7)                                             \
        CGRU_PANEL_CASE(T, MAX_ROWS, 6, W##6)                                             \
        CGRU_PANEL_CASE(T, MAX_ROWS, 5, W##5)                                             \
        CGRU_PANEL_CASE(T, MAX_ROWS, 4, W##4)                                             \
        CGRU_PANEL_CASE(T, MAX_ROWS, 3, W##3)                                             \
        CGRU_PANEL_CASE(T, MAX_ROWS, 2, W##2)                                             \
        CGRU_PANEL_CASE(T, MAX_ROWS, 1, W##1)                                             \
    }                                                                                     \
    /* more rows than the build's register block holds: never asked for */                \
    for (; rows > 0; rows--, h += ldh, acc += CGRU_PANEL)                                 \
        cgru_panel_##T##_##W##1_single(K, h, ldh, panel, acc, accumulate);                \
}                                                                                         \
/* The product of any number of rows (row m of h at h + m * ldh, of acc at acc + m * 48). \
   A row's sums must not depend on the rows around it, so that a shuffled batch gives the \
   shuffled result bit for bit: the 1- and 2-row kernels run several chains per           \
   accumulator (a different order of the sums) and are kept for calls whose every tile    \
   has that few rows. The caller says which (single_chain: the step, or the call, has     \
   more rows than one register block); more rows go in near-equal blocks of at most       \
   MAX_ROWS, so that none is left with one or two rows where it can be helped (9 rows:    \
   5 + 4, not 8 + 1: no slow single-chain row, and 5% faster in itself). */               \
static inline void cgru_panel_##W##tile_##T(int rows, int K, const T *restrict h,         \
                                            long ldh, const T *restrict panel,            \
                                            T *restrict acc, int accumulate,              \
                                            int single_chain) {                           \
    if (rows <= MAX_ROWS) {                                                               \
        cgru_panel_##W##product_##T(rows, K, h, ldh, panel, acc, accumulate,              \
                                    single_chain);                                        \
        return;                                                                           \
    }                                                                                     \
    const int blocks = (rows + MAX_ROWS - 1) / MAX_ROWS;                                  \
    const int size = rows / blocks, larger = rows % blocks;  /* the first ones: + 1 */    \
    for (int i = 0; i < blocks; i++) {                                                    \
        const int n = size + (i < larger);                                                \
        cgru_panel_##W##product_##T(n, K, h, ldh, panel, acc, accumulate, 1);             \
        h += n * ldh;                                                                     \
        acc += n * CGRU_PANEL;                                                            \
    }                                                                                     \
}
CGRU_PANEL_PRODUCT(float, CGRU_PANEL_ROWS_F, 48, )
CGRU_PANEL_PRODUCT(double, CGRU_PANEL_ROWS_D, 48, )
CGRU_PANEL_PRODUCT(float, CGRU_PANEL_ROWS_F, 32, w32_)
CGRU_PANEL_PRODUCT(double, CGRU_PANEL_ROWS_D, 32, w32_)
CGRU_PANEL_PRODUCT(float, CGRU_PANEL_ROWS_F, 16, w16_)
CGRU_PANEL_PRODUCT(double, CGRU_PANEL_ROWS_D, 16, w16_)

/* The product of the first `cols` columns of a panel (1 <= cols <= 48), computing 16, 32
   or 48 of them: the backward's panels are 48 hidden units wide, and H = 256 leaves a last
   panel of 16, H = 128 one of 32, where computing all 48 wasted an eighth of its recurrent
   products. Each column's sums are those of the 48-wide kernel, bit for bit. */
#define CGRU_PANEL_TILE_COLS(T)                                                           \
static inline void cgru_panel_tile_cols_##T(int rows, int cols, int K,                   \
                                            const T *restrict h, long ldh,                \
                                            const T *restrict panel,                      \
                                            T *restrict acc, int accumulate,              \
                                            int single_chain) {                           \
    if (cols <= 16)                                                                       \
        cgru_panel_w16_tile_##T(rows, K, h, ldh, panel, acc, accumulate, single_chain);   \
    else if (cols <= 32)                                                                  \
        cgru_panel_w32_tile_##T(rows, K, h, ldh, panel, acc, accumulate, single_chain);   \
    else                                                                                  \
        cgru_panel_tile_##T(rows, K, h, ldh, panel, acc, accumulate, single_chain);       \
}
CGRU_PANEL_TILE_COLS(float)
CGRU_PANEL_TILE_COLS(double)

#endif  /* CGRU_PANELS_H */
