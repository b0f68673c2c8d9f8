# The only door to OpenMP: pyx/include/cgru_openmp.h (serial stand-ins without OpenMP).

cdef extern from "cgru_openmp.h":
    bint CGRU_OPENMP
    int omp_get_thread_num() noexcept nogil
    int omp_get_max_threads() noexcept nogil
    int omp_get_num_threads() noexcept nogil
    void cgru_barrier() noexcept nogil
