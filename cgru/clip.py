"""Gradient clipping on dicts of NumPy gradients: torch.nn.utils's clip_grad_norm_ and
clip_grad_value_, with their arithmetic.

Both take the dicts a backward pass returns (or the user's own) and scale them in place. The
keys "input" and "hx" of a backward dict are gradients with respect to the data, not the
parameters, so they are skipped: neither counted in the norm nor changed. None values are
skipped too, as torch skips parameters whose grad is None.
"""
import numbers
from collections.abc import Mapping

import numpy as np

from ._nn.checks import check_in_place_array

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

# Keys of a backward dict that are not parameter gradients.
SKIPPED_KEYS = ("input", "hx")


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale gradients in place so that their total norm is at most max_norm.

    grads: a dict of name -> writable float32/float64 NumPy array, or a list of such dicts.
    max_norm: the largest total norm allowed (>= 0).
    norm_type: p of the p-norm: any real, float("inf") (or "inf") for the largest absolute value.
    error_if_nonfinite: raise RuntimeError (changing nothing) if the total norm is NaN or inf.
    foreach: accepted for torch's signature; ignored.

    The total norm is the norm of the vector of per-array norms, as if all gradients were
    one vector (torch's definition), in the gradients' dtype (the wider one if mixed). Every
    array is then multiplied by min(max_norm / (total_norm + 1e-6), 1), in its own dtype.
    Returns the total norm as a NumPy scalar (float32(0) when there is nothing to clip).
    TypeError / ValueError for bad input, before anything is changed.
    """
    arrays = _gradient_arrays(grads, "clip_grad_norm_")
    max_norm = _nonnegative("max_norm", max_norm)
    norm_type = _norm_type(norm_type)
    _check_option("error_if_nonfinite", error_if_nonfinite)
    _check_option("foreach", foreach, allow_none=True)
    with np.errstate(all="ignore"):    # torch's IEEE arithmetic is silent: inf, NaN, 1/0
        total = _total_norm(arrays, norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from "
                           "`parameters` is non-finite, so it cannot be clipped. To disable "
                           "this error and scale the gradients by the non-finite norm anyway, "
                           "set `error_if_nonfinite=False`")
    if arrays:
        t = total.dtype.type
        # torch: max_norm / tensor is tensor.reciprocal() * max_norm, in the tensor's dtype
        coef = np.minimum((t(1) / (total + t(1e-6))) * t(max_norm), t(1))
        with np.errstate(all="ignore"):
            for array in arrays:
                array *= array.dtype.type(coef)
    return total


def clip_grad_value_(grads, clip_value, foreach=None):
    """Clip gradients in place to [-clip_value, clip_value]; returns None.

    grads: a dict of name -> writable float32/float64 NumPy array, or a list of such dicts.
    clip_value: the largest absolute value allowed (>= 0). NaNs stay NaN, as in torch.
    foreach: accepted for torch's signature; ignored.
    """
    arrays = _gradient_arrays(grads, "clip_grad_value_")
    clip_value = _nonnegative("clip_value", clip_value)
    _check_option("foreach", foreach, allow_none=True)
    for array in arrays:
        t = array.dtype.type
        np.clip(array, t(-clip_value), t(clip_value), out=array)


def _gradient_arrays(grads, caller):
    """The arrays to clip, in order, all checked first: a failing call changes nothing."""
    if isinstance(grads, Mapping):
        grads = [grads]
    elif not isinstance(grads, (list, tuple)):
        raise TypeError(f"{caller}: expected a dict of gradients or a list of dicts, got "
                        f"{type(grads).__name__}")
    arrays = []
    for position, given in enumerate(grads):
        if not isinstance(given, Mapping):
            raise TypeError(f"{caller}: grads[{position}] must be a dict of gradients, got "
                            f"{type(given).__name__}")
        for name, array in given.items():
            if name in SKIPPED_KEYS or array is None:
                continue
            arrays.append(check_in_place_array(array, f"{caller}: grads[{position}][{name!r}]",
                                               "scaled in place"))
    return arrays


def _total_norm(arrays, norm_type):
    """torch's two-level norm: the norm of the per-array norms (so p = 0 counts arrays)."""
    if not arrays:
        return np.float32(0.0)
    norms = [_vector_norm(array, norm_type) for array in arrays]
    dtype = np.result_type(*arrays)
    return _vector_norm(np.array(norms, dtype=dtype), norm_type)


def _vector_norm(array, norm_type):
    """The p-norm of all elements, in the array's dtype; 0 for an empty array."""
    flat = array.reshape(-1)
    if flat.size == 0:
        return array.dtype.type(0)
    return array.dtype.type(np.linalg.norm(flat, ord=norm_type))


def _nonnegative(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not 0.0 <= value:           # written so that NaN fails too
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def _norm_type(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise TypeError(f"norm_type must be a real number or 'inf', got {type(value).__name__}")
    try:
        value = float(value)       # torch's conversion: "inf" is accepted
    except ValueError:
        raise ValueError(f"norm_type must be a real number or 'inf', got {value!r}") from None
    if np.isnan(value):
        raise ValueError("norm_type must not be NaN")
    return value


def _check_option(name, value, allow_none=False):
    if not (isinstance(value, (bool, np.bool_)) or (allow_none and value is None)):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")
