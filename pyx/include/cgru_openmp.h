/* The only door to OpenMP. With no OpenMP in the compiler, the same names exist and
   describe a single thread, so every kernel builds and runs serially unchanged. */

#ifndef CGRU_OPENMP_H
#define CGRU_OPENMP_H

#ifdef _OPENMP
#include <omp.h>
#define CGRU_OPENMP 1
/* An orphaned barrier binds to the innermost enclosing parallel region. */
static inline void cgru_barrier(void) {
    #pragma omp barrier
}
#else
#define CGRU_OPENMP 0
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline void cgru_barrier(void) {}
#endif

#endif  /* CGRU_OPENMP_H */
