"""Large result arrays on recycled memory.

Memory fresh from the operating system costs a page fault per 4 KB page the first time it is
written: 0.2-0.3 ms per MB on the development VM. glibc gives large freed blocks back to the
system when enough of them pile up at the top of its heap, and S5's two 13 MB layer outputs
came fresh on every call (5-6 ms of 167). So a large array is a view of a block that returns to
a bounded free list when the last array using it is gone; the next call of about the same size
takes it from there, its pages already mapped: S5 at one thread 169.3 -> 159.9 ms. (S8's
smaller arrays, which glibc kept, gained nothing.)

The free list holds at most what the process has had leased at once (so keeping blocks never
raises its peak memory), at least 64 MB and at most 1 GB. A fixed 64 MB could not keep S6's
105 MB of saved gates for training: every forward of vjp faulted them in again (vjp +16-18%
over the forward at one thread, +4-6% once kept).
"""
import math
import threading

import numpy as np

from .. import _rows
from .aligned import ALIGNMENT, SMALL_BYTES, aligned_empty
from .policy import copy_threads

# Smaller arrays come from NumPy: their faults are few, and a lease costs about 2 us.
RECYCLE_MIN_BYTES = 1 << 20
# The free list holds at most the most bytes leased at once, within these bounds; blocks
# given back beyond that are released.
FREE_LIST_MIN_BYTES = 64 << 20
FREE_LIST_MAX_BYTES = 1 << 30


def recycled_empty(shape, dtype):
    """np.empty(shape, dtype), C-contiguous and 64-byte aligned; large ones on recycled memory.

    The array (and every view of it) keeps its block leased; when the last is gone, the block
    goes back to the free list.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < SMALL_BYTES:            # first, and cheap: one-step calls come here (S1)
        return np.empty(shape, dtype)
    if nbytes < RECYCLE_MIN_BYTES:
        return aligned_empty(shape, dtype)
    shape = tuple(int(n) for n in shape)
    size_class = _size_class(nbytes)
    block = _FREE.take(size_class)
    _FREE.lease(size_class)
    if block is None:
        block = np.empty(size_class + ALIGNMENT, dtype=np.uint8)
    return np.asarray(_Lease(block, size_class, shape, dtype))


def recycled_copy(array):
    """A C-contiguous copy of `array` that is not read again soon (vjp's private copy of its
    input rows, for the backward pass): of RECYCLE_MIN_BYTES or more, on recycled memory, by
    non-temporal stores (pyx/include/cgru_copy.h), which do not read the destination first
    and keep the source in cache for the kernel that reads it next (S8's vjp at one thread:
    the copy 0.38 -> 0.25 ms, the forward after it 14.2 -> 13.7 ms), with the packing
    utilities' threads (policy.copy_threads: S8's vjp over its forward at two threads
    +8.4% -> +7.7%). Smaller ones are NumPy's own copies: an aligned block and a
    copy into it cost S1's training step 2-3 us more."""
    if array.nbytes < RECYCLE_MIN_BYTES:
        return np.array(array, order="C")
    copy = recycled_empty(array.shape, array.dtype)
    source = np.ascontiguousarray(array)
    _rows.stream_copy(source.reshape(-1).view(np.uint8), copy.reshape(-1).view(np.uint8),
                      copy_threads(copy.nbytes))
    return copy


def recycled_zeros(shape, dtype):
    """np.zeros(shape, dtype), of RECYCLE_MIN_BYTES or more on recycled memory (the backward's
    weight gradients). Smaller ones are np.zeros's: calloc's zeroed pages came 8 us cheaper a
    call than an aligned block filled with zeros (S1's training step, 2 of them: 171 -> 190 us)."""
    dtype = np.dtype(dtype)
    if math.prod(shape) * dtype.itemsize < RECYCLE_MIN_BYTES:
        return np.zeros(shape, dtype)
    zeros = recycled_empty(shape, dtype)
    zeros.fill(0)
    return zeros


def _size_class(nbytes):
    """nbytes rounded up to one of 8 sizes per power of two (at most 12.5% more)."""
    step = 1 << max(0, nbytes.bit_length() - 4)
    return -(-nbytes // step) * step


class _FreeList:
    """Blocks not leased, by size class, at most `limit()` bytes of them. The classes are kept
    in the order of their last give-back; a block that does not fit evicts the blocks of the
    classes given back longest ago (the sizes of an earlier workload: S5's blocks, kept after
    S5's training steps, left no room for S6's saved gates in the next, 710 ms against 634 ms
    a step at 2 threads)."""

    def __init__(self):
        self._blocks = {}       # size class -> blocks; oldest give-back first
        self.nbytes = 0
        self._lock = threading.Lock()
        # Bytes leased now and at most; their own lock, held only for integer arithmetic (no
        # allocation there can start a garbage collection, and so no __del__ inside it).
        self.leased = 0
        self.peak_leased = 0
        self._count_lock = threading.Lock()

    def lease(self, size_class):
        with self._count_lock:
            self.leased += size_class
            if self.leased > self.peak_leased:
                self.peak_leased = self.leased

    def limit(self):
        """How many bytes the list may hold."""
        return min(max(FREE_LIST_MIN_BYTES, self.peak_leased), FREE_LIST_MAX_BYTES)

    def take(self, size_class):
        with self._lock:
            blocks = self._blocks.get(size_class)
            if not blocks:
                return None
            self.nbytes -= size_class
            return blocks.pop()

    def give_back(self, block, size_class):
        with self._count_lock:
            self.leased -= size_class
        # Never waits: it runs from __del__, which a garbage collection may start inside
        # take() on the same thread; when the lock is busy the block is simply released.
        if not self._lock.acquire(blocking=False):
            return
        try:
            limit = self.limit()
            if size_class > limit:
                return
            for stale in list(self._blocks):
                if self.nbytes + size_class <= limit:
                    break
                if stale != size_class:
                    self.nbytes -= stale * len(self._blocks.pop(stale))
            if self.nbytes + size_class <= limit:
                self.nbytes += size_class
                blocks = self._blocks.pop(size_class, [])   # and back in, as the newest
                blocks.append(block)
                self._blocks[size_class] = blocks
        finally:
            self._lock.release()

    def clear(self):
        """Release every block held (leases are unaffected)."""
        with self._lock:
            self._blocks = {}
            self.nbytes = 0


_FREE = _FreeList()


class _Lease:
    """Holds a block while arrays use it: NumPy makes it their base (through the array
    interface), so it is deleted with the last of them, and gives the block back."""

    __slots__ = ("_block", "_size_class", "__array_interface__")

    def __init__(self, block, size_class, shape, dtype):
        self._block = block
        self._size_class = size_class
        address = block.__array_interface__["data"][0]
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                    "data": (address + -address % ALIGNMENT, False)}

    def __del__(self):
        try:
            _FREE.give_back(self._block, self._size_class)
        except Exception:  # pragma: no cover - interpreter shutdown: module globals gone
            pass
