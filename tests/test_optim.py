"""cgru.optim: SGD, Adam and AdamW against torch.optim (golden files always, live when torch is
installed), on dicts of arrays, modules and mixed lists; state_dict resumes, pickling, and
bad input that raises and changes nothing."""
import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cgru
import cgru.optim
from conftest import fixture_names, load_fixture

# (rtol, atol) against torch: its CPU kernels fuse multiply-adds, NumPy rounds each product.
TOLERANCE = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-12, 1e-12)}
OPTIM_FIXTURES = fixture_names("optim")

# name, class, keyword arguments: every buffer and branch of each update
CONFIGS = [
    ("sgd", "SGD", dict(lr=0.1)),
    ("sgd_momentum", "SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov", "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    ("adam", "Adam", dict(lr=0.01, weight_decay=0.1)),
    ("adam_amsgrad", "Adam", dict(lr=0.01, betas=(0.8, 0.99), amsgrad=True, maximize=True)),
    ("adamw_amsgrad", "AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
]
CONFIG_IDS = [c[0] for c in CONFIGS]


def _close(actual, expected, dtype):
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def _gru():
    return cgru.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)


def _head(rng, dtype=np.float32):
    return {"weight": rng.standard_normal((2, 8)).astype(dtype),
            "bias": rng.standard_normal(2).astype(dtype)}


def _grads_like(params, rng, scale=None):
    """Random gradients for a module (its state_dict shapes) or a dict of arrays."""
    shapes = _values(params)
    scale = rng.uniform(0.1, 3.0) if scale is None else scale
    return {k: (rng.standard_normal(np.shape(v)) * scale).astype(v.dtype)
            for k, v in shapes.items()}


def _read_only(grads):
    """Copies of grads that cannot be written: a step that wrote into them would raise."""
    out = {}
    for key, value in grads.items():
        value = np.array(value)
        value.flags.writeable = False
        out[key] = value
    return out


def _values(entry):
    return entry.state_dict() if hasattr(entry, "state_dict") else entry


def _torch_optimizer(torch, name, tensors, kwargs):
    return getattr(torch.optim, name)(tensors, foreach=False, **kwargs)


def _torch_params(torch, entries):
    """torch tensors with the values of the entries' parameters, in cgru.optim's flat order."""
    return [torch.tensor(np.array(v)) for entry in entries for v in _values(entry).values()]


def _torch_step(tensors, grads_list):
    flat = [g for grads in grads_list for k, g in grads.items() if k not in ("input", "hx")]
    for tensor, grad in zip(tensors, flat):
        tensor.grad = tensor.new_tensor(grad)


def _assert_matches_torch(entries, tensors):
    flat = [v for entry in entries for v in _values(entry).values()]
    assert len(flat) == len(tensors)
    for value, tensor in zip(flat, tensors):
        _close(value, tensor.detach().numpy(), value.dtype)


# -- golden fixtures (no torch needed) ----------------------------------------------------------

def test_fixtures_present():
    assert len(OPTIM_FIXTURES) >= 10


@pytest.mark.parametrize("name", OPTIM_FIXTURES)
def test_matches_torch_fixture(name):
    config, params, arrays = load_fixture(name)
    params = {k: v.copy() for k, v in params.items()}
    arrays_before = {k: v.copy() for k, v in params.items()}
    opt = getattr(cgru.optim, config["optimizer"])(params, **config["kwargs"])
    for step in range(config["steps"]):
        opt.step({k: arrays[f"grad/{k}"][step] for k in params})
        for k, value in params.items():
            assert value.dtype == np.dtype(config["dtype"])
            _close(value, arrays[f"after/{k}"][step], config["dtype"])
    assert any(not np.array_equal(params[k], arrays_before[k]) for k in params)


# -- live against torch.optim -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPTIM_FIXTURES)
def test_matches_torch_live(torch, name, dtype, rng):
    config, _, _ = load_fixture(name)
    kwargs = dict(config["kwargs"])
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    params = {"w": rng.standard_normal((5, 3)).astype(dtype), "b": np.array(0.5, dtype=dtype)}
    tensors = _torch_params(torch, [params])
    opt = getattr(cgru.optim, config["optimizer"])(params, **kwargs)
    topt = _torch_optimizer(torch, config["optimizer"], tensors, kwargs)
    for _ in range(30):
        grads = _grads_like(params, rng)
        opt.step(_read_only(grads))
        _torch_step(tensors, [grads])
        topt.step()
        _assert_matches_torch([params], tensors)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_hyperparameters_match_torch(data):
    torch = pytest.importorskip("torch")
    name = data.draw(st.sampled_from(["SGD", "Adam", "AdamW"]))
    rate = st.floats(0.0, 0.5)
    if name == "SGD":
        momentum = data.draw(st.floats(0.0, 0.99))
        nesterov = momentum > 0 and data.draw(st.booleans())
        kwargs = dict(lr=data.draw(rate), momentum=momentum, weight_decay=data.draw(rate),
                      dampening=0.0 if nesterov else data.draw(st.floats(0.0, 1.0)),
                      nesterov=nesterov, maximize=data.draw(st.booleans()))
    else:
        beta = st.floats(0.0, 0.999)
        kwargs = dict(lr=data.draw(rate), betas=(data.draw(beta), data.draw(beta)),
                      eps=data.draw(st.floats(1e-8, 1e-2)), weight_decay=data.draw(rate),
                      amsgrad=data.draw(st.booleans()), maximize=data.draw(st.booleans()))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    params = {"w": rng.standard_normal((3, 2)).astype(dtype)}
    tensors = _torch_params(torch, [params])
    opt = getattr(cgru.optim, name)(params, **kwargs)
    topt = _torch_optimizer(torch, name, tensors, kwargs)
    largest_grad = 0.0
    for _ in range(8):
        grads = _grads_like(params, rng)
        largest_grad = max(largest_grad, float(np.abs(grads["w"]).max()))
        opt.step(grads)
        _torch_step(tensors, [grads])
        topt.step()
    if name == "SGD" or dtype == np.float64:
        _assert_matches_torch([params], tensors)
        return
    # Adam's step is lr * m / (sqrt(v) + eps): where a gradient is near 0 (and beta2 small, so v
    # follows it), the quotient is up to |m| / eps, and one float32 rounding of m or v moves the
    # step by an ulp of that (drawn: lr 0.18, betas (0.73, 0.0), eps 0.0025 gave 7e-6 on a
    # parameter of 0.136, over the fixed float32 tolerance; the two sides round in different
    # orders). Bound: two ulps of lr * max|g| / eps per step, on top of the usual tolerance.
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    atol += 8 * 2 * np.finfo(np.float32).eps * kwargs["lr"] * largest_grad / kwargs["eps"]
    np.testing.assert_allclose(params["w"], tensors[0].detach().numpy(), rtol=rtol, atol=atol)


# -- dict parameters, in place ------------------------------------------------------------------

def test_dict_arrays_updated_in_place(rng):
    buffer = rng.standard_normal((4, 6)).astype(np.float32)
    params = {"dense": rng.standard_normal((3, 2)), "strided": buffer[:, ::2]}
    dense = params["dense"]
    before = {k: v.copy() for k, v in params.items()}
    untouched = buffer[:, 1::2].copy()
    opt = cgru.optim.SGD(params, lr=0.1)
    grads = _grads_like(params, rng)
    opt.step(grads)
    assert params["dense"] is dense and params["strided"].base is buffer
    for k in params:
        np.testing.assert_array_equal(
            params[k], before[k] + params[k].dtype.type(-0.1) * grads[k])
    np.testing.assert_array_equal(buffer[:, ::2], params["strided"])
    np.testing.assert_array_equal(buffer[:, 1::2], untouched)


def test_gradients_are_converted_not_aliased(rng):
    params = {"w": np.zeros((2, 3), dtype=np.float32)}
    opt = cgru.optim.SGD(params, lr=1.0, momentum=0.5)
    grad = np.ones((2, 3))                               # float64 into a float32 parameter
    opt.step({"w": grad})
    opt.step({"w": [[1, 2, 3], [4, 5, 6]]})              # nested lists: array-likes
    grad[...] = 100.0                                    # the first buffer is no view of it
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert buf.dtype == np.float32
    np.testing.assert_array_equal(buf, np.float32(0.5) * 1 + np.array([[1, 2, 3], [4, 5, 6]],
                                                                       np.float32))


def test_torch_tensor_gradients(torch, rng):
    params = {"w": rng.standard_normal((2, 3)).astype(np.float32)}
    expected = params["w"] - np.float32(0.1) * np.ones((2, 3), np.float32)
    cgru.optim.SGD(params, lr=0.1).step({"w": torch.ones(2, 3)})
    np.testing.assert_array_equal(params["w"], expected)


# -- modules ------------------------------------------------------------------------------------

def _backward_like(module, rng):
    """A dict shaped like a backward pass's: parameters plus "input" and "hx"."""
    return dict(input=rng.standard_normal((5, 2, 3)), hx=rng.standard_normal((4, 2, 4)),
                **_grads_like(module, rng))


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_module_matches_torch(torch, name, cls, kwargs, rng):
    gru = _gru()
    tensors = _torch_params(torch, [gru])
    opt = getattr(cgru.optim, cls)(gru, **kwargs)
    topt = _torch_optimizer(torch, cls, tensors, kwargs)
    for _ in range(12):
        grads = _backward_like(gru, rng)
        opt.step(_read_only(grads))
        _torch_step(tensors, [grads])
        topt.step()
    _assert_matches_torch([gru], tensors)


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_module_same_as_dict_of_arrays(name, cls, kwargs, rng):
    gru = _gru()
    arrays = dict(gru.state_dict())     # copies made the user's own (a state_dict is refused)
    opt_module = getattr(cgru.optim, cls)(gru, **kwargs)
    opt_dict = getattr(cgru.optim, cls)(arrays, **kwargs)
    for _ in range(10):
        grads = _backward_like(gru, rng)
        opt_module.step(grads)
        opt_dict.step({k: v for k, v in grads.items() if k not in ("input", "hx")})
    for key, value in gru.state_dict().items():
        np.testing.assert_array_equal(value, arrays[key])


def test_module_forward_uses_new_weights(rng):
    gru = _gru()
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    out_before, _ = gru(x)
    opt = cgru.optim.Adam(gru, lr=0.05)
    for _ in range(5):
        opt.step(_backward_like(gru, rng))
    fresh = cgru.GRU(3, 4, num_layers=2, bidirectional=True, seed=1)
    fresh.load_state_dict(gru.state_dict())
    out, h_n = gru(x)
    out_fresh, h_fresh = fresh(x)
    np.testing.assert_array_equal(out, out_fresh)
    np.testing.assert_array_equal(h_n, h_fresh)
    assert not np.allclose(out, out_before)
    for value in gru.state_dict().values():
        assert value.dtype == np.float32


def test_module_laid_out_once_per_step(rng):
    gru = _gru()
    changed = []
    notify = gru._parameters_changed

    def counting_changed(names):
        changed.append(list(names))
        return notify(names)

    object.__setattr__(gru, "_parameters_changed", counting_changed)
    opt = cgru.optim.SGD(gru, lr=0.1)
    for _ in range(3):
        opt.step(_grads_like(gru, rng))
    names = list(gru.state_dict())
    assert changed == [names] * 3
    for name in names:           # the new parameters are frozen, as load_state_dict's
        assert not getattr(gru, name).flags.writeable


def test_cell_matches_torch(torch, rng):
    cell = cgru.GRUCell(3, 5, dtype=np.float64, seed=0)
    tensors = _torch_params(torch, [cell])
    opt = cgru.optim.AdamW(cell, lr=0.02, amsgrad=True)
    topt = _torch_optimizer(torch, "AdamW", tensors, dict(lr=0.02, amsgrad=True))
    for _ in range(10):
        grads = dict(input=None, hx=None, **_grads_like(cell, rng))
        opt.step(grads)
        _torch_step(tensors, [grads])
        topt.step()
    _assert_matches_torch([cell], tensors)


# -- mixed lists --------------------------------------------------------------------------------

def _mixed(rng):
    return [_gru(), _head(rng), cgru.GRUCell(2, 3, dtype=np.float64, seed=4),
            {"embedding": rng.standard_normal((6, 3))}]


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_mixed_list_matches_torch(torch, name, cls, kwargs, rng):
    entries = _mixed(rng)
    tensors = _torch_params(torch, entries)
    opt = getattr(cgru.optim, cls)(entries, **kwargs)
    topt = _torch_optimizer(torch, cls, tensors, kwargs)
    for _ in range(10):
        grads = [_grads_like(entry, rng) for entry in entries]
        opt.step(grads)
        _torch_step(tensors, grads)
        topt.step()
    _assert_matches_torch(entries, tensors)


def test_mixed_list_same_as_one_optimizer_each(rng):
    entries, alone = _mixed(rng), _mixed(np.random.default_rng(12345))
    opt = cgru.optim.Adam(entries, lr=0.03, amsgrad=True)
    singles = [cgru.optim.Adam(entry, lr=0.03, amsgrad=True) for entry in alone]
    for _ in range(6):
        grads = [_grads_like(entry, rng) for entry in entries]
        opt.step(tuple(grads))
        for single, g in zip(singles, grads):
            single.step(g)
    for a, b in zip(entries, alone):
        for key, value in _values(a).items():
            np.testing.assert_array_equal(value, _values(b)[key])


def test_flat_order_and_state_dict_structure(rng):
    gru, head = _gru(), _head(rng)
    opt = cgru.optim.Adam([gru, head], lr=0.01, amsgrad=True)
    sd = opt.state_dict()
    assert sd == {"state": {}, "param_groups": [dict(
        lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True, maximize=False,
        params=list(range(len(gru.state_dict()) + 2)))]}
    opt.step([_grads_like(gru, rng), _grads_like(head, rng)])
    state = opt.state_dict()["state"]
    shapes = [v.shape for v in gru.state_dict().values()] + [(2, 8), (2,)]
    assert list(state) == list(range(len(shapes)))
    for index, shape in enumerate(shapes):
        entry = state[index]
        assert list(entry) == ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        assert type(entry["step"]) is float and entry["step"] == 1.0
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert type(entry[key]) is np.ndarray and entry[key].shape == shape


# -- state_dict, load_state_dict, pickle --------------------------------------------------------

def _setup():
    return _gru(), _head(np.random.default_rng(0))


def _run(opt, grads_seq):
    for grads_gru, grads_head in grads_seq:
        opt.step([grads_gru, grads_head])


def _grad_sequence(gru, head, rng, n):
    return [(_backward_like(gru, rng), _grads_like(head, rng)) for _ in range(n)]


def _assert_same_training(a, b):
    (gru_a, head_a, opt_a), (gru_b, head_b, opt_b) = a, b
    for key, value in gru_a.state_dict().items():
        np.testing.assert_array_equal(value, gru_b.state_dict()[key])
    for key, value in head_a.items():
        np.testing.assert_array_equal(value, head_b[key])
    _assert_same_state(opt_a.state_dict(), opt_b.state_dict())


def _assert_same_state(sd_a, sd_b):
    assert sd_a["param_groups"] == sd_b["param_groups"]
    assert list(sd_a["state"]) == list(sd_b["state"])
    for index, entry in sd_a["state"].items():
        assert list(entry) == list(sd_b["state"][index])
        for key, value in entry.items():
            np.testing.assert_array_equal(value, sd_b["state"][index][key])


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_resume_from_state_dict_is_exact(name, cls, kwargs, rng):
    gru, head = _setup()
    grads = _grad_sequence(gru, head, rng, 10)
    opt = getattr(cgru.optim, cls)([gru, head], **kwargs)
    _run(opt, grads[:5])
    sd = opt.state_dict()
    saved_gru, saved_head = gru.state_dict(), {k: v.copy() for k, v in head.items()}
    _run(opt, grads[5:])

    gru2 = cgru.GRU(3, 4, num_layers=2, bidirectional=True, seed=7)
    gru2.load_state_dict(saved_gru)
    head2 = saved_head
    opt2 = getattr(cgru.optim, cls)([gru2, head2], lr=0.5)   # overwritten by the load
    opt2.load_state_dict(sd)
    for entry in sd["state"].values():                       # the load copied them
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                value[...] = np.nan
    _run(opt2, grads[5:])
    _assert_same_training((gru, head, opt), (gru2, head2, opt2))


def test_state_dict_returns_copies(rng):
    gru, head = _setup()
    opt = cgru.optim.SGD([gru, head], lr=0.1, momentum=0.9)
    _run(opt, _grad_sequence(gru, head, rng, 2))
    before = opt.state_dict()
    mutated = opt.state_dict()
    for entry in mutated["state"].values():
        entry["momentum_buffer"][...] = 7.0
    mutated["param_groups"][0]["lr"] = 3.0
    _assert_same_state(opt.state_dict(), before)


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_pickle_round_trip_continues_identically(name, cls, kwargs, rng):
    gru, head = _setup()
    grads = _grad_sequence(gru, head, rng, 8)
    opt = getattr(cgru.optim, cls)([gru, head], **kwargs)
    _run(opt, grads[:4])
    gru2, head2, opt2 = pickle.loads(pickle.dumps((gru, head, opt)))
    assert opt2.params[0] is gru2 and opt2.params[1]["weight"] is head2["weight"]
    gru3, head3, opt3 = copy.deepcopy((gru, head, opt))
    alone = pickle.loads(pickle.dumps(opt))                  # carries its own copies
    for run in [(gru, head, opt), (gru2, head2, opt2), (gru3, head3, opt3),
                (alone.params[0], alone.params[1], alone)]:
        _run(run[2], grads[4:])
    _assert_same_training((gru, head, opt), (gru2, head2, opt2))
    _assert_same_training((gru, head, opt), (gru3, head3, opt3))
    _assert_same_training((gru, head, opt), (alone.params[0], alone.params[1], alone))


def test_load_torch_state_dict(torch, rng):
    """A torch.optim state_dict (tensors, torch's extra flags) resumes in cgru.optim."""
    for name, kwargs in [("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01)),
                         ("SGD", dict(lr=0.05, momentum=0.9))]:
        params = {"w": rng.standard_normal((3, 4)).astype(np.float32)}
        tensors = _torch_params(torch, [params])
        topt = _torch_optimizer(torch, name, tensors, kwargs)
        for _ in range(3):
            _torch_step(tensors, [_grads_like(params, rng)])
            topt.step()
        params["w"][...] = tensors[0].detach().numpy()
        opt = getattr(cgru.optim, name)(params, lr=0.3)
        opt.load_state_dict(topt.state_dict())
        assert opt.lr == kwargs["lr"]
        for _ in range(3):
            grads = _grads_like(params, rng)
            opt.step(grads)
            _torch_step(tensors, [grads])
            topt.step()
        _assert_matches_torch([params], tensors)
    adam = torch.optim.Adam(tensors, foreach=False)
    with pytest.raises(ValueError, match="decoupled_weight_decay"):
        cgru.optim.AdamW(params).load_state_dict(adam.state_dict())


def _trained(rng):
    gru, head = _setup()
    opt = cgru.optim.Adam([gru, head], lr=0.01, amsgrad=True)
    _run(opt, _grad_sequence(gru, head, rng, 2))
    return gru, head, opt


def _bad_state_dicts():
    """(description, function of a valid state_dict making it bad)."""
    def drop(key):
        return lambda sd: {k: v for k, v in sd.items() if k != key}

    def set_group(key, value):
        def change(sd):
            sd["param_groups"][0][key] = value
            return sd
        return change

    def set_state(index, key, value):
        def change(sd):
            sd["state"][index][key] = value
            return sd
        return change

    def drop_state(index, key):
        def change(sd):
            del sd["state"][index][key]
            return sd
        return change

    def extra(sd):
        sd["extra"] = 1
        return sd

    def two_groups(sd):
        sd["param_groups"] = sd["param_groups"] * 2
        return sd

    def rekey(sd):
        sd["state"]["0"] = sd["state"].pop(0)
        return sd

    def not_a_dict(sd):
        sd["state"][1] = 3.0
        return sd

    def out_of_range(sd):
        sd["state"][len(sd["param_groups"][0]["params"])] = sd["state"][0]
        return sd

    return [
        ("not a dict", lambda sd: [sd]),
        ("no state", drop("state")),
        ("no param_groups", drop("param_groups")),
        ("extra key", extra),
        ("two groups", two_groups),
        ("groups not a list", lambda sd: dict(sd, param_groups=sd["param_groups"][0])),
        ("fewer params", set_group("params", [0, 1])),
        ("no params", lambda sd: (sd["param_groups"][0].pop("params"), sd)[1]),
        ("negative lr", set_group("lr", -1.0)),
        ("bad beta", set_group("betas", (1.5, 0.9))),
        ("string lr", set_group("lr", "fast")),
        ("unknown hyperparameter", set_group("momentum", 0.9)),
        ("missing hyperparameter", lambda sd: (sd["param_groups"][0].pop("eps"), sd)[1]),
        ("state not a dict", lambda sd: dict(sd, state=[1])),
        ("string state key", rekey),
        ("state key out of range", out_of_range),
        ("entry not a dict", not_a_dict),
        ("wrong buffer shape", set_state(0, "exp_avg", np.zeros((1, 2)))),
        ("buffer not numeric", set_state(1, "exp_avg_sq", "abc")),
        ("missing amsgrad buffer", drop_state(2, "max_exp_avg_sq")),
        ("unknown buffer", set_state(0, "momentum_buffer", np.zeros(3))),
        ("fractional step", set_state(0, "step", 1.5)),
        ("negative step", set_state(0, "step", -1.0)),
        ("step not a number", set_state(0, "step", "two")),
    ]


@pytest.mark.parametrize("description,make_bad", _bad_state_dicts(),
                         ids=[d for d, _ in _bad_state_dicts()])
def test_bad_state_dict_raises_and_changes_nothing(description, make_bad, rng):
    gru, head, opt = _trained(rng)
    before = opt.state_dict()
    with pytest.raises(ValueError):
        opt.load_state_dict(make_bad(opt.state_dict()))
    _assert_same_state(opt.state_dict(), before)


def test_sgd_state_dict_without_buffers_loads(rng):
    params = {"w": rng.standard_normal(3)}
    opt = cgru.optim.SGD(params, lr=0.1)
    opt.step({"w": np.ones(3)})
    assert opt.state_dict()["state"] == {}            # torch keeps no state without momentum
    other = cgru.optim.SGD({"w": params["w"].copy()}, lr=0.2, momentum=0.9)
    other.load_state_dict(opt.state_dict())
    assert other.momentum == 0.0 and other.lr == 0.1


# -- bad step input: raises, changes nothing ----------------------------------------------------

def _snapshot(gru, head, opt):
    return gru.state_dict(), {k: v.copy() for k, v in head.items()}, opt.state_dict()


def _assert_unchanged(gru, head, opt, snapshot):
    saved_gru, saved_head, saved_opt = snapshot
    for key, value in saved_gru.items():
        np.testing.assert_array_equal(gru.state_dict()[key], value)
    for key, value in saved_head.items():
        np.testing.assert_array_equal(head[key], value)
    _assert_same_state(opt.state_dict(), saved_opt)


def _bad_steps():
    """(description, error, message pattern, function (grads_gru, grads_head) -> step arg)."""
    def without(d, key):
        return {k: v for k, v in d.items() if k != key}

    def reshaped(d, key, shape):
        return dict(d, **{key: np.zeros(shape)})

    return [
        ("missing module key", ValueError, r"missing \['bias_hh_l1_reverse'\]",
         lambda g, h: [without(g, "bias_hh_l1_reverse"), h]),
        ("unknown module key", ValueError, r"unexpected \['weight_ih_l2'\]",
         lambda g, h: [dict(g, weight_ih_l2=np.zeros((12, 8))), h]),
        ("input key in a dict entry", ValueError, r"unexpected \['input'\]",
         lambda g, h: [g, dict(h, input=np.zeros(3))]),
        ("missing dict key", ValueError,
         r"must have the keys \['weight', 'bias'\]; got \['weight'\]",
         lambda g, h: [g, without(h, "bias")]),
        ("wrong module shape", ValueError,
         r"params\[0\]\['weight_hh_l0'\] must have shape \(12, 4\), got \(4, 12\)",
         lambda g, h: [reshaped(g, "weight_hh_l0", (4, 12)), h]),
        ("wrong dict shape", ValueError, r"\['bias'\] must have shape \(2,\), got \(1, 2\)",
         lambda g, h: [g, reshaped(h, "bias", (1, 2))]),
        ("broadcastable shape", ValueError, r"must have shape \(2, 8\), got \(8,\)",
         lambda g, h: [g, reshaped(h, "weight", (8,))]),
        ("one dict for two entries", TypeError, "list of 2 gradient dicts", lambda g, h: g),
        ("too few dicts", ValueError, "expected 2 gradient dicts", lambda g, h: [g]),
        ("too many dicts", ValueError, "expected 2 gradient dicts", lambda g, h: [g, h, h]),
        ("not a list", TypeError, "got int", lambda g, h: 3),
        ("None", TypeError, "got NoneType", lambda g, h: None),
        ("list of non-dicts", TypeError, r"params\[1\] must be a dict",
         lambda g, h: [g, [h["weight"], h["bias"]]]),
        ("None gradient", TypeError, "real numeric", lambda g, h: [g, dict(h, bias=None)]),
        ("string gradient", TypeError, "real numeric", lambda g, h: [g, dict(h, bias="ab")]),
        ("object array", TypeError, "real numeric",
         lambda g, h: [g, dict(h, bias=np.array([object(), object()]))]),
        ("complex gradient", TypeError, "real numeric",
         lambda g, h: [g, dict(h, bias=np.ones(2, complex))]),
        ("ragged list", TypeError, "could not convert",
         lambda g, h: [g, dict(h, bias=[[1.0], [1.0, 2.0]])]),
    ]


@pytest.mark.parametrize("description,error,pattern,make", _bad_steps(),
                         ids=[c[0] for c in _bad_steps()])
def test_bad_step_raises_and_changes_nothing(description, error, pattern, make, rng):
    gru, head, opt = _trained(rng)
    snapshot = _snapshot(gru, head, opt)
    grads_gru = _read_only(_backward_like(gru, rng))
    grads_head = _read_only(_grads_like(head, rng))
    given_copies = [{k: np.array(v) for k, v in d.items()} for d in (grads_gru, grads_head)]
    with pytest.raises(error, match=pattern):
        opt.step(make(grads_gru, grads_head))
    _assert_unchanged(gru, head, opt, snapshot)
    for given, saved in zip((grads_gru, grads_head), given_copies):
        for key, value in saved.items():
            np.testing.assert_array_equal(given[key], value)
    opt.step([grads_gru, grads_head])                 # and the optimizer still works


def test_bad_hyperparameter_in_param_groups_fails_at_step(rng):
    gru, head, opt = _trained(rng)
    snapshot = _snapshot(gru, head, opt)
    opt.param_groups[0]["lr"] = -0.5
    with pytest.raises(ValueError, match="Invalid learning rate: -0.5"):
        opt.step([_grads_like(gru, rng), _grads_like(head, rng)])
    opt.param_groups[0]["lr"] = 0.01
    _assert_unchanged(gru, head, opt, snapshot)


def test_bad_param_groups_fail_at_step(rng):
    opt = cgru.optim.SGD({"w": np.zeros(2)}, lr=0.1)
    opt.param_groups[0][0] = 1.0
    with pytest.raises(ValueError, match="must have the keys"):
        opt.step({"w": np.ones(2)})
    del opt.param_groups[0][0]
    opt.param_groups.append(dict(opt.param_groups[0]))
    with pytest.raises(ValueError, match="one parameter group"):
        opt.step({"w": np.ones(2)})
    np.testing.assert_array_equal(opt.params[0]["w"], np.zeros(2))


def test_amsgrad_switched_on_mid_training_refused(rng):
    params = {"w": rng.standard_normal(3)}
    opt = cgru.optim.Adam(params)
    opt.step({"w": np.ones(3)})
    opt.amsgrad = True
    before = opt.state_dict()["state"]
    with pytest.raises(ValueError, match="amsgrad was switched on"):
        opt.step({"w": np.ones(3)})
    assert opt.state_dict()["state"][0]["step"] == before[0]["step"]
    opt.amsgrad = False                               # switching it off is allowed
    opt.step({"w": np.ones(3)})


# -- construction -------------------------------------------------------------------------------

def _read_only_array():
    array = np.zeros(3)
    array.flags.writeable = False
    return array


_BASE = np.zeros((4, 4))


@pytest.mark.parametrize("params,error,pattern", [
    ({"w": _read_only_array()}, ValueError, r"params\[0\]\['w'\] is read-only"),
    ({"w": np.zeros(3, dtype=np.int64)}, TypeError, "float32 or float64 array, got dtype int64"),
    ({"w": np.zeros(3, dtype=np.float16)}, TypeError, "got dtype float16"),
    ({"w": [0.0, 1.0]}, TypeError, "must be a NumPy array"),
    ({3: np.zeros(3)}, TypeError, "names must be strings"),
    ({}, ValueError, "empty dict"),
    ([], ValueError, "optimizer got an empty parameter list"),
    (3.0, TypeError, "params must be a cgru module"),
    ([np.zeros(3)], TypeError, r"params\[0\] must be a cgru module or a dict"),
    ([{"a": _BASE[0]}, {"b": _BASE[:, 0]}], ValueError, "shares memory"),
    ({"a": _BASE, "b": _BASE}, ValueError, "shares memory"),
], ids=["read-only", "int", "float16", "list value", "int key", "empty dict", "empty list",
        "number", "bare array", "overlapping views", "same array twice"])
def test_bad_params(params, error, pattern):
    with pytest.raises(error, match=pattern):
        cgru.optim.SGD(params, lr=0.1)


def test_same_module_twice_refused():
    gru = _gru()
    with pytest.raises(ValueError, match="already in params"):
        cgru.optim.Adam([gru, gru])


def test_interleaved_views_allowed(rng):
    base = rng.standard_normal(6)
    params = {"even": base[::2], "odd": base[1::2]}
    cgru.optim.SGD(params, lr=1.0).step({"even": np.ones(3), "odd": np.zeros(3)})
    np.testing.assert_array_equal(base[1::2], params["odd"])


# -- hyperparameters ----------------------------------------------------------------------------

_INVALID = [
    ("SGD", dict(lr=-1), "Invalid learning rate: -1"),
    ("SGD", dict(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
    ("SGD", dict(lr=0.1, weight_decay=-1e-3), "Invalid weight_decay value: -0.001"),
    ("SGD", dict(lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero "
                                         "dampening"),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "Nesterov momentum requires a momentum and zero dampening"),
    ("Adam", dict(lr=-0.01), "Invalid learning rate: -0.01"),
    ("Adam", dict(eps=-1e-8), "Invalid epsilon value: -1e-08"),
    ("Adam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    ("Adam", dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    ("Adam", dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    ("AdamW", dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    ("AdamW", dict(lr=-3), "Invalid learning rate: -3"),
]


@pytest.mark.parametrize("name,kwargs,message", _INVALID)
def test_invalid_hyperparameters(name, kwargs, message):
    with pytest.raises(ValueError) as error:
        getattr(cgru.optim, name)({"w": np.zeros(2)}, **kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("name,kwargs,message", _INVALID)
def test_invalid_hyperparameters_worded_like_torch(torch, name, kwargs, message):
    with pytest.raises(ValueError) as error:
        getattr(torch.optim, name)([torch.zeros(2)], **kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr="0.1")), ("SGD", dict(lr=None)), ("SGD", dict(lr=0.1, nesterov=1)),
    ("SGD", dict(lr=True)), ("Adam", dict(betas=0.9)), ("Adam", dict(betas=(0.9,))),
    ("Adam", dict(amsgrad="yes")), ("AdamW", dict(maximize=None)),
    ("AdamW", dict(betas=("a", 0.9))),
])
def test_hyperparameter_types(name, kwargs):
    with pytest.raises(TypeError):
        getattr(cgru.optim, name)({"w": np.zeros(2)}, **kwargs)


def test_nan_lr_refused():
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        cgru.optim.SGD({"w": np.zeros(2)}, lr=float("nan"))


def test_defaults_and_attributes():
    sgd = cgru.optim.SGD({"w": np.zeros(2)}, lr=0.1)
    adam = cgru.optim.Adam({"w": np.zeros(2)})
    adamw = cgru.optim.AdamW({"w": np.zeros(2)})
    assert (sgd.lr, sgd.momentum, sgd.dampening, sgd.weight_decay, sgd.nesterov,
            sgd.maximize) == (0.1, 0.0, 0.0, 0.0, False, False)
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay, adam.amsgrad,
            adam.maximize) == (1e-3, (0.9, 0.999), 1e-8, 0.0, False, False)
    assert adamw.weight_decay == 1e-2 and adamw.param_groups == [dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
        maximize=False)]
    assert repr(sgd).startswith("SGD(lr=0.1, momentum=0.0")


def test_attribute_setter_validates():
    opt = cgru.optim.SGD({"w": np.zeros(2)}, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.lr = -1.0
    opt.dampening = 0.5
    with pytest.raises(ValueError, match="Nesterov"):
        opt.nesterov = True
    assert opt.lr == 0.1 and opt.nesterov is False and opt.dampening == 0.5
    opt.lr = np.float32(0.25)
    assert type(opt.lr) is float and opt.param_groups[0]["lr"] == 0.25


def test_hyperparameters_changed_between_steps_match_torch(torch, rng):
    """A learning-rate schedule, new betas and momentum switched on, through both interfaces."""
    for name, kwargs in [("Adam", dict(lr=0.05)), ("SGD", dict(lr=0.1))]:
        params = {"w": rng.standard_normal((3, 3)).astype(np.float32)}
        tensors = _torch_params(torch, [params])
        opt = getattr(cgru.optim, name)(params, **kwargs)
        topt = _torch_optimizer(torch, name, tensors, kwargs)
        for step in range(12):
            lr = 0.05 * 0.8 ** step
            if step % 2:
                opt.lr = lr
            else:
                opt.param_groups[0]["lr"] = lr
            topt.param_groups[0]["lr"] = lr
            if step == 6:
                key, value = ("betas", (0.5, 0.9)) if name == "Adam" else ("momentum", 0.9)
                setattr(opt, key, value)
                topt.param_groups[0][key] = value
            grads = _grads_like(params, rng)
            opt.step(grads)
            _torch_step(tensors, [grads])
            topt.step()
            _assert_matches_torch([params], tensors)


def test_lr_zero_changes_nothing_but_state(rng):
    params = {"w": rng.standard_normal(4)}
    before = params["w"].copy()
    opt = cgru.optim.SGD(params, lr=0.0, momentum=0.9)
    opt.step({"w": np.ones(4)})
    np.testing.assert_array_equal(params["w"], before)
    assert 0 in opt.state_dict()["state"]


def test_single_entry_accepts_list_of_one(rng):
    a, b = {"w": np.zeros(2)}, {"w": np.zeros(2)}
    cgru.optim.SGD(a, lr=1.0).step({"w": np.ones(2)})
    cgru.optim.SGD([b], lr=1.0).step([{"w": np.ones(2)}])
    np.testing.assert_array_equal(a["w"], b["w"])
    np.testing.assert_array_equal(a["w"], -np.ones(2))


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_one_pass_over_all_parameters_equals_array_by_array(name, cls, kwargs, rng):
    """step updates the parameters of one dtype laid end to end: bitwise the same numbers as
    one optimizer per array (which never concatenates), float32 and float64 mixed."""
    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float32),
              "b": rng.standard_normal(7).astype(np.float64),
              "c": rng.standard_normal((2, 2, 2)).astype(np.float32),
              "d": rng.standard_normal((4, 1)).astype(np.float64)}
    together = {k: v.copy() for k, v in arrays.items()}
    apart = {k: v.copy() for k, v in arrays.items()}
    opt = getattr(cgru.optim, cls)(together, **kwargs)
    singles = {k: getattr(cgru.optim, cls)({k: apart[k]}, **kwargs) for k in apart}
    for _ in range(5):
        grads = _grads_like(arrays, rng)
        opt.step(grads)
        for key, single in singles.items():
            single.step({key: grads[key]})
    for key in arrays:
        np.testing.assert_array_equal(together[key], apart[key])
        state = opt.state_dict()["state"].get(list(arrays).index(key), {})
        single_state = singles[key].state_dict()["state"].get(0, {})
        assert state.keys() == single_state.keys()
        for buffer, value in state.items():
            np.testing.assert_array_equal(value, single_state[buffer])


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_a_module_updated_in_one_pass_or_one_optimizer_per_parameter(name, cls, kwargs, rng):
    """A module's parameters after a step are views of one flat array, which the next step
    reads as it is (no concatenation): the same numbers, step after step, as one optimizer
    per parameter on copies, which never lays anything end to end."""
    gru = cgru.GRU(3, 4, num_layers=2, seed=0)
    alone = {key: value.copy() for key, value in gru.state_dict().items()}
    opt = getattr(cgru.optim, cls)(gru, **kwargs)
    singles = {key: getattr(cgru.optim, cls)({key: alone[key]}, **kwargs) for key in alone}
    for _ in range(4):
        grads = _grads_like(alone, rng)
        opt.step(grads)
        for key, single in singles.items():
            single.step({key: grads[key]})
        for key in alone:
            np.testing.assert_array_equal(getattr(gru, key), alone[key])
    flat = cgru.optim._laid_end_to_end([getattr(gru, key) for key in alone])
    assert all(np.shares_memory(flat, getattr(gru, key)) for key in alone)


