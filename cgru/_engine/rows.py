"""The packing utilities' row copies (pyx/_rows.pyx): arrays in, rows copied as bytes, with the
thread count the policy gives for their size. The caller has checked every size, length and
permutation; None stands for "no permutation"."""
import numpy as np

from .. import _rows
from .policy import copy_threads

_NO_PERMUTATION = np.empty(0, dtype=np.int64)


def _byte_rows(array, n_rows):
    """A C-contiguous array as (n_rows, bytes per row) uint8, for the compiled row copies."""
    return array.reshape(n_rows, -1).view(np.uint8)


def _permutation(indices):
    return _NO_PERMUTATION if indices is None else indices


def pack_padded_rows(padded, batch_sizes, sorted_indices, batch_first, data):
    """data (R, *) = the packed rows of padded (L, N, *) ((N, L, *) if batch_first)."""
    steps_by_batch = padded.shape[0] * padded.shape[1]
    _rows.pack_rows(_byte_rows(np.ascontiguousarray(padded), steps_by_batch), batch_sizes,
                    _permutation(sorted_indices), bool(batch_first),
                    _byte_rows(data, data.shape[0]), copy_threads(data.nbytes))


def pad_packed_rows(data, batch_sizes, unsorted_indices, batch_first, fill, padded):
    """padded (T, N, *) ((N, T, *) if batch_first) = data's rows, fill (1, *) elsewhere."""
    steps_by_batch = padded.shape[0] * padded.shape[1]
    _rows.pad_rows(_byte_rows(np.ascontiguousarray(data), data.shape[0]), batch_sizes,
                   _permutation(unsorted_indices), bool(batch_first), _byte_rows(fill, 1)[0],
                   _byte_rows(padded, steps_by_batch), copy_threads(padded.nbytes))


def pack_list_rows(sequences, batch_sizes, sorted_indices, data):
    """data (R, *) = the packed rows of C-contiguous sequences (L_i, *) of data's dtype."""
    if data.nbytes:
        _rows.pack_list_rows([_byte_rows(s, s.shape[0]) for s in sequences], batch_sizes,
                             _permutation(sorted_indices), _byte_rows(data, data.shape[0]),
                             copy_threads(data.nbytes))


def unpack_list_rows(data, batch_sizes, sorted_indices, sequences):
    """Each of sequences (L_i, *), in the caller's order, = its rows of packed data (R, *)."""
    if data.nbytes:
        _rows.unpack_list_rows(_byte_rows(np.ascontiguousarray(data), data.shape[0]),
                               batch_sizes, _permutation(sorted_indices),
                               [_byte_rows(s, s.shape[0]) for s in sequences],
                               copy_threads(data.nbytes))
