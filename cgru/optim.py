"""Optimizers for training cgru modules: torch.optim's SGD, Adam and AdamW on NumPy arrays.

    import cgru.optim
    opt = cgru.optim.Adam([gru, head], lr=1e-3)      # a module and a dict of the user's arrays
    opt.step([gru_grads, head_grads])                # one dict of gradients per entry

Each update follows torch 2.13's single-tensor (``foreach=False``) algorithm operation by
operation, in the parameter's dtype, so that a run matches torch.optim's to float rounding.

Parameters are given as ``params``: a cgru module (GRU, GRUCell: any ParameterModule), a dict
of name -> writable float32/float64 NumPy array, or a list of these. They form one flat,
stable sequence (entries in order; a module's parameters in state_dict order; a dict's in its
insertion order) whose positions index ``state_dict()["state"]``. One parameter group only.

Design: ``step`` validates the hyperparameters and every gradient first, then computes every
new parameter and buffer as new arrays (the parameters of one dtype laid end to end, so that
each operation runs once per step rather than once per array), and only then writes them (a dict's arrays in place,
a module through one ``load_state_dict`` per step, which re-lays-out each layer once). So a
step that raises changes nothing, and the caller's gradient arrays are never written.

Pickling an optimizer pickles the modules and arrays it updates along with it. To keep them
connected after loading, pickle them in one call: ``pickle.dumps((gru, head, opt))`` (pickle
keeps shared references within one dump); ``opt.params`` gives the entries it updates.
"""
import math
import numbers
from collections import namedtuple
from collections.abc import Mapping

import numpy as np

from ._nn.checks import check_in_place_array, numeric_array, to_numpy
from ._nn.parameters import ParameterModule, StateDict, assign_parameters

__all__ = ["SGD", "Adam", "AdamW"]

# Keys of a module's backward dict that are not parameters: accepted by step and ignored.
BACKWARD_EXTRA_KEYS = ("input", "hx")
# Hyperparameters of torch.optim's param_groups that do not change the arithmetic here;
# a torch state_dict carrying them still loads.
_TORCH_ONLY_GROUP_KEYS = ("foreach", "differentiable", "fused", "capturable")

# One parameter in the flat order: its entry's position in params, its name, shape, dtype.
_Slot = namedtuple("_Slot", ["entry", "name", "shape", "dtype"])


def _hyperparameter(name):
    """A property reading and writing param_groups[0][name]; a bad value changes nothing."""

    def get(self):
        return self._groups[0][name]

    def set(self, value):
        group = dict(self._groups[0])
        group[name] = value
        self._groups[0].update(self._check_group(group))

    return property(get, set, doc=f"The hyperparameter {name!r} (param_groups[0][{name!r}]).")


