# Declarations of the innermost C code of a step, which lives in pyx/include/ (each header says
# why it is C): the vector types and helpers, the fused gate pass, the register-blocked products.

cdef extern from "cgru_vec.h":
    void *cgru_alloc(size_t n) noexcept nogil
    void cgru_free(void *p) noexcept nogil
    void cgru_prefetch_rows(const void *p, long ld_bytes, int rows, long bytes) noexcept nogil
    void cgru_stream_fence() noexcept nogil


cdef extern from "cgru_gates.h":
    void cgru_gate_rows_float(int rows, int u, const float *gi, long ld_gi, int si,
                              const float *gh, long ld_gh, int sh, const float *bias_gi, int sb,
                              const float *bias_hn, const float *h_prev, long ld_prev,
                              float *h_next, long ld_next, float *save,
                              long ld_save, float *save_h,
                              long ld_save_h) noexcept nogil
    void cgru_gate_rows_double(int rows, int u, const double *gi, long ld_gi, int si,
                               const double *gh, long ld_gh, int sh, const double *bias_gi,
                               int sb, const double *bias_hn, const double *h_prev,
                               long ld_prev, double *h_next, long ld_next, double *save,
                               long ld_save, double *save_h,
                               long ld_save_h) noexcept nogil


cdef extern from "cgru_panels.h":
    int CGRU_PANEL_ROWS
    int CGRU_PANEL_ROWS_F
    int CGRU_PANEL_ROWS_D
    void cgru_panel_tile_float(int rows, int K, const float *h, long ldh, const float *panel,
                               float *acc, int accumulate, int single_chain) noexcept nogil
    void cgru_panel_tile_double(int rows, int K, const double *h, long ldh,
                                const double *panel, double *acc, int accumulate,
                                int single_chain) noexcept nogil
    void cgru_panel_tile_cols_float(int rows, int cols, int K, const float *h, long ldh,
                                    const float *panel, float *acc, int accumulate,
                                    int single_chain) noexcept nogil
    void cgru_panel_tile_cols_double(int rows, int cols, int K, const double *h, long ldh,
                                     const double *panel, double *acc, int accumulate,
                                     int single_chain) noexcept nogil
