"""cgru.clip_grad_norm_ and cgru.clip_grad_value_: against values computed here from their
definitions, and live against torch.nn.utils when torch is installed."""
import numpy as np
import pytest

import cgru

# rtol: the per-array norms are summed in a different order than here or in torch.
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-13}
NORM_TYPES = [2.0, 1, float("inf"), 3.5]


def _grads(rng, dtype=np.float32, scale=1.0):
    """A backward-like dict (with "input" and "hx") and a second dict of gradients."""
    first = {"input": rng.standard_normal((5, 3)).astype(dtype) * 100,
             "hx": rng.standard_normal((2, 4)).astype(dtype) * 100,
             "weight": (rng.standard_normal((6, 3)) * scale).astype(dtype),
             "bias": (rng.standard_normal(6) * scale).astype(dtype)}
    second = {"head": (rng.standard_normal((2, 4)) * scale).astype(dtype)}
    return first, second


def _parameter_arrays(grads_list):
    return [v for grads in grads_list for k, v in grads.items() if k not in ("input", "hx")]


def _copy(grads_list):
    return [{k: v.copy() for k, v in grads.items()} for grads in grads_list]


def _reference_norm(arrays, norm_type):
    """The p-norm of all elements as one float64 vector, from the definition."""
    flat = np.abs(np.concatenate([a.astype(np.float64).ravel() for a in arrays]))
    if norm_type == float("inf"):
        return flat.max()
    return (flat ** norm_type).sum() ** (1.0 / norm_type)


def _torch_clip(torch, arrays, function, *args, **kwargs):
    """torch's result on tensors whose .grad holds copies of arrays: (result, new grads)."""
    tensors = []
    for array in arrays:
        tensor = torch.zeros(array.shape, dtype=getattr(torch, array.dtype.name))
        tensor.grad = torch.tensor(array.copy())
        tensors.append(tensor)
    result = function(tensors, *args, **kwargs)
    return result, [t.grad.numpy() for t in tensors]


# -- clip_grad_norm_ ----------------------------------------------------------------------------

@pytest.mark.parametrize("as_list", [False, True], ids=["dict", "list"])
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_norm_from_definition(dtype, norm_type, as_list, rng):
    first, second = _grads(rng, dtype, scale=2.0)
    grads = [first, second] if as_list else first
    before = _copy([first, second])
    arrays = _parameter_arrays([first, second] if as_list else [first])
    expected_total = _reference_norm(arrays, norm_type)
    max_norm = 0.5 * expected_total
    total = cgru.clip_grad_norm_(grads, max_norm, norm_type=norm_type)
    assert type(total) is np.dtype(dtype).type and np.ndim(total) == 0
    np.testing.assert_allclose(total, expected_total, rtol=RTOL[np.dtype(dtype)])
    coef = min(max_norm / (expected_total + 1e-6), 1.0)
    for saved, now in zip(before, [first, second]):
        for key, value in now.items():
            scaled = key not in ("input", "hx") and (as_list or now is first)
            expected = saved[key] * coef if scaled else saved[key]
            assert value.dtype == np.dtype(dtype)
            np.testing.assert_allclose(value, expected, rtol=RTOL[np.dtype(dtype)])
            if not scaled:
                np.testing.assert_array_equal(value, saved[key])
    assert np.isclose(_reference_norm(arrays, norm_type), max_norm, rtol=1e-5)


