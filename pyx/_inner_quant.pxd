# Declarations; the C, and why it is C, is in pyx/include/cgru_quant.h.

cdef extern from "cgru_quant.h":
    int CGRU_QI_ROWS
    const char *CGRU_BF16_PRODUCT      # what the products compile to in this build (cgru info)
    int CGRU_BF16_ROWS                 # rows of h per pass over a bfloat16 panel
    const char *CGRU_QI_PRODUCT
    void cgru_bf16_panel_product(int rows, int K, const float *h, long ldh,
                                 const unsigned int *panel, float *acc,
                                 int accumulate) noexcept nogil
    void cgru_int8_panel_product(int rows, int K2, const short *q, long ldq,
                                 const signed char *panel, int *acc,
                                 int accumulate) noexcept nogil
    void cgru_quantize_rows(int rows, int K, const float *h, long ldh, short *q, long ldq,
                            float *scale) noexcept nogil
    void cgru_dequantize_acc(int rows, void *acc, const float *row_scale,
                             const float *col_scale) noexcept nogil
