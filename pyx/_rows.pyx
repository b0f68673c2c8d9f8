# Row copies for packing and padding (and vjp's private copy of its input rows, stream_copy): one
# memcpy per row, rows of any dtype seen as bytes, in parallel, each destination row written once,
# in order. Which source row lands where is worked out here from the batch sizes and the sorting
# permutation, so no index array is built: NumPy index arrays cost 50 us of a 0.24 ms pack and 90
# us of a 0.49 ms pad of S8's batch (6841 rows), and NumPy's fancy-index gather and scatter were 2x
# slower than these loops.
# The caller (cgru/packing.py) checks every size, length and permutation; nothing is checked here.
# Also here, gather_transpose: the transposing copy that lays weights out for the kernel
# (cgru/_engine/weights.py).

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy


cdef extern from "cgru_copy.h":
    void cgru_stream_copy(void *dst, const void *src, size_t n) noexcept nogil


cdef int64_t *_offsets(const int64_t[::1] batch_sizes) except NULL:
    """offsets[t] = sum(batch_sizes[:t]), for t in 0..L, in memory the caller frees."""
    cdef Py_ssize_t t, n_steps = batch_sizes.shape[0]
    cdef int64_t *offsets = <int64_t *> malloc((n_steps + 1) * sizeof(int64_t))
    if offsets == NULL:
        raise MemoryError("cgru: could not allocate the packed rows' offsets")
    offsets[0] = 0
    for t in range(n_steps):
        offsets[t + 1] = offsets[t] + batch_sizes[t]
    return offsets


def pack_rows(const unsigned char[:, ::1] padded, const int64_t[::1] batch_sizes,
              const int64_t[::1] sorted_indices, bint batch_first,
              unsigned char[:, ::1] data, int n_threads):
    """Gather the packed rows of a padded batch.

    padded (L_pad * N, B) bytes: (L_pad, N, ...) rows, or (N, L_pad, ...) if batch_first;
    batch_sizes (L,) non-increasing, L <= L_pad; sorted_indices (N,): the batch position of the
    sequence of each rank (longest first), or empty for the identity; data (sum(batch_sizes), B)
    bytes, written: row offsets[t] + b is sequence sorted_indices[b] at step t.
    """
    cdef Py_ssize_t n_steps = batch_sizes.shape[0], width = data.shape[1]
    cdef Py_ssize_t batch = batch_sizes[0] if n_steps else 0
    cdef Py_ssize_t pad_len = padded.shape[0] // batch if batch else 0
    cdef bint permuted = sorted_indices.shape[0] > 0
    cdef Py_ssize_t t, b, sequence, source
    cdef int64_t *offsets
    if n_steps == 0 or width == 0:
        return
    offsets = _offsets(batch_sizes)
    with nogil:
        # steps dealt round-robin: their sizes only shrink, so threads get equal shares
        for t in prange(n_steps, num_threads=n_threads, schedule="static", chunksize=1):
            for b in range(batch_sizes[t]):
                sequence = sorted_indices[b] if permuted else b
                source = sequence * pad_len + t if batch_first else t * batch + sequence
                memcpy(&data[offsets[t] + b, 0], &padded[source, 0], width)
    free(offsets)


def pad_rows(const unsigned char[:, ::1] data, const int64_t[::1] batch_sizes,
             const int64_t[::1] unsorted_indices, bint batch_first,
             const unsigned char[::1] fill, unsigned char[:, ::1] padded, int n_threads):
    """Scatter packed rows into a padded batch, `fill` everywhere else.

    data (sum(batch_sizes), B) bytes as pack_rows writes it; unsorted_indices (N,): the rank of
    the sequence at each batch position, or empty for the identity; padded (T * N, B) bytes,
    T >= L, written entirely: (T, N, ...) rows, or (N, T, ...) if batch_first.
    """
    cdef Py_ssize_t n_steps = batch_sizes.shape[0], width = padded.shape[1]
    cdef Py_ssize_t batch = batch_sizes[0] if n_steps else 0
    cdef Py_ssize_t total_len = padded.shape[0] // batch if batch else 0
    cdef bint permuted = unsorted_indices.shape[0] > 0
    cdef Py_ssize_t row, t, sequence, rank
    cdef int64_t *offsets
    if n_steps == 0 or width == 0:
        return
    offsets = _offsets(batch_sizes)
    with nogil:
        for row in prange(padded.shape[0], num_threads=n_threads, schedule="static"):
            if batch_first:
                sequence = row // total_len
                t = row - sequence * total_len
            else:
                t = row // batch
                sequence = row - t * batch
            rank = unsorted_indices[sequence] if permuted else sequence
            if t < n_steps and rank < batch_sizes[t]:
                memcpy(&padded[row, 0], &data[offsets[t] + rank, 0], width)
            else:
                memcpy(&padded[row, 0], &fill[0], width)
    free(offsets)


