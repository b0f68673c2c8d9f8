"""Input validation shared by the modules: every check runs here, before compiled code.

Errors say what was expected and what came, in PyTorch's words where PyTorch has them.
"""
import numbers

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_size(name, value):
    """A positive integer configuration value (input_size, hidden_size, num_layers)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")
    return int(value)


def check_dropout(value):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 <= value <= 1):
        raise ValueError("dropout should be a number in range [0, 1] representing the "
                         f"probability of an element being zeroed, got {value!r}")
    return float(value)


def check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}") from None
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {dtype}")
    return dtype


def check_rng(seed):
    """A numpy Generator from None, an int, a SeedSequence or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(
            seed, (numbers.Integral, np.random.SeedSequence))):
        raise TypeError(f"seed must be None, an int or a numpy.random.Generator, "
                        f"got {type(seed).__name__}")
    return np.random.default_rng(seed)


def to_numpy(value):
    """A NumPy view of an array-like, torch tensors included (duck-typed: torch not imported)."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:           # e.g. bfloat16, which NumPy has no type for
            return value.float().numpy()
    return np.asarray(value)


def numeric_array(value, name):
    """A NumPy view of real numeric array data (torch tensors included); TypeError naming
    `name` for anything else."""
    try:
        array = to_numpy(value)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} must be a numeric array; could not convert "
                        f"{type(value).__name__}: {error}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got an array of dtype {array.dtype}")
    return array


def check_in_place_array(array, where, purpose, read_only_hint=""):
    """A writable float32/float64 NumPy array that an optimizer or a clip changes in place
    (`purpose`: "updated in place", "scaled in place"); TypeError or ValueError naming
    `where` otherwise."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{where} must be a NumPy array (it is {purpose}), got "
                        f"{type(array).__name__}")
    if array.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{where} must be a float32 or float64 array, got dtype {array.dtype}")
    if not array.flags.writeable:
        raise ValueError(f"{where} is read-only; it is {purpose}{read_only_hint}")
    return array


def as_float_array(value, name, dtype):
    """`value` as an array of `dtype`, always a new C-contiguous array the caller cannot see.

    TypeError for what is not numeric array data: strings, None, dicts, plain Python
    scalars, object or complex arrays.
    """
    if type(value) is np.ndarray and value.ndim and value.dtype.kind in "biuf":
        # the common case first: the checks below cost about 1 us (S1's call takes 9)
        return np.array(value, dtype=dtype, order="C", copy=True)
    if value is None or isinstance(value, (str, bytes, dict, numbers.Number, np.generic)):
        raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    array = numeric_array(value, name)
    if array.ndim == 0:
        raise TypeError(f"{name} must be an array, got a 0-d array (scalar)")
    return np.array(array, dtype=dtype, order="C", copy=True)


def check_lengths(lengths, batch, seq_len, name="lengths"):
    """`lengths` as a NumPy array of `batch` integers in 1..seq_len (one per sequence);
    ValueError naming `name` otherwise."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or len(lengths) != batch:
        raise ValueError(f"{name}: expected {batch} integers (one per sequence), got dtype "
                         f"{lengths.dtype}, shape {lengths.shape}")
    if lengths.min() < 1 or lengths.max() > seq_len:
        raise ValueError(f"{name}: values must be in 1..{seq_len}, got "
                         f"{lengths.min()}..{lengths.max()}")
    return lengths