@pytest.mark.parametrize("norm_type", NORM_TYPES + [0, -1.0, -float("inf"), "inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_norm_matches_torch(torch, dtype, norm_type, rng):
    first, second = _grads(rng, dtype, scale=3.0)
    arrays = _parameter_arrays([first, second])
    expected_total, expected = _torch_clip(torch, arrays, torch.nn.utils.clip_grad_norm_, 1.5,
                                           norm_type=norm_type)
    total = cgru.clip_grad_norm_([first, second], 1.5, norm_type=norm_type)
    assert total.dtype == np.dtype(dtype) and expected_total.numpy().dtype == total.dtype
    np.testing.assert_allclose(total, expected_total.numpy(), rtol=RTOL[np.dtype(dtype)])
    for value, torch_value in zip(arrays, expected):
        np.testing.assert_allclose(value, torch_value, rtol=RTOL[np.dtype(dtype)], atol=0)


def test_clip_norm_mixed_dtypes_match_torch(torch, rng):
    grads = {"a": rng.standard_normal(5).astype(np.float32), "b": rng.standard_normal((2, 3))}
    expected_total, expected = _torch_clip(torch, list(grads.values()),
                                           torch.nn.utils.clip_grad_norm_, 0.3)
    total = cgru.clip_grad_norm_(grads, 0.3)
    assert total.dtype == np.float64
    np.testing.assert_allclose(total, expected_total.numpy(), rtol=1e-7)
    for value, torch_value in zip(grads.values(), expected):
        assert value.dtype == torch_value.dtype
        np.testing.assert_allclose(value, torch_value, rtol=1e-6)


def test_clip_norm_below_max_leaves_values(rng):
    first, second = _grads(rng)
    before = _copy([first, second])
    total = cgru.clip_grad_norm_([first, second], 1e6)
    np.testing.assert_allclose(total, _reference_norm(_parameter_arrays(before), 2), rtol=1e-6)
    for saved, now in zip(before, [first, second]):
        for key in saved:
            np.testing.assert_array_equal(now[key], saved[key])


def test_clip_norm_skips_input_hx_and_none(rng):
    first, _ = _grads(rng)
    input_grad, hx_grad = first["input"].copy(), first["hx"].copy()
    first["unused"] = None
    total = cgru.clip_grad_norm_(first, 0.1)
    np.testing.assert_array_equal(first["input"], input_grad)
    np.testing.assert_array_equal(first["hx"], hx_grad)
    assert first["unused"] is None
    np.testing.assert_allclose(cgru.clip_grad_norm_(first, 1e6), 0.1, rtol=1e-5)
    assert total > 1


@pytest.mark.parametrize("grads", [{}, [], [{}, {}], {"input": np.ones(3), "hx": None}])
def test_clip_norm_nothing_to_clip(grads):
    total = cgru.clip_grad_norm_(grads, 1.0)
    assert type(total) is np.float32 and total == 0


def test_clip_norm_nonfinite(rng):
    grads = {"w": np.array([1.0, np.inf, 2.0], dtype=np.float32), "b": np.ones(2, np.float32)}
    before = _copy([grads])[0]
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        cgru.clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
    for key in grads:
        np.testing.assert_array_equal(grads[key], before[key])
    total = cgru.clip_grad_norm_(grads, 1.0)
    assert np.isinf(total)
    assert np.isnan(grads["w"][1]) and np.all(grads["b"] == 0)


def test_clip_norm_nonfinite_matches_torch(torch):
    arrays = [np.array([1.0, np.nan, 2.0], dtype=np.float32), np.ones(2, np.float32)]
    expected_total, expected = _torch_clip(torch, arrays, torch.nn.utils.clip_grad_norm_, 1.0)
    total = cgru.clip_grad_norm_({"a": arrays[0], "b": arrays[1]}, 1.0)
    np.testing.assert_array_equal(total, expected_total.numpy())
    for value, torch_value in zip(arrays, expected):
        np.testing.assert_array_equal(value, torch_value)


# -- clip_grad_value_ ---------------------------------------------------------------------------

def _clip_from_definition(array, clip_value):
    return np.where(array > clip_value, clip_value, np.where(array < -clip_value, -clip_value,
                                                             array)).astype(array.dtype)


@pytest.mark.parametrize("clip_value", [0.0, 0.3, 1, 100.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_value_from_definition(dtype, clip_value, rng):
    first, second = _grads(rng, dtype)
    first["bias"][0] = np.nan
    before = _copy([first, second])
    assert cgru.clip_grad_value_([first, second], clip_value) is None
    for saved, now in zip(before, [first, second]):
        for key, value in now.items():
            expected = saved[key] if key in ("input", "hx") else \
                _clip_from_definition(saved[key], dtype(clip_value))
            assert value.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(value, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_value_matches_torch(torch, dtype, rng):
    first, second = _grads(rng, dtype, scale=2.0)
    arrays = _parameter_arrays([first, second])
    result, expected = _torch_clip(torch, arrays, torch.nn.utils.clip_grad_value_, 0.7)
    assert cgru.clip_grad_value_([first, second], 0.7) is result is None
    for value, torch_value in zip(arrays, expected):
        np.testing.assert_array_equal(value, torch_value)


# -- bad input: raises, changes nothing ---------------------------------------------------------

def _read_only(shape):
    array = np.ones(shape)
    array.flags.writeable = False
    return array


_BAD_GRADS = [   # (function of a valid dict -> the bad argument, error, message pattern)
    (lambda good: 3, TypeError, "expected a dict of gradients or a list"),
    (lambda good: np.ones(3), TypeError, "got ndarray"),
    (lambda good: "weights", TypeError, "got str"),
    (lambda good: [good, [1]], TypeError, r"grads\[1\] must be a dict"),
    (lambda good: [good, {"w": [1.0, 2.0]}], TypeError, "must be a NumPy array"),
    (lambda good: [good, {"w": 1.0}], TypeError, "must be a NumPy array"),
    (lambda good: [good, {"w": np.ones(3, dtype=np.int32)}], TypeError,
     "float32 or float64 array, got dtype int32"),
    (lambda good: [good, {"w": np.ones(3, dtype=np.float16)}], TypeError, "got dtype float16"),
    (lambda good: [good, {"w": _read_only(3)}], ValueError, r"grads\[1\]\['w'\] is read-only"),
]


@pytest.mark.parametrize("function", [cgru.clip_grad_norm_, cgru.clip_grad_value_],
                         ids=["norm", "value"])
@pytest.mark.parametrize("make_bad,error,pattern", _BAD_GRADS)
def test_bad_grads_change_nothing(function, make_bad, error, pattern, rng):
    good = {"w": rng.standard_normal(4) * 10}
    before = good["w"].copy()
    with pytest.raises(error, match=pattern):
        function(make_bad(good), 1e-3)
    np.testing.assert_array_equal(good["w"], before)


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(max_norm="1"), TypeError, "max_norm must be a real number"),
    (dict(max_norm=None), TypeError, "max_norm must be a real number"),
    (dict(max_norm=True), TypeError, "max_norm must be a real number"),
    (dict(max_norm=-1.0), ValueError, "max_norm must be >= 0"),
    (dict(max_norm=float("nan")), ValueError, "max_norm must be >= 0"),
    (dict(max_norm=1.0, norm_type="two"), ValueError, "norm_type must be a real number or 'inf'"),
    (dict(max_norm=1.0, norm_type=None), TypeError, "norm_type must be a real number"),
    (dict(max_norm=1.0, norm_type=float("nan")), ValueError, "must not be NaN"),
    (dict(max_norm=1.0, error_if_nonfinite="yes"), TypeError, "error_if_nonfinite must be"),
    (dict(max_norm=1.0, foreach=1), TypeError, "foreach must be True, False or None"),
])
def test_clip_norm_bad_arguments(kwargs, error, pattern, rng):
    grads = {"w": rng.standard_normal(4) * 10}
    before = grads["w"].copy()
    with pytest.raises(error, match=pattern):
        cgru.clip_grad_norm_(grads, **kwargs)
    np.testing.assert_array_equal(grads["w"], before)


@pytest.mark.parametrize("kwargs,error", [
    (dict(clip_value="1"), TypeError), (dict(clip_value=-0.5), ValueError),
    (dict(clip_value=float("nan")), ValueError), (dict(clip_value=1.0, foreach="no"), TypeError),
])
def test_clip_value_bad_arguments(kwargs, error, rng):
    grads = {"w": rng.standard_normal(4) * 10}
    before = grads["w"].copy()
    with pytest.raises(error):
        cgru.clip_grad_value_(grads, **kwargs)
    np.testing.assert_array_equal(grads["w"], before)


def test_foreach_accepted(rng):
    grads = {"w": rng.standard_normal(4)}
    for foreach in (None, True, False):
        cgru.clip_grad_norm_(grads, 1.0, foreach=foreach)
        cgru.clip_grad_value_(grads, 1.0, foreach=foreach)


def test_exported():
    assert {"clip_grad_norm_", "clip_grad_value_"} <= set(cgru.__all__)