def test_parameters_at_different_steps_are_updated_each_with_its_own(rng):
    """A loaded state may hold different step counts per parameter (torch allows it): each
    parameter's bias correction uses its own count."""
    arrays = {"a": rng.standard_normal(4).astype(np.float32),
              "b": rng.standard_normal(6).astype(np.float32)}
    steps = {"a": 3.0, "b": 7.0}
    buffers = {k: {"step": steps[k], "exp_avg": rng.standard_normal(v.shape).astype(v.dtype),
                   "exp_avg_sq": rng.uniform(0.1, 1, v.shape).astype(v.dtype)}
               for k, v in arrays.items()}
    together = {k: v.copy() for k, v in arrays.items()}
    opt = cgru.optim.Adam(together, lr=0.1)
    state = opt.state_dict()
    state["state"] = {0: buffers["a"], 1: buffers["b"]}
    opt.load_state_dict(state)
    grads = _grads_like(arrays, rng)
    opt.step(grads)
    for position, key in enumerate(arrays):
        alone = {key: arrays[key].copy()}
        single = cgru.optim.Adam(alone, lr=0.1)
        single_state = single.state_dict()
        single_state["state"] = {0: buffers[key]}
        single.load_state_dict(single_state)
        single.step({key: grads[key]})
        np.testing.assert_array_equal(together[key], alone[key])
        assert opt.state_dict()["state"][position]["step"] == steps[key] + 1


