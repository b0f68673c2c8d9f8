"""What GRU and GRUCell share: parameters by PyTorch name, state_dict, train/eval, save."""
import copy
import warnings
from collections import namedtuple
from collections.abc import Mapping

import numpy as np

from .. import _npz
from .checks import check_dtype, to_numpy

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# torch.nn.Module names that have no meaning for a NumPy module: an AttributeError (so hasattr
# stays False) that says what to do in cgru instead.
TORCH_ONLY = {
    "zero_grad": "cgru modules hold no gradients: each backward() of module.vjp(...) returns a "
                 "new dict of them, so there is nothing to zero",
    "requires_grad_": "backward() of module.vjp(...) returns the gradient of every parameter; "
                      "to keep the module's weights fixed, leave it out of the optimizer's "
                      "params",
    "flatten_parameters": "cgru lays its weights out for the kernel by itself, once, whenever "
                          "they change: there is nothing to call",
    "cuda": "cgru runs on CPUs; module.to_torch() gives the equivalent torch module",
    "half": "float16 is not supported; module.quantize('bfloat16') gives bfloat16 weights",
    "backward": "gradients come from module.vjp(input, hx), which returns (outputs, backward)",
}


class StateDict(dict):
    """What state_dict() returns: a plain dict of copies, marked so that an optimizer given it
    in place of the module can say so (updating the copies would leave the module unchanged)."""

    __slots__ = ()

    def __reduce__(self):       # pickles, and copies, as a plain dict
        return dict, (dict(self),)


