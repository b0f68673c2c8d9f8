/* A copy whose destination is not read again soon (vjp's private copy of its input rows, read
   back by the backward pass): where the destination is 16-byte aligned, by non-temporal
   stores, which neither read each destination line first nor push out of the cache the
   source rows the forward pass reads next. */

#ifndef CGRU_COPY_H
#define CGRU_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static inline void cgru_stream_copy(void *restrict dst, const void *restrict src, size_t n) {
#if defined(__SSE2__)
    if ((uintptr_t)dst % 16 == 0) {
        char *d = (char *)dst;
        const char *s = (const char *)src;
        size_t i = 0;
        for (; i + 64 <= n; i += 64) {      /* a whole line at a time */
            const __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
            const __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
            const __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
            const __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
            _mm_stream_si128((__m128i *)(d + i), a);
            _mm_stream_si128((__m128i *)(d + i + 16), b);
            _mm_stream_si128((__m128i *)(d + i + 32), c);
            _mm_stream_si128((__m128i *)(d + i + 48), e);
        }
        memcpy(d + i, s + i, n - i);
        _mm_sfence();       /* before any other thread may read the copy */
        return;
    }
#endif
    memcpy(dst, src, n);
}

#endif  /* CGRU_COPY_H */
