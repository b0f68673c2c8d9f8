"""64-byte aligned NumPy arrays: the kernel's vector loads of weight panels, states and outputs.

An AVX-512 load that straddles two cache lines costs two; NumPy's allocations are only 16-byte
aligned when they come from the heap, and that made batch-1 calls 40% slower at random,
depending on where the W_hh panels happened to land (0.44 vs 0.61 ms for S2).
"""
import numpy as np

ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """np.empty(shape, dtype), C-contiguous, its data starting on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_copy(array, dtype):
    """A 64-byte aligned C-contiguous copy of `array` in `dtype`."""
    out = aligned_empty(np.shape(array), dtype)
    out[...] = array
    return out