class _Optimizer:
    """What SGD, Adam and AdamW share: parameters, gradient checks, the atomic step, state."""

    _HYPERPARAMETERS = ()      # names, in the order of the constructor; each a property

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._HYPERPARAMETERS:
            setattr(cls, name, _hyperparameter(name))
    _STATE_KEYS = ()           # every buffer a parameter's state may hold
    _decoupled = None          # AdamW's weight decay; None where the notion does not apply
    _run_layout = None         # built by _runs on first use (also after unpickling)

    def __init__(self, params, hyperparameters):
        self._entries = _check_params(params)
        self._slots = _flatten(self._entries)
        self._groups = [self._check_group(hyperparameters)]
        self._state = {}

    # -- hyperparameters ------------------------------------------------------------------------

    @property
    def param_groups(self):
        """[dict of hyperparameters]: torch-style; edit it (e.g. ``["lr"]``) between steps.

        Values set here are checked at the next step; ``opt.lr = ...`` checks at once.
        """
        return self._groups

    @property
    def params(self):
        """The entries updated, in order: modules, and dicts of the user's arrays."""
        return [entry if isinstance(entry, ParameterModule) else dict(entry)
                for entry in self._entries]

    def _check_group(self, group):  # pragma: no cover - abstract
        """A validated copy of a dict of hyperparameters, as Python scalars."""
        raise NotImplementedError

    def _check_group_keys(self, group):
        if not isinstance(group, Mapping):
            raise TypeError(f"{type(self).__name__}: the parameter group must be a dict, got "
                            f"{type(group).__name__}")
        if set(group) != set(self._HYPERPARAMETERS):
            raise ValueError(f"{type(self).__name__}: the parameter group must have the keys "
                             f"{list(self._HYPERPARAMETERS)}, got {list(group)}")

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in self._groups[0].items())
        return f"{type(self).__name__}({settings})"

    # -- the step -------------------------------------------------------------------------------

    def step(self, grads):
        """Update every parameter from its gradient.

        grads: one dict per params entry (a list in params' order; a dict alone when there is
        one entry). For a module: every parameter by its state_dict name, shaped like it;
        "input" and "hx" (from the backward pass) are accepted and ignored. For a dict of
        arrays: exactly its keys. Gradients are array-likes (torch tensors too), converted to
        the parameter's dtype. ValueError for missing or unknown keys, wrong shapes or a wrong
        count of dicts; TypeError for what is not numeric array data. Nothing changes unless
        every check passes.
        """
        if len(self._groups) != 1:
            raise ValueError(f"{type(self).__name__} has one parameter group, "
                             f"param_groups has {len(self._groups)}")
        group = self._check_group(self._groups[0])
        self._check_state_for(group)
        gradients = self._gather(grads)
        params = [self._read(slot) for slot in self._slots]
        new_params, new_state = [None] * len(self._slots), {}
        for indices, bounds in self._runs():
            states = [self._state.get(index) for index in indices]
            if len(indices) > 1 and _same_kind_of_state(states):
                # The update is elementwise: run once over the parameters laid end to end
                # (bitwise the same numbers as array by array, a fraction of the calls).
                param, state = self._update(_concatenate(params, indices),
                                            _concatenate(gradients, indices),
                                            _concatenate_state(states), group)
                pieces = _split(param, state, bounds)
            else:
                pieces = [self._update(params[i], gradients[i], s, group)
                          for i, s in zip(indices, states)]
            for index, (param, state) in zip(indices, pieces):
                new_params[index] = param
                if state:              # as torch: plain SGD keeps no state
                    new_state[index] = state
        self._write(new_params)
        self._state = new_state

    def _runs(self):
        """The flat positions grouped by dtype, each group updated in one pass, with where
        each parameter lies in the group's flat arrays: [(indices, [(start, stop, shape)])]."""
        if self._run_layout is None:
            runs = {}
            for index, slot in enumerate(self._slots):
                runs.setdefault(slot.dtype, []).append(index)
            self._run_layout = []
            for indices in runs.values():
                bounds, start = [], 0
                for index in indices:
                    shape = self._slots[index].shape
                    bounds.append((start, start + math.prod(shape), shape))
                    start += math.prod(shape)
                self._run_layout.append((indices, bounds))
        return self._run_layout

    def _check_state_for(self, group):
        """Refuse a step the state cannot support (Adam: amsgrad switched on mid-run)."""

    def _update(self, param, grad, state, group):  # pragma: no cover - abstract
        """(new param, new state dict) for one parameter; writes into none of its inputs.

        param, grad: arrays of one shape and the parameter's dtype; state: the parameter's
        state dict, None before its first step.
        """
        raise NotImplementedError

    def _read(self, slot):
        entry = self._entries[slot.entry]
        if isinstance(entry, ParameterModule):
            return entry.get_parameter(slot.name)
        return entry[slot.name]

    def _write(self, new_params):
        per_module = {}
        for slot, value in zip(self._slots, new_params):
            entry = self._entries[slot.entry]
            if isinstance(entry, ParameterModule):
                per_module.setdefault(slot.entry, {})[slot.name] = value
            else:
                entry[slot.name][...] = value
        for position, values in per_module.items():
            assign_parameters(self._entries[position], values)

    def _gather(self, grads):
        """Every gradient, checked, as an array of its parameter's dtype (the caller's own when it
already is one: nothing writes into it), in flat order."""
        if isinstance(grads, Mapping) and len(self._entries) == 1:
            grads = [grads]
        elif isinstance(grads, Mapping):
            raise TypeError(f"step: expected a list of {len(self._entries)} gradient dicts "
                            "(one per params entry), got one dict")
        elif not isinstance(grads, (list, tuple)):
            raise TypeError(f"step: expected a dict of gradients or a list of dicts, got "
                            f"{type(grads).__name__}")
        if len(grads) != len(self._entries):
            raise ValueError(f"step: expected {len(self._entries)} gradient dicts (one per "
                             f"params entry), got {len(grads)}")
        for position, (entry, given) in enumerate(zip(self._entries, grads)):
            _check_gradient_keys(position, entry, given)
        return [_as_gradient(grads[slot.entry][slot.name], slot, _label(slot))
                for slot in self._slots]

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self):
        """{"state": {index: {buffer name: array, ...}}, "param_groups": [{..., "params": [...]}]}.

        Like torch.optim's: state is keyed by position in the flat parameter order and holds
        only parameters that have state (Adam's "step" is a float, as torch's tensor holds);
        the group lists the hyperparameters and "params": list(range(number of parameters)).
        Arrays are copies.
        """
        state = {index: {key: value if key == "step" else np.array(value, copy=True)
                         for key, value in entry.items()}
                 for index, entry in sorted(self._state.items())}
        group = dict(self._groups[0], params=list(range(len(self._slots))))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and buffers from state_dict(): training resumes exactly.

        Also accepts torch.optim's state_dict of the same optimizer over the same parameters
        (tensors are converted; torch's foreach/fused/... flags are ignored). Buffers are
        copied into the parameters' dtypes. ValueError for anything that does not fit this
        optimizer: structure, keys, parameter count, hyperparameters, buffer shapes; nothing
        changes then.
        """
        try:
            group, state = self._check_state_dict(state_dict)
        except TypeError as error:
            raise ValueError(f"load_state_dict: {error}") from None
        self._groups[0].clear()
        self._groups[0].update(group)
        self._state = state

    def _check_state_dict(self, state_dict):
        name = type(self).__name__
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"param_groups", "state"}:
            got = (list(state_dict) if isinstance(state_dict, Mapping)
                   else type(state_dict).__name__)
            raise ValueError(f"load_state_dict: expected a dict with the keys 'state' and "
                             f"'param_groups' ({name}.state_dict()), got {got}")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1 \
                or not isinstance(groups[0], Mapping):
            raise ValueError("load_state_dict: expected 'param_groups' to be a list of one dict")
        group = dict(groups[0])
        indices = group.pop("params", None)
        expected = list(range(len(self._slots)))
        if not isinstance(indices, (list, tuple)) or list(indices) != expected:
            raise ValueError(f"load_state_dict: the state is for other parameters: expected "
                             f"'params' {expected}, got {indices!r}")
        self._pop_torch_keys(group)
        group = self._check_group(group)
        entries = state_dict["state"]
        if not isinstance(entries, Mapping):
            raise ValueError(f"load_state_dict: expected 'state' to be a dict, got "
                             f"{type(entries).__name__}")
        state = {}
        for index, entry in entries.items():
            if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral) \
                    or not 0 <= index < len(self._slots):
                raise ValueError(f"load_state_dict: state keys must be parameter positions "
                                 f"0..{len(self._slots) - 1}, got {index!r}")
            checked = self._check_state_entry(int(index), entry, group)
            if checked:                # an empty entry is a parameter without state yet
                state[int(index)] = checked
        return group, state

    def _pop_torch_keys(self, group):
        for key in _TORCH_ONLY_GROUP_KEYS:
            group.pop(key, None)
        if "decoupled_weight_decay" in group and self._decoupled is not None:
            decoupled = group.pop("decoupled_weight_decay")
            if bool(decoupled) != self._decoupled:
                raise ValueError(f"load_state_dict: decoupled_weight_decay={decoupled} is "
                                 f"{'AdamW' if decoupled else 'Adam'}'s state, not "
                                 f"{type(self).__name__}'s")

    def _check_state_entry(self, index, entry, group):
        """A parameter's state from a state_dict, as new arrays of the parameter's dtype."""
        slot = self._slots[index]
        label = f"state[{index}] ({_label(slot)})"
        if not isinstance(entry, Mapping):
            raise ValueError(f"load_state_dict: {label} must be a dict, got "
                             f"{type(entry).__name__}")
        required = self._required_state_keys(group) if entry else ()
        unknown = [key for key in entry if key not in self._STATE_KEYS]
        missing = [key for key in required if key not in entry]
        if unknown or missing:
            raise ValueError(f"load_state_dict: {label} must have the keys {list(required)}"
                             f" (of {list(self._STATE_KEYS)}), got {list(entry)}")
        checked = {}
        for key, value in entry.items():
            if key == "step":
                checked[key] = _check_step(value, label)
            elif value is not None:
                checked[key] = _check_buffer(value, slot, f"{label}[{key!r}]")
        return checked

    def _required_state_keys(self, group):  # pragma: no cover - abstract
        """The keys a non-empty state entry must have under these hyperparameters."""
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, exactly torch.optim.SGD's update.

    SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)

    where, for each parameter p with gradient g (in p's dtype):
        g = -g if maximize;  g = g + weight_decay * p if weight_decay
        if momentum: b = g on the first step, else b = momentum * b + (1 - dampening) * g;
                     g = g + momentum * b if nesterov, else b
        p = p - lr * g
    nesterov needs momentum > 0 and dampening == 0. State: "momentum_buffer" per parameter
    (when momentum is non-zero). Hyperparameters are attributes (``opt.lr = 0.01``).
    """

    _HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _STATE_KEYS = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check_group(self, group):
        self._check_group_keys(group)
        checked = dict(lr=_nonnegative("lr", group["lr"], "Invalid learning rate"),
                       momentum=_nonnegative("momentum", group["momentum"],
                                             "Invalid momentum value"),
                       dampening=_real("dampening", group["dampening"]),
                       weight_decay=_nonnegative("weight_decay", group["weight_decay"],
                                                 "Invalid weight_decay value"),
                       nesterov=_flag("nesterov", group["nesterov"]),
                       maximize=_flag("maximize", group["maximize"]))
        if checked["nesterov"] and (checked["momentum"] <= 0 or checked["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        return checked

    def _required_state_keys(self, group):
        return ("momentum_buffer",)

    def _update(self, param, grad, state, group):
        t = param.dtype.type
        state = dict(state or {})
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + t(group["weight_decay"]) * param
        momentum = group["momentum"]
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = grad.copy()          # torch: the first buffer is the gradient, undamped
            else:
                buf = buf * t(momentum) + t(1 - group["dampening"]) * grad
            state["momentum_buffer"] = buf
            grad = grad + t(momentum) * buf if group["nesterov"] else buf
        return param + t(-group["lr"]) * grad, state


class Adam(_Optimizer):
    """Adam (and AMSGrad), exactly torch.optim.Adam's update.

    Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
         maximize=False)

    where, for each parameter p with gradient g at step t = 1, 2, ... (in p's dtype):
        g = -g if maximize;  g = g + weight_decay * p if weight_decay (L2, into the moments)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) if amsgrad, else v
        p = p - lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)
    State per parameter: "step" (a float), "exp_avg", "exp_avg_sq", and "max_exp_avg_sq" with
    amsgrad. Hyperparameters are attributes (``opt.lr = 1e-4``; ``opt.betas = (b1, b2)``).
    """

    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _STATE_KEYS = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _check_group(self, group):
        self._check_group_keys(group)
        return dict(lr=_nonnegative("lr", group["lr"], "Invalid learning rate"),
                    betas=_check_betas(group["betas"]),
                    eps=_nonnegative("eps", group["eps"], "Invalid epsilon value"),
                    weight_decay=_nonnegative("weight_decay", group["weight_decay"],
                                              "Invalid weight_decay value"),
                    amsgrad=_flag("amsgrad", group["amsgrad"]),
                    maximize=_flag("maximize", group["maximize"]))

    def _required_state_keys(self, group):
        base = ("step", "exp_avg", "exp_avg_sq")
        return base + ("max_exp_avg_sq",) if group["amsgrad"] else base

    def _check_state_for(self, group):
        if group["amsgrad"] and any("max_exp_avg_sq" not in s for s in self._state.values()):
            raise ValueError(f"{type(self).__name__}: amsgrad was switched on after training "
                             "began: the state has no max_exp_avg_sq to continue from")

    def _update(self, param, grad, state, group):
        t = param.dtype.type
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        if state is None:
            zeros = np.zeros_like(param)
            state = {"step": 0.0, "exp_avg": zeros, "exp_avg_sq": zeros}
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = zeros
        if group["maximize"]:
            grad = -grad
        step = state["step"] + 1.0
        if weight_decay != 0:
            if self._decoupled:
                param = param * t(1 - lr * weight_decay)
            else:
                grad = grad + t(weight_decay) * param
        # torch's operations in its order, each into one of three new arrays (the two
        # moments, and `work`, which ends as the new parameter): the old state is only read.
        # An array per operation, as before, was about 15 parameter-sized arrays a step, each
        # faulted in fresh: S3's Adam step 3.0 ms, now 1.9 (with _laid_end_to_end).
        exp_avg = _lerp(state["exp_avg"], grad, t(1 - beta1))
        exp_avg_sq = np.multiply(state["exp_avg_sq"], t(beta2))
        work = np.multiply(t(1 - beta2), grad)
        work *= grad
        exp_avg_sq += work
        new_state = dict(state, step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
        second_moment = exp_avg_sq
        if group["amsgrad"]:
            second_moment = np.maximum(state["max_exp_avg_sq"], exp_avg_sq)
            new_state["max_exp_avg_sq"] = second_moment
        # torch computes these scalars in Python floats (double), then casts them
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = np.sqrt(second_moment, out=work)
        denom /= t(bias_correction2_sqrt)
        denom += t(group["eps"])
        update = np.divide(exp_avg, denom, out=work)
        update *= t(-step_size)
        return np.add(param, update, out=work), new_state


class AdamW(Adam):
    """Adam with decoupled weight decay, exactly torch.optim.AdamW's update.

    AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
          maximize=False)

    As Adam, except that weight decay scales the parameter before the update,
    p = p * (1 - lr * weight_decay), instead of entering the gradient.
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


# -- parameters ---------------------------------------------------------------------------------

def _check_params(params):
    """params as a list of entries: modules, and dicts (copies of the mapping) of arrays."""
    if isinstance(params, (ParameterModule, Mapping)):
        params = [params]
    elif not isinstance(params, (list, tuple)):
        raise TypeError("params must be a cgru module, a dict of name -> NumPy array, or a "
                        f"list of these, got {type(params).__name__}")
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    entries = []
    for position, entry in enumerate(params):
        if isinstance(entry, ParameterModule):
            if any(entry is other for other in entries):
                raise ValueError(f"params[{position}]: this module is already in params")
            entries.append(entry)
        elif isinstance(entry, StateDict):
            raise TypeError(f"params[{position}] is a module's state_dict(): its arrays are "
                            "copies, so updating them would leave the module unchanged; pass "
                            "the module itself (e.g. Adam([gru, head]))")
        elif isinstance(entry, Mapping):
            entries.append(_check_array_dict(position, entry))
        else:
            raise TypeError(f"params[{position}] must be a cgru module or a dict of name -> "
                            f"NumPy array, got {type(entry).__name__}")
    _check_no_overlap(entries)
    return entries


def _check_array_dict(position, mapping):
    if not mapping:
        raise ValueError(f"params[{position}] is an empty dict")
    for name, array in mapping.items():
        where = f"params[{position}][{name!r}]"
        if not isinstance(name, str):
            raise TypeError(f"params[{position}]: parameter names must be strings, got "
                            f"{type(name).__name__}")
        check_in_place_array(array, where, "updated in place",
                             ", so it must be writable (a module's parameters are read-only: "
                             "to train a module, pass the module itself)")
    return dict(mapping)


def _check_no_overlap(entries):
    arrays = [(f"params[{p}][{name!r}]", array) for p, entry in enumerate(entries)
              if not isinstance(entry, ParameterModule) for name, array in entry.items()]
    for i, (name_a, a) in enumerate(arrays):
        for name_b, b in arrays[:i]:
            if np.shares_memory(a, b):
                raise ValueError(f"{name_a} shares memory with {name_b}: each parameter may "
                                 "appear only once")


def _flatten(entries):
    slots = []
    for position, entry in enumerate(entries):
        if isinstance(entry, ParameterModule):
            slots += [_Slot(position, name, array.shape, array.dtype)
                      for name, array in entry.named_parameters()]
        else:
            slots += [_Slot(position, name, array.shape, array.dtype)
                      for name, array in entry.items()]
    return slots


def _label(slot):
    return f"params[{slot.entry}][{slot.name!r}]"


# -- gradients ----------------------------------------------------------------------------------

def _check_gradient_keys(position, entry, given):
    if not isinstance(given, Mapping):
        raise TypeError(f"step: the gradients for params[{position}] must be a dict, got "
                        f"{type(given).__name__}")
    is_module = isinstance(entry, ParameterModule)
    expected = [name for name, _ in entry.named_parameters()] if is_module else list(entry)
    ignored = BACKWARD_EXTRA_KEYS if is_module else ()
    missing = [key for key in expected if key not in given]
    unknown = [key for key in given if key not in expected and key not in ignored]
    if missing or unknown:
        extra = " (and optionally 'input', 'hx', which are ignored)" if is_module else ""
        raise ValueError(f"step: the gradients for params[{position}] must have the keys "
                         f"{expected}{extra}; got {list(given)} (missing {missing}, "
                         f"unexpected {unknown})")


def _as_gradient(value, slot, label):
    """The gradient as an array of the parameter's dtype and shape."""
    array = numeric_array(value, f"step: the gradient for {label}")
    if array.shape != slot.shape:
        raise ValueError(f"step: the gradient for {label} must have shape {slot.shape}, got "
                         f"{array.shape}")
    # The update writes into none of its inputs, so the caller's array is safe uncopied.
    return np.asarray(array, dtype=slot.dtype)


def _same_kind_of_state(states):
    """Whether parameters with these states can be updated as one: all without state yet, or
    all holding the same buffers and the same step count (always so, unless a loaded
    state_dict says otherwise)."""
    first = states[0]
    if first is None:
        return all(state is None for state in states)
    scalars = {key: value for key, value in first.items() if not isinstance(value, np.ndarray)}
    return all(state is not None and state.keys() == first.keys()
               and all(state[key] == value for key, value in scalars.items())
               for state in states)


def _concatenate(arrays, indices):
    return _laid_end_to_end([arrays[i] for i in indices])


def _concatenate_state(states):
    if states[0] is None:
        return None
    return {key: _laid_end_to_end([state[key] for state in states])
            if isinstance(value, np.ndarray) else value for key, value in states[0].items()}


def _laid_end_to_end(arrays):
    """The arrays flattened and concatenated, for reading only: the flat array they are
    views of, when they tile it in this order (what the last step's _split left: the
    parameters and moments, unless replaced since), else a new concatenation."""
    base = arrays[0].base
    if (isinstance(base, np.ndarray) and base.ndim == 1 and base.flags.c_contiguous
            and sum(a.size for a in arrays) == base.size):
        start = base.__array_interface__["data"][0]
        for array in arrays:
            if (array.base is not base or array.dtype != base.dtype
                    or not array.flags.c_contiguous
                    or array.__array_interface__["data"][0] != start):
                break
            start += array.nbytes
        else:
            return base
    return np.concatenate([a.reshape(-1) for a in arrays])


def _split(param, state, bounds):
    """(param, state) pairs, one per (start, stop, shape): views of the flat param and buffers."""
    buffers = [(key, value) for key, value in state.items() if isinstance(value, np.ndarray)]
    pieces = []
    for start, stop, shape in bounds:
        piece = dict(state)
        for key, value in buffers:
            piece[key] = value[start:stop].reshape(shape)
        pieces.append((param[start:stop].reshape(shape), piece))
    return pieces


# -- hyperparameters and state ------------------------------------------------------------------

def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:          # a Python int beyond the float range (10**400)
        raise ValueError(f"{name} must be a real number a float can hold, got an integer of "
                         f"{len(str(abs(int(value))))} digits") from None


def _nonnegative(name, value, message):
    checked = _real(name, value)
    if not 0.0 <= checked:         # written so that NaN fails too
        raise ValueError(f"{message}: {value}")     # the value as given, as torch prints it
    return checked


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _check_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of floats, got {betas!r}")
    checked = tuple(_real(f"betas[{i}]", beta) for i, beta in enumerate(betas))
    for i, beta in enumerate(checked):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
    return checked


def _check_step(value, label):
    try:
        step = to_numpy(value)
    except (TypeError, ValueError):
        step = None
    if step is None or step.ndim != 0 or step.dtype.kind not in "iuf" \
            or not np.isfinite(step) or step < 0 or step != np.floor(step):
        raise ValueError(f"load_state_dict: {label}['step'] must be a whole number >= 0, got "
                         f"{value!r}")
    return float(step)


def _check_buffer(value, slot, label):
    try:
        array = to_numpy(value)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise ValueError(f"load_state_dict: {label} must be a numeric array, got "
                         f"{type(value).__name__}")
    if array.shape != slot.shape:
        raise ValueError(f"load_state_dict: {label} must have shape {slot.shape} (the "
                         f"parameter's), got {array.shape}")
    return np.array(array, dtype=slot.dtype, copy=True)


def _lerp(start, end, weight):
    """torch.lerp's formula, in weight's dtype: a small weight from start, a large one from end;
    a new array."""
    difference = np.subtract(end, start)
    if abs(weight) < 0.5:
        difference *= weight
        return np.add(start, difference, out=difference)
    difference *= weight.dtype.type(1) - weight
    return np.subtract(end, difference, out=difference)
