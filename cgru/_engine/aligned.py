"""64-byte aligned NumPy arrays: the kernel's vector loads of weight panels, states and outputs.

An AVX-512 load that straddles two cache lines costs two; NumPy's allocations are only 16-byte
aligned when they come from the heap, and that made batch-1 calls 40% slower at random,
depending on where the W_hh panels happened to land (0.44 vs 0.61 ms for S2).
"""
import math

import numpy as np

ALIGNMENT = 64


# Below this size an array is left as NumPy allocates it: aligning costs about 1 us, which is
# a tenth of a one-step call (S1), and a few split loads do not matter.
SMALL_BYTES = 16 << 10


def aligned_empty(shape, dtype):
    """np.empty(shape, dtype), C-contiguous, its data on a 64-byte boundary when it is large."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize     # np.prod on a tuple costs microseconds
    if nbytes < SMALL_BYTES:
        return np.empty(shape, dtype=dtype)
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_copy(array, dtype):
    """A C-contiguous copy of `array` in `dtype`, 64-byte aligned when large."""
    out = aligned_empty(np.shape(array), dtype)
    out[...] = array
    return out
