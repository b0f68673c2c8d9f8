# Declarations; the C, and why it is C, is in pyx/include/cgru_backward.h.

cdef extern from "cgru_backward.h":
    void cgru_gate_grads_float(int rows, int hidden, const float *save, const float *h_prev,
                               const float *g_out, const float *g_out2, long ld_out,
                               float *g, long ld_g, float *dgi, float *dgh,
                               float *db) noexcept nogil
    void cgru_gate_grads_double(int rows, int hidden, const double *save,
                                const double *h_prev, const double *g_out,
                                const double *g_out2, long ld_out,
                                double *g, long ld_g, double *dgi, double *dgh,
                                double *db) noexcept nogil
