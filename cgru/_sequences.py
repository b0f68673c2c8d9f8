"""Sequence data for the scikit-learn estimators: X in any of the shapes they accept, checked
with scikit-learn's own validation (its error messages), as one batch the GRU can run.

Accepted X, n samples:
    (n, L, F) array              L steps of F features each
    (n, L) array or DataFrame    univariate sequences: F = 1, and L columns as scikit-learn
                                 counts features
    list / object array of (L_i, F) arrays (or (L_i,) univariate ones): sequences of their
                                 own lengths, run packed (never padded)
"""
import numbers

import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import validate_data

import cgru
from cgru import packing as _packing


class Sequences:
    """n checked sequences of F features: dense (n, L, F), or ragged: sequence i is
    rows[starts[i]:starts[i] + lengths[i]] of one (sum of lengths, F) array."""

    def __init__(self, dense=None, rows=None, starts=None, lengths=None):
        self.dense, self.rows, self.starts, self._lengths = dense, rows, starts, lengths
        self.n_samples = len(dense) if dense is not None else len(lengths)
        self.n_features = (dense if dense is not None else rows).shape[-1]

    def take(self, indices):
        """The sequences at `indices`, as a new Sequences (ragged ones still share rows)."""
        if self.dense is not None:
            return Sequences(dense=self.dense[indices])
        return Sequences(rows=self.rows, starts=self.starts[indices],
                         lengths=self._lengths[indices])

    def gru_input(self):
        """What a batch_first cgru.GRU takes: the (n, L, F) array, or a PackedSequence (as
        cgru.pack_sequence(..., enforce_sorted=False) packs it, by one gather of the rows:
        the sequences were checked once, and packing a training batch of them through
        pack_sequence cost 11% of a JapaneseVowels training step)."""
        if self.dense is not None:
            return self.dense
        sorted_indices = _packing.length_order(self._lengths, enforce_sorted=False)
        lengths = self._lengths[sorted_indices]
        batch_sizes = _packing.batch_sizes_of(lengths)
        # packed row k is step t of the sequence of rank b: t and b of every row, vectorised
        steps = np.repeat(np.arange(len(batch_sizes)), batch_sizes)
        first_of_step = np.cumsum(batch_sizes) - batch_sizes
        ranks = np.arange(len(steps)) - np.repeat(first_of_step, batch_sizes)
        data = self.rows[self.starts[sorted_indices][ranks] + steps]
        return cgru.PackedSequence(data, batch_sizes, sorted_indices)

    def lengths(self):
        if self.dense is not None:
            return np.full(self.n_samples, self.dense.shape[1])
        return self._lengths.copy()


def _is_ragged(X):
    """A list or object array of sequences (arrays), not a rectangular array of numbers."""
    if hasattr(X, "iloc") or (isinstance(X, np.ndarray) and X.dtype != object):
        return False
    if not isinstance(X, (list, tuple, np.ndarray)) or len(X) == 0:
        return False
    first = X[0] if not isinstance(X, np.ndarray) else X.flat[0]
    if isinstance(first, (numbers.Number, str, bytes, dict)) or first is None:
        return False
    shapes = {np.shape(s) for s in X}
    # a list of equal-shape 2-D arrays is a 3-D array; of 1-D ones, a 2-D array of numbers
    return len(shapes) > 1 or (isinstance(X, np.ndarray) and X.ndim == 1)


def check_sequences(estimator, X, *, dtype, reset):
    """Validate X for `estimator` (scikit-learn's checks and wording) and return Sequences.

    reset=True (fit): records n_features_in_ (and feature_names_in_ for a DataFrame) and the
    GRU's input width in `estimator._n_channels`; reset=False: checks X against them.
    """
    if _is_ragged(X):
        sequences = [np.asarray(s.to_numpy() if hasattr(s, "iloc") else s) for s in X]
        sequences = [s[:, None] if s.ndim == 1 else s for s in sequences]
        if any(s.ndim != 2 for s in sequences):
            raise ValueError("Each sequence in X must be a 2-D array (seq_len, n_features)")
        widths = {s.shape[1] for s in sequences}
        if len(widths) > 1:
            raise ValueError(f"All sequences in X must have the same number of features, "
                             f"got {sorted(widths)}")
        # one check of all the rows together: scikit-learn's checks (and messages) once, not
        # per sequence, which cost 115 us each (43 of a 51 ms predict on JapaneseVowels)
        rows = check_array(np.concatenate(sequences), dtype=dtype, input_name="X")
        ends = np.cumsum([len(s) for s in sequences])
        empty = np.flatnonzero(np.diff(ends, prepend=0) == 0)
        if empty.size:
            raise ValueError(f"Found array with 0 sample(s) (shape=(0, {rows.shape[1]})) while "
                             f"a minimum of 1 is required: sequence {empty[0]} of X has no "
                             f"steps")
        lengths = np.diff(ends, prepend=0)
        batch = Sequences(rows=np.ascontiguousarray(rows), starts=ends - lengths,
                          lengths=lengths)
        _check_features(estimator, batch.n_features, reset, two_d=False)
        return batch
    array = np.asarray(X) if not hasattr(X, "iloc") and not hasattr(X, "shape") else X
    if getattr(array, "ndim", 2) == 3:
        dense = check_array(array, dtype=dtype, allow_nd=True, input_name="X")
        _check_features(estimator, dense.shape[2], reset, two_d=False)
        return Sequences(dense=np.ascontiguousarray(dense))
    # 2-D (and the 1-D and empty cases scikit-learn's validation reports)
    if reset or getattr(estimator, "_fitted_on_2d", False):
        dense = validate_data(estimator, X, dtype=dtype, reset=reset)
    else:
        dense = check_array(X, dtype=dtype, input_name="X")
    _check_features(estimator, 1, reset, two_d=True)
    return Sequences(dense=np.ascontiguousarray(dense)[:, :, None])


def _check_features(estimator, n_channels, reset, two_d):
    name = type(estimator).__name__
    if reset:
        estimator._n_channels = n_channels
        estimator._fitted_on_2d = two_d
        if not two_d:
            estimator.n_features_in_ = n_channels
            if hasattr(estimator, "feature_names_in_"):
                del estimator.feature_names_in_
        return
    if n_channels != estimator._n_channels:
        raise ValueError(f"X has {n_channels} features, but {name} is expecting "
                         f"{estimator._n_channels} features as input.")