@pytest.mark.parametrize("where", ["constructor", "setter", "step"])
def test_integer_beyond_the_float_range_is_a_value_error(where):
    """lr=10**400 is a real number but no float: a ValueError (it was an OverflowError),
    and the optimizer keeps working."""
    params = {"w": np.zeros(3)}
    opt = cgru.optim.Adam(params)
    with pytest.raises(ValueError, match="a float can hold"):
        if where == "constructor":
            cgru.optim.SGD(params, lr=10 ** 400)
        elif where == "setter":
            opt.lr = 10 ** 400
        else:
            opt.param_groups[0]["eps"] = 10 ** 400
            opt.step({"w": np.ones(3)})
    np.testing.assert_array_equal(params["w"], np.zeros(3))
    opt.param_groups[0]["eps"] = 1e-8
    opt.step({"w": np.ones(3)})
    assert params["w"][0] < 0


# -- a module's state_dict is not its parameters -------------------------------------------------

@pytest.mark.parametrize("optimizer", [cgru.optim.SGD, cgru.optim.Adam, cgru.optim.AdamW])
def test_a_state_dict_is_refused_with_pass_the_module(optimizer):
    gru = cgru.GRU(3, 4, seed=0)
    for params in (gru.state_dict(), [gru.state_dict()], [{"w": np.zeros(2)}, gru.state_dict()]):
        with pytest.raises(TypeError, match="state_dict.*copies.*pass the module itself"):
            optimizer(params, lr=0.1)
    with pytest.raises(ValueError, match="read-only.*pass the module itself"):
        optimizer(dict(gru.named_parameters()), lr=0.1)


def test_a_plain_dict_made_from_a_state_dict_is_the_users_own():
    gru = cgru.GRU(3, 4, seed=0)
    mine = dict(gru.state_dict())                    # the user's own arrays now
    before = gru.state_dict()
    opt = cgru.optim.SGD(mine, lr=0.5)
    opt.step({name: np.ones_like(value) for name, value in mine.items()})
    np.testing.assert_array_equal(mine["weight_hh_l0"], before["weight_hh_l0"] - 0.5)
    np.testing.assert_array_equal(gru.weight_hh_l0, before["weight_hh_l0"])