class ParameterModule:
    """Base class: named parameter arrays, read as attributes, kept read-only.

    Parameters are read-only NumPy arrays: the kernel works from a copy laid out for speed,
    so an in-place edit would silently not be seen. Assign a new array instead
    (`module.weight_hh_l0 = w`) or use `load_state_dict`; both check the shape and re-lay out.
    Subclasses define `_expected_shapes()` and `_parameters_changed(names)`.
    """

    _params = None

    def _expected_shapes(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _parameters_changed(self, names):  # pragma: no cover - abstract
        raise NotImplementedError

    def _init_parameters(self, rng, bound):
        """U(-bound, bound) for every parameter, drawn in state_dict order."""
        params = {}
        for name, shape in self._expected_shapes().items():
            params[name] = _frozen(rng.uniform(-bound, bound, size=shape).astype(self.dtype))
        object.__setattr__(self, "_params", params)
        self._parameters_changed(list(params))

    def __getattr__(self, name):
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        if name in TORCH_ONLY:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}: "
                                 f"{TORCH_ONLY[name]}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if self._params is not None and name in self._params:
            self.load_state_dict({name: value}, strict=False)
        else:
            object.__setattr__(self, name, value)

    # -- copies, pickles and files ---------------------------------------------------------------

    def _config(self):  # pragma: no cover - abstract
        """The constructor's keyword arguments (dtype as a string), JSON-serialisable."""
        raise NotImplementedError

    def __reduce__(self):
        # Rebuilt from configuration and weights: the kernel's laid-out copies are derived data.
        return _restore, (type(self), self._config(), self.state_dict(), self.training,
                          getattr(self, "_rng", None))

    def save(self, path):
        """Write the configuration and weights to one .npz file (see cgru.load)."""
        _npz.write(path, type(self).__name__, self._config(), self.state_dict())

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._params or ()))

    # -- train / eval ---------------------------------------------------------------------------

    def train(self, mode=True):
        """Set training mode (dropout active when configured); returns the module."""
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"training mode is expected to be boolean, got "
                             f"{type(mode).__name__}")
        object.__setattr__(self, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode (no dropout); returns the module."""
        return self.train(False)

    # -- state ----------------------------------------------------------------------------------

    def named_parameters(self):
        """(name, array) of every parameter, in state_dict order, as torch.nn.Module's. The
        arrays are the parameters themselves, read-only: to change one, assign a new array
        or use load_state_dict (cgru.optim does this for you)."""
        return iter(self._params.items())

    def parameters(self):
        """Every parameter's read-only array, in state_dict order (see named_parameters)."""
        return iter(self._params.values())

    def get_parameter(self, name):
        """The read-only array of the parameter `name` (a state_dict key); AttributeError
        names the module's parameters when there is no such parameter."""
        try:
            return self._params[name]
        except (KeyError, TypeError):
            raise AttributeError(f"{type(self).__name__} has no parameter {name!r}; its "
                                 f"parameters are {list(self._params)}") from None

    def state_dict(self):
        """A dict of copies of the parameters, keys in PyTorch's order. Editing the copies
        does not change the module: load_state_dict them back, or give the optimizer the
        module itself (cgru.optim refuses a state_dict)."""
        return StateDict((name, value.copy()) for name, value in self._params.items())

    # -- PyTorch's names for dtype and device ---------------------------------------------------

    def to(self, *args, dtype=None, device=None):
        """torch's Module.to, for what a NumPy module has: a dtype (numpy.float32 or float64,
        their names, or torch.float32 / torch.float64) gives the module in that dtype: self if
        it has it already, else a new module (a cgru module's dtype is fixed when it is built:
        assign the result, ``gru = gru.to(np.float64)``). The device "cpu" is accepted and
        changes nothing; another device is a ValueError."""
        for arg in args:
            if _is_device(arg):
                device = arg
            elif dtype is None:
                dtype = arg
            else:
                raise TypeError(f"to() takes one dtype and one device, got {args!r}")
        if device is not None and str(device).split(":")[0] != "cpu":
            raise ValueError(f"cgru runs on CPUs only, got device {str(device)!r}; "
                             "module.to_torch() gives the equivalent torch module")
        if dtype is None:
            return self
        if type(dtype).__name__ == "dtype" and str(dtype).startswith("torch."):
            dtype = str(dtype)[len("torch."):]        # (torch not imported)
        dtype = check_dtype(dtype)
        if dtype == self.dtype:
            return self
        module = _restore(type(self), dict(self._config(), dtype=dtype.name), self.state_dict(),
                          self.training, copy.deepcopy(getattr(self, "_rng", None)))
        return module

    def double(self):
        """The module in float64: self if it is, else a new module (see to)."""
        return self.to(np.float64)

    def float(self):
        """The module in float32: self if it is, else a new module (see to)."""
        return self.to(np.float32)

    def load_state_dict(self, state_dict, strict=True):
        """Copy parameters in from a mapping of name -> array-like (torch tensors included).

        strict: missing or unexpected keys raise KeyError; otherwise unexpected keys are ignored
        and missing ones keep their values. A wrong shape is a ValueError either way. Nothing is
        changed unless every given parameter is valid. Returns (missing_keys, unexpected_keys).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError("load_state_dict expects a mapping of parameter names to arrays, "
                            f"got {type(state_dict).__name__}")
        expected = self._expected_shapes()
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        if strict and (missing or unexpected):
            raise KeyError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                           f"missing keys {missing}, unexpected keys {unexpected}")
        updates = {}
        for key, shape in expected.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            try:
                array = to_numpy(value)
            except (TypeError, ValueError) as error:
                raise TypeError(f"{key}: expected an array, got {type(value).__name__} ({error})")
            if array.dtype.kind not in "biuf":
                raise TypeError(f"{key}: expected a real numeric array, got dtype {array.dtype}")
            if array.shape != shape:
                raise ValueError(f"size mismatch for {key}: expected shape {shape}, "
                                 f"got {array.shape}")
            updates[key] = _frozen(np.array(array, dtype=self.dtype, order="C", copy=True))
        self._params.update(updates)
        if updates:
            self._parameters_changed(list(updates))
        return IncompatibleKeys(missing, unexpected)


def assign_parameters(module, values):
    """Trusted update for cgru's own optimizers: values (name -> new array of the parameter's
    shape and dtype, owned by the caller and never used by it again) become the parameters,
    frozen, with one re-layout per changed layer and none of load_state_dict's checks and
    copies (a fifth of a small model's optimizer step)."""
    for value in values.values():
        value.flags.writeable = False
    module._params.update(values)
    module._parameters_changed(list(values))


def _restore(cls, config, state, training, rng):
    with warnings.catch_warnings():      # the dropout warning was given when it was built
        warnings.simplefilter("ignore")
        module = cls(**config)
    if rng is not None:     # the generator as it was: copies draw the same dropout masks
        object.__setattr__(module, "_rng", rng)
    module.load_state_dict(state)
    module.train(training)
    return module


def _is_device(value):
    if type(value).__name__ == "device":        # torch.device
        return True
    return isinstance(value, str) and value.split(":")[0] in (
        "cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "ipu", "hpu", "mtia")


def _frozen(array):
    array.flags.writeable = False
    return array
