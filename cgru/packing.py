"""Variable-length batches: PackedSequence and torch.nn.utils.rnn's utilities, for NumPy.

A PackedSequence stores a batch of sequences time-major, longest first: the rows of step t are
the batch_sizes[t] sequences still running at t. GRU runs it directly, and no step touches
padding. Semantics and field values are PyTorch's; unlike PyTorch 2.13, lengths longer than
the time axis are refused rather than read past the data.
"""
import numbers
from collections import namedtuple

import numpy as np

from ._engine import recycled_empty, rows
from ._nn.checks import to_numpy

__all__ = ["PackedSequence", "pack_padded_sequence", "pad_packed_sequence", "pack_sequence",
           "pad_sequence", "unpack_sequence", "unpad_sequence"]


class PackedSequence(namedtuple("PackedSequence",
                                ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """A packed batch of variable-length sequences.

    data             (sum(lengths), *)  the rows of step 0, then those of step 1, ...
    batch_sizes      (L,) int64         sequences still running at each step, non-increasing
    sorted_indices   (N,) int64 or None batch order -> packed order (longest first)
    unsorted_indices (N,) int64 or None its inverse; derived from sorted_indices when omitted
    """

    __slots__ = ()

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if batch_sizes is None:
            raise TypeError("PackedSequence needs batch_sizes; build one with "
                            "pack_padded_sequence or pack_sequence")
        if unsorted_indices is None and sorted_indices is not None:
            # Derived here as in PyTorch; a malformed permutation (not ints, not a
            # permutation) is left for check_packed to report when the sequence is used.
            try:
                sorted_array = np.asarray(sorted_indices)
            except (ValueError, TypeError):
                sorted_array = None
            if sorted_array is not None and sorted_array.ndim == 1 and \
                    sorted_array.dtype.kind in "iu" and \
                    (np.sort(sorted_array) == np.arange(sorted_array.shape[0])).all():
                unsorted_indices = _invert_permutation(sorted_array)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (L, N, *) ((N, L, *) if batch_first) of sequences of given lengths.

    lengths: N ints in 1..L. With enforce_sorted, they must be non-increasing and the result
    has no sorting indices; otherwise the batch is sorted longest first (stable for ties) and
    the permutation is recorded in sorted_indices / unsorted_indices.
    """
    padded = _as_array(input, "input")
    if padded.ndim < 2:
        raise ValueError(f"pack_padded_sequence: expected input of at least 2 dimensions "
                         f"(L, N, *), got {padded.ndim}D")
    max_len, batch = padded.shape[1::-1] if batch_first else padded.shape[:2]
    if batch == 0:
        raise ValueError(f"pack_padded_sequence: expected a non-empty batch, got batch size 0 "
                         f"(input of shape {padded.shape}, batch_first={bool(batch_first)})")
    lengths = _check_lengths(lengths, batch, max_len)
    sorted_indices = length_order(lengths, enforce_sorted)
    if sorted_indices is not None:
        lengths = lengths[sorted_indices]
    batch_sizes = batch_sizes_of(lengths)
    data = recycled_empty((int(lengths.sum()),) + padded.shape[2:], padded.dtype)
    rows.pack_padded_rows(padded, batch_sizes, sorted_indices, batch_first, data)
    return PackedSequence(data, batch_sizes, sorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Inverse of pack_padded_sequence: returns (padded (T, N, *) or (N, T, *), lengths (N,)).

    T is total_length if given (at least the longest length), else the longest length.
    Sequences and lengths are in the caller's (unsorted) batch order.
    """
    data, batch_sizes, sorted_indices, unsorted = check_packed(sequence)
    max_len = len(batch_sizes)
    if total_length is not None:
        if isinstance(total_length, bool) or not isinstance(total_length, numbers.Integral):
            raise TypeError(f"total_length must be an int, got {type(total_length).__name__}")
        if total_length < max_len:
            raise ValueError("Expected total_length to be at least the length of the longest "
                             f"sequence in input, but got total_length={total_length} and max "
                             f"sequence length being {max_len}")
        max_len = int(total_length)
    batch = int(batch_sizes[0])
    # the sequence of rank b runs while batch_sizes[t] > b (batch sizes never grow)
    lengths = np.searchsorted(-batch_sizes, -np.arange(batch), side="left").astype(np.int64)
    trailing = data.shape[1:]
    padded = recycled_empty(((batch, max_len) if batch_first else (max_len, batch)) + trailing,
                            data.dtype)
    fill = _padding_fill(padding_value, trailing, data.dtype)
    rows.pad_packed_rows(data, batch_sizes, unsorted, batch_first, fill, padded)
    if unsorted is not None:
        lengths = lengths[unsorted]
    return padded, lengths


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack sequences (L_i, *) into (max L_i, N, *) ((N, max L_i, *) if batch_first).

    padding_side: 'right' pads after each sequence, 'left' before it.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    arrays = _as_sequence_list(sequences)
    max_len = max(a.shape[0] for a in arrays)
    dtype = np.result_type(*arrays)
    padded = _padding_fill(padding_value, (len(arrays), max_len) + arrays[0].shape[1:], dtype)
    for i, a in enumerate(arrays):
        if padding_side == "right":
            padded[i, :a.shape[0]] = a
        else:
            padded[i, max_len - a.shape[0]:] = a
    return padded if batch_first else np.ascontiguousarray(np.swapaxes(padded, 0, 1))


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of sequences (L_i, *); with enforce_sorted, longest first.

    The rows go straight from the list into the packed data, one copy: padding first (as
    PyTorch does) built a 72 MB batch for 2000 words of up to 35 steps of 256 features and
    took 0.36 s, longer than the GRU over them.
    """
    arrays = _as_sequence_list(sequences)
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    lengths = _check_lengths(lengths, len(arrays), int(lengths.max()))
    sorted_indices = length_order(lengths, enforce_sorted)
    if sorted_indices is not None:
        lengths = lengths[sorted_indices]
    dtype = np.result_type(*arrays)
    data = recycled_empty((int(lengths.sum()),) + arrays[0].shape[1:], dtype)
    batch_sizes = batch_sizes_of(lengths)
    rows.pack_list_rows([np.ascontiguousarray(a, dtype=dtype) for a in arrays], batch_sizes,
                        sorted_indices, data)
    return PackedSequence(data, batch_sizes, sorted_indices)


def unpack_sequence(packed_sequences):
    """The list of sequences (L_i, *) in a PackedSequence, in the caller's batch order (each
    gathered straight from the packed rows: no padded batch between)."""
    data, batch_sizes, sorted_indices, _ = check_packed(packed_sequences)
    # rank b runs while batch_sizes[t] > b: its length is the number of such steps
    lengths_by_rank = np.searchsorted(-batch_sizes, -np.arange(int(batch_sizes[0])),
                                      side="left")
    ranks = np.arange(len(lengths_by_rank)) if sorted_indices is None else \
        _invert_permutation(sorted_indices)
    sequences = [np.empty((int(lengths_by_rank[r]),) + data.shape[1:], dtype=data.dtype)
                 for r in ranks]
    rows.unpack_list_rows(data, batch_sizes, sorted_indices, sequences)
    return sequences


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The list of sequences (L_i, *) in a padded batch (L, N, *) ((N, L, *) if batch_first)."""
    padded = _as_array(padded_sequences, "padded_sequences")
    if padded.ndim < 2:
        raise ValueError(f"unpad_sequence: expected padded sequences of at least 2 dimensions, "
                         f"got {padded.ndim}D")
    if not batch_first:
        padded = np.swapaxes(padded, 0, 1)
    lengths = _check_lengths(lengths, padded.shape[0], padded.shape[1])
    return [padded[i, :n].copy() for i, n in enumerate(lengths)]


def as_packed(value):
    """value as cgru's PackedSequence if it is one, or another library's with the same four
    fields (torch.nn.utils.rnn.PackedSequence: its tensors become NumPy arrays, as tensors
    given as input do; duck-typed, torch is not imported); else None."""
    if isinstance(value, PackedSequence):
        return value
    if type(value).__name__ == "PackedSequence" and \
            all(hasattr(value, field) for field in PackedSequence._fields):
        fields = [getattr(value, field) for field in PackedSequence._fields]
        return PackedSequence(*[None if f is None else _to_numpy(f, f"PackedSequence.{name}",
                                                                  "an array")
                                for f, name in zip(fields, PackedSequence._fields)])
    return None


def check_packed(sequence, dtype=None):
    """Validate a PackedSequence's fields against each other before any compiled code reads them.

    sequence: cgru's PackedSequence or torch's (see as_packed). Returns (data, batch_sizes
    (int64), sorted_indices, unsorted_indices), data converted to dtype (C-contiguous) when one
    is given.
    """
    packed = as_packed(sequence)
    if packed is None:
        raise TypeError(f"expected a PackedSequence, got {type(sequence).__name__}")
    sequence = packed
    data = _as_array(sequence.data, "PackedSequence.data")
    if data.ndim < 1:
        raise ValueError("PackedSequence.data must have at least 1 dimension (sum(lengths), *)")
    if dtype is not None and data.dtype.kind not in "biuf":
        # (converting would drop the imaginary part of complex data, with only a warning)
        raise TypeError(f"PackedSequence.data must be a real numeric array, got an array of "
                        f"dtype {data.dtype}")
    batch_sizes = _int_vector(sequence.batch_sizes, "PackedSequence.batch_sizes")
    if batch_sizes.size == 0:
        raise ValueError("PackedSequence.batch_sizes is empty: expected one entry per timestep")
    # (array methods, not np.any / np.diff: this runs on every packed call, and their
    # dispatch cost 6 of its 18 us)
    if batch_sizes.min() <= 0:
        raise ValueError(f"PackedSequence.batch_sizes must be positive, got {batch_sizes.tolist()}")
    if (batch_sizes[1:] > batch_sizes[:-1]).any():
        raise ValueError("PackedSequence.batch_sizes must be non-increasing, got "
                         f"{batch_sizes.tolist()}")
    rows, total = data.shape[0], int(batch_sizes.sum())
    if total != rows or rows >= 1 << 31 or batch_sizes[0] > rows:
        # the int64 sum wraps around: [2**63 - 1, 2**63 - 1, 2] "sums" to 0
        total = int(batch_sizes.sum(dtype=object))
    if total != rows:
        raise ValueError(f"PackedSequence.data has {rows} rows but batch_sizes sum to {total}")
    batch = int(batch_sizes[0])
    sorted_indices = _permutation(sequence.sorted_indices, batch, "sorted_indices")
    unsorted_indices = _permutation(sequence.unsorted_indices, batch, "unsorted_indices")
    if unsorted_indices is None and sorted_indices is not None:
        unsorted_indices = _invert_permutation(sorted_indices)
    elif sorted_indices is None and unsorted_indices is not None:
        sorted_indices = _invert_permutation(unsorted_indices)
    elif sorted_indices is not None and not (
            sorted_indices[unsorted_indices] == np.arange(batch)).all():
        raise ValueError("PackedSequence.unsorted_indices must be the inverse permutation of "
                         "sorted_indices")
    if dtype is not None:      # converted once every field is known to be consistent
        data = np.ascontiguousarray(data, dtype=dtype)
    return data, batch_sizes, sorted_indices, unsorted_indices


# -- helpers ------------------------------------------------------------------------------------

def _to_numpy(value, name, what):
    try:
        return to_numpy(value)
    except (ValueError, TypeError) as error:     # ragged lists, objects NumPy cannot read
        raise TypeError(f"{name} must be {what}; could not convert "
                        f"{type(value).__name__}: {error}") from None


def _as_array(value, name):
    if value is None or isinstance(value, (str, bytes, dict, numbers.Number)):
        raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    array = _to_numpy(value, name, "a numeric array")
    if array.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a numeric array, got dtype {array.dtype}")
    return array


def _int_vector(value, name):
    if value is None or isinstance(value, (str, bytes, dict, numbers.Number)):
        raise TypeError(f"{name} must be a 1-D array of ints, got {type(value).__name__}")
    array = _to_numpy(value, name, "a 1-D array of ints")
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise TypeError(f"{name} must be a 1-D array of ints, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        # (the int64 copy would wrap them around to negative values)
        raise ValueError(f"{name} must fit in int64, got a value of {array.max()}")
    return array.astype(np.int64)


def length_order(lengths, enforce_sorted):
    """None (lengths already non-increasing, as enforce_sorted demands), or the stable
    longest-first permutation."""
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise ValueError("`lengths` array must be sorted in decreasing order when "
                             "`enforce_sorted` is True. You can pass `enforce_sorted=False` "
                             "to pack_padded_sequence and/or pack_sequence to sidestep this "
                             "requirement if you do not need ONNX exportability; got "
                             f"{lengths.tolist()}")
        return None
    return np.argsort(-lengths, kind="stable").astype(np.int64)


def _check_lengths(lengths, batch, max_len):
    lengths = _int_vector(lengths, "lengths")
    if lengths.shape[0] != batch:
        raise ValueError(f"Expected `len(lengths)` to be equal to batch_size, but got "
                         f"{lengths.shape[0]} (batch_size={batch})")
    if np.any(lengths <= 0):
        raise ValueError(f"lengths must be positive: a sequence of length 0 cannot be packed; "
                         f"got {lengths.tolist()}")
    if np.any(lengths > max_len):
        raise ValueError(f"lengths must not exceed the time axis ({max_len}); got "
                         f"{lengths.tolist()}")
    return lengths


def _padding_fill(value, shape, dtype):
    """An array of `shape` filled with padding_value in the data's dtype: TypeError for what
    is not a number (or complex for real data), ValueError for a number the dtype cannot
    hold (10**400 in float32, 1000 in int8: NumPy's OverflowError)."""
    dtype = np.dtype(dtype)
    complex_ok = dtype.kind == "c"
    number = numbers.Complex if complex_ok else numbers.Real
    if not isinstance(value, number) and not (
            isinstance(value, np.ndarray) and value.ndim == 0
            and value.dtype.kind in ("biufc" if complex_ok else "biuf")):
        raise TypeError(f"padding_value must be a {'number' if complex_ok else 'real number'} "
                        f"(the data is {dtype}), got {type(value).__name__}")
    try:
        return np.full(shape, value, dtype=dtype)
    except OverflowError as error:
        shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "..."
        raise ValueError(f"padding_value {shown} does not fit the data's dtype {dtype}: "
                         f"{error}") from None


# the identity permutation, for the row copies
def batch_sizes_of(sorted_lengths):
    """Sequences still running at each step: those longer than it (lengths non-increasing)."""
    ascending = sorted_lengths[::-1]
    steps = np.arange(int(sorted_lengths[0]))
    return (len(ascending) - np.searchsorted(ascending, steps, side="right")).astype(np.int64)


def _permutation(value, batch, name):
    if value is None:
        return None
    indices = _int_vector(value, f"PackedSequence.{name}")
    if indices.shape[0] != batch or not (np.sort(indices) == np.arange(batch)).all():
        raise ValueError(f"PackedSequence.{name} must be a permutation of range({batch}), "
                         f"got {indices.tolist()}")
    return indices


def _invert_permutation(permutation):
    inverse = np.empty_like(permutation, dtype=np.int64)
    inverse[permutation] = np.arange(permutation.shape[0], dtype=np.int64)
    return inverse


def _as_sequence_list(sequences):
    if isinstance(sequences, (str, bytes, dict)) or not hasattr(sequences, "__len__"):
        raise TypeError(f"expected a list of arrays, got {type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("expected a non-empty list of sequences")
    arrays = [_as_array(s, f"sequences[{i}]") for i, s in enumerate(sequences)]
    for i, a in enumerate(arrays):
        if a.ndim < 1:
            raise ValueError(f"sequences[{i}] must have a time axis, got a 0-d array")
        if a.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"all sequences must have the same trailing shape: sequences[0] "
                             f"has {arrays[0].shape[1:]}, sequences[{i}] has {a.shape[1:]}")
    return arrays
