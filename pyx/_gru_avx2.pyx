# The GRU kernel compiled for one instruction set (avx2); setup.py sets the flags and
# cgru/_engine.py picks the best module the CPU supports. The source is pyx/_gru.pxi.
include "_gru.pxi"