cdef unsigned char **_row_pointers(list arrays) except NULL:
    """The data addresses of C-contiguous arrays (their memory stays owned by the list)."""
    cdef Py_ssize_t i, n = len(arrays)
    cdef unsigned char **pointers = <unsigned char **> malloc(max(n, 1) * sizeof(void *))
    if pointers == NULL:
        raise MemoryError("cgru: could not allocate the sequence table")
    for i in range(n):
        pointers[i] = <unsigned char *> <size_t> arrays[i].__array_interface__["data"][0]
    return pointers


def pack_list_rows(list sequences, const int64_t[::1] batch_sizes,
                   const int64_t[::1] sorted_indices, unsigned char[:, ::1] data,
                   int n_threads):
    """Gather the packed rows straight from a list of sequences, with no padded batch between.

    sequences: N C-contiguous arrays (L_i, ...) of one dtype, B bytes a row, L_i matching
    batch_sizes; sorted_indices (N,) as in pack_rows, or empty for the identity; data
    (sum(batch_sizes), B) bytes, written: row offsets[t] + b is step t of sequence
    sorted_indices[b].
    """
    if batch_sizes.shape[0] > 0 and data.shape[1] > 0:
        _list_rows(sequences, batch_sizes, sorted_indices, &data[0, 0], data.shape[1],
                   n_threads, True)


def unpack_list_rows(const unsigned char[:, ::1] data, const int64_t[::1] batch_sizes,
                     const int64_t[::1] sorted_indices, list sequences, int n_threads):
    """The inverse of pack_list_rows: scatter packed rows into N preallocated C-contiguous
    arrays (L_i, ...) (written entirely), sequences[sorted_indices[b]] from rank b."""
    if batch_sizes.shape[0] > 0 and data.shape[1] > 0:
        _list_rows(sequences, batch_sizes, sorted_indices, <unsigned char *> &data[0, 0],
                   data.shape[1], n_threads, False)


cdef int _list_rows(list sequences, const int64_t[::1] batch_sizes,
                    const int64_t[::1] sorted_indices, unsigned char *data, Py_ssize_t width,
                    int n_threads, bint to_packed) except -1:
    """pack_list_rows (to_packed: sequences -> data) or unpack_list_rows (data -> sequences),
    data's row r at data + r * width."""
    cdef Py_ssize_t n_steps = batch_sizes.shape[0]
    cdef bint permuted = sorted_indices.shape[0] > 0
    cdef Py_ssize_t t, b, sequence
    cdef int64_t *offsets
    cdef unsigned char **rows = _row_pointers(sequences)
    try:
        offsets = _offsets(batch_sizes)
    except MemoryError:
        free(rows)
        raise
    with nogil:
        for t in prange(n_steps, num_threads=n_threads, schedule="static", chunksize=1):
            for b in range(batch_sizes[t]):
                sequence = sorted_indices[b] if permuted else b
                if to_packed:
                    memcpy(data + (offsets[t] + b) * width, rows[sequence] + t * width, width)
                else:
                    memcpy(rows[sequence] + t * width, data + (offsets[t] + b) * width, width)
    free(rows)
    free(offsets)
    return 0


def stream_copy(const unsigned char[::1] source, unsigned char[::1] destination,
                int n_threads):
    """destination[:] = source (bytes of equal length, checked by the caller), by non-temporal
    stores where destination is 16-byte aligned (pyx/include/cgru_copy.h says why); the
    threads each copy a run of whole 64-byte lines."""
    cdef Py_ssize_t n = source.shape[0], part, start, stop
    cdef Py_ssize_t parts = max(1, n_threads)
    cdef Py_ssize_t run = ((n + parts - 1) // parts + 63) // 64 * 64
    if n == 0:
        return
    with nogil:
        for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
            start = part * run
            stop = min(n, start + run)
            if start < stop:
                cgru_stream_copy(&destination[start], &source[start], stop - start)


def gather_transpose(const floating[:, ::1] source, const int64_t[::1] rows,
                     floating[:, ::1] destination):
    """destination[j, m] = source[rows[m], j]: the rows of source in the order `rows`,
    transposed (source (R, J), rows (M,) in 0..R-1, destination (J, M); checked by the caller).

    In tiles of 16 x 16, whose 16 source rows and 16 destination rows stay in L1: NumPy's
    transposing copy of a gathered (3H, H) weight reads each source line once per value it
    writes (S3's W_hh, H = 256: 270 us a copy, at every weight update).
    """
    cdef Py_ssize_t n_rows = rows.shape[0], width = source.shape[1]
    cdef Py_ssize_t m0, j0, m, j, m1, j1
    cdef const floating *row
    with nogil:
        for m0 in range(0, n_rows, 16):
            m1 = min(m0 + 16, n_rows)
            for j0 in range(0, width, 16):
                j1 = min(j0 + 16, width)
                for m in range(m0, m1):
                    row = &source[rows[m], 0]
                    for j in range(j0, j1):
                        destination[j, m] = row[j]
