# The GRU kernel compiled for one instruction set (avx512); setup.py sets the flags and
# cgru/_engine.py picks the best module the CPU supports. The sources are pyx/_gru.pxi
# (forward), pyx/_gru_backward.pxi (backward) and pyx/_quant.pxi (reduced precision).
include "_gru.pxi"
include "_gru_backward.pxi"
include "_quant.pxi"
