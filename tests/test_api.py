"""The module's API: construction, parameters, state_dict, modes, layouts and dtypes."""
import copy
import warnings

import numpy as np
import pytest

import cgru


def test_attributes_and_defaults():
    gru = cgru.GRU(3, 5)
    assert (gru.input_size, gru.hidden_size, gru.num_layers) == (3, 5, 1)
    assert gru.bias is True and gru.batch_first is False and gru.bidirectional is False
    assert gru.dropout == 0.0 and gru.dtype == np.float32
    assert gru.training is False


def test_train_and_eval_return_the_module():
    gru = cgru.GRU(3, 5)
    assert gru.train() is gru and gru.training is True
    assert gru.eval() is gru and gru.training is False
    assert gru.train(False) is gru and gru.training is False


def test_dtype_and_seed_are_keyword_only():
    with pytest.raises(TypeError):
        cgru.GRU(3, 5, 1, True, False, 0.0, False, np.float64)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_parameter_names_shapes_and_order(num_layers, bidirectional, bias):
    gru = cgru.GRU(7, 4, num_layers, bias=bias, bidirectional=bidirectional, dtype=np.float64)
    d = 2 if bidirectional else 1
    expected = []
    for k in range(num_layers):
        for suffix in [""] + (["_reverse"] if bidirectional else []):
            expected += [(f"weight_ih_l{k}{suffix}", (12, 7 if k == 0 else 4 * d)),
                         (f"weight_hh_l{k}{suffix}", (12, 4))]
            if bias:
                expected += [(f"bias_ih_l{k}{suffix}", (12,)), (f"bias_hh_l{k}{suffix}", (12,))]
    state = gru.state_dict()
    assert [(k, v.shape) for k, v in state.items()] == expected
    for name, shape in expected:
        param = getattr(gru, name)
        assert param.shape == shape and param.dtype == np.float64
    if not bias:
        assert not hasattr(gru, "bias_ih_l0")


def test_initialisation_is_uniform_in_bound():
    gru = cgru.GRU(10, 64, 2, bidirectional=True, seed=0)
    bound = 1 / np.sqrt(64)
    values = np.concatenate([v.ravel() for v in gru.state_dict().values()])
    assert values.min() >= -bound and values.max() <= bound
    # U(-k, k): mean 0, variance k^2 / 3
    assert abs(values.mean()) < 0.01 * bound * 10
    assert abs(values.var() - bound ** 2 / 3) < 0.05 * bound ** 2


def test_seed_reproducible_and_generator_accepted():
    a = cgru.GRU(3, 5, 2, seed=7).state_dict()
    b = cgru.GRU(3, 5, 2, seed=7).state_dict()
    c = cgru.GRU(3, 5, 2, seed=8).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    cgru.GRU(3, 5, seed=np.random.default_rng(1))


def test_state_dict_returns_copies():
    gru = cgru.GRU(3, 5, seed=0)
    state = gru.state_dict()
    state["weight_ih_l0"][:] = 0
    assert np.any(gru.weight_ih_l0 != 0)


def test_load_state_dict_round_trip_and_copy(rng):
    src = cgru.GRU(3, 5, 2, bidirectional=True, seed=1)
    dst = cgru.GRU(3, 5, 2, bidirectional=True, seed=2)
    state = src.state_dict()
    result = dst.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(src(x)[0], dst(x)[0])
    state["weight_hh_l1"][:] = 100  # later changes to the caller's arrays must not leak in
    np.testing.assert_array_equal(src(x)[0], dst(x)[0])


def test_load_state_dict_accepts_lists_and_converts_dtype():
    gru = cgru.GRU(2, 1, bias=False, dtype=np.float64)
    gru.load_state_dict({"weight_ih_l0": [[1, 2], [3, 4], [5, 6]],
                         "weight_hh_l0": np.ones((3, 1), dtype=np.float32)})
    assert gru.weight_ih_l0.dtype == np.float64
    np.testing.assert_array_equal(gru.weight_ih_l0, [[1, 2], [3, 4], [5, 6]])


def test_load_state_dict_accepts_torch_tensors(torch):
    ref = torch.nn.GRU(3, 4)
    gru = cgru.GRU(3, 4)
    gru.load_state_dict(ref.state_dict())  # parameters requiring grad included
    gru.load_state_dict(dict(ref.named_parameters()))
    np.testing.assert_array_equal(gru.weight_hh_l0, ref.weight_hh_l0.detach().numpy())


def test_load_state_dict_strictness():
    gru = cgru.GRU(3, 5, seed=0)
    state = gru.state_dict()
    before = gru.weight_ih_l0.copy()
    with pytest.raises(KeyError, match="bias_hh_l0"):
        gru.load_state_dict({k: v for k, v in state.items() if k != "bias_hh_l0"})
    with pytest.raises(KeyError, match="extra"):
        gru.load_state_dict({**state, "extra": np.zeros(1)})
    result = gru.load_state_dict({"weight_ih_l0": np.zeros((15, 3)), "extra": 1}, strict=False)
    assert result.unexpected_keys == ["extra"] and "bias_hh_l0" in result.missing_keys
    assert np.all(gru.weight_ih_l0 == 0)
    assert not np.array_equal(before, gru.weight_ih_l0)


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_wrong_shape_names_key_and_shapes(strict):
    gru = cgru.GRU(3, 5, seed=0)
    state = gru.state_dict()
    state["weight_hh_l0"] = np.zeros((15, 4))
    before = gru.state_dict()
    with pytest.raises(ValueError, match=r"weight_hh_l0.*\(15, 5\).*\(15, 4\)"):
        gru.load_state_dict(state, strict=strict)
    after = gru.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # all or nothing


@pytest.mark.parametrize("bad", [[1, 2], "weights", 3, None])
def test_load_state_dict_needs_a_mapping(bad):
    with pytest.raises(TypeError, match="mapping"):
        cgru.GRU(3, 5).load_state_dict(bad)


def test_parameters_are_read_only_and_assignable(rng):
    gru = cgru.GRU(3, 5, seed=0)
    with pytest.raises(ValueError):
        gru.weight_hh_l0[0, 0] = 1.0
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    before = gru(x)[0]
    gru.weight_hh_l0 = np.zeros((15, 5))
    assert gru.weight_hh_l0.dtype == np.float32 and np.all(gru.weight_hh_l0 == 0)
    assert not np.allclose(before, gru(x)[0])
    with pytest.raises(ValueError, match="weight_hh_l0"):
        gru.weight_hh_l0 = np.zeros((5, 15))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_are_new_contiguous_arrays_of_module_dtype(dtype, rng):
    gru = cgru.GRU(3, 4, 2, bidirectional=True, batch_first=True, dtype=dtype, seed=0)
    x = rng.standard_normal((2, 5, 3))
    output, h_n = gru(x)
    assert output.shape == (2, 5, 8) and h_n.shape == (4, 2, 4)
    for a in (output, h_n):
        assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert not np.shares_memory(a, x)


def test_other_numeric_dtypes_are_converted(rng):
    gru = cgru.GRU(3, 4, seed=0)
    x = rng.integers(-3, 3, size=(5, 2, 3))
    np.testing.assert_allclose(gru(x)[0], gru(x.astype(np.float32))[0], atol=1e-6)
    np.testing.assert_allclose(gru(x.tolist())[0], gru(x.astype(np.float32))[0], atol=1e-6)


def test_any_memory_layout(rng):
    gru = cgru.GRU(3, 4, seed=0, dtype=np.float64)
    base = rng.standard_normal((6, 2, 3))
    expected = gru(base)
    fortran = np.asfortranarray(base)
    reversed_view = base[::-1].copy()[::-1]
    readonly = base.copy()
    readonly.flags.writeable = False
    for x in (fortran, reversed_view, readonly):
        np.testing.assert_array_equal(gru(x)[0], expected[0])
    broadcast = np.broadcast_to(base[:, :1], (6, 2, 3))
    np.testing.assert_array_equal(gru(broadcast)[0], gru(np.ascontiguousarray(broadcast))[0])
    hx = np.broadcast_to(rng.standard_normal(4), (1, 2, 4))
    np.testing.assert_array_equal(gru(base, hx)[0], gru(base, hx.copy())[0])


def test_callers_arrays_are_never_written(rng):
    gru = cgru.GRU(3, 4, 2, bidirectional=True, seed=0).train()
    gru.dropout = 0.5
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    hx = rng.standard_normal((4, 2, 4)).astype(np.float32)
    x0, hx0 = x.copy(), hx.copy()
    gru(x, hx)
    gru.forward(x, hx)
    packed = cgru.pack_padded_sequence(x, [5, 3])
    data0 = packed.data.copy()
    gru(packed, hx)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(hx, hx0)
    np.testing.assert_array_equal(packed.data, data0)


def test_batch_first_and_unbatched_agree_with_time_major(rng):
    gru = cgru.GRU(3, 4, 2, bidirectional=True, seed=0, dtype=np.float64)
    x = rng.standard_normal((6, 3, 3))
    out, h_n = gru(x)
    gru.batch_first = True
    out_bf, h_bf = gru(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(out_bf, out.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_bf, h_n)
    out_u, h_u = gru(x[:, 1])   # unbatched ignores batch_first, as in PyTorch
    np.testing.assert_allclose(out_u, out[:, 1], atol=1e-12)
    np.testing.assert_allclose(h_u, h_n[:, 1], atol=1e-12)


def test_forward_is_call(rng):
    gru = cgru.GRU(3, 4, seed=0)
    x = rng.standard_normal((2, 1, 3))
    np.testing.assert_array_equal(gru.forward(x)[0], gru(x)[0])


def test_repr_like_pytorch():
    assert repr(cgru.GRU(3, 4)) == "GRU(3, 4)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert repr(cgru.GRU(64, 128, 2, batch_first=True, bidirectional=True, dropout=0.1,
                             bias=False)) == (
            "GRU(64, 128, num_layers=2, bias=False, batch_first=True, dropout=0.1, "
            "bidirectional=True)")


def test_dropout_warning_with_one_layer():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        cgru.GRU(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cgru.GRU(3, 4, num_layers=2, dropout=0.5)


def test_deepcopy_is_independent(rng):
    gru = cgru.GRU(3, 4, seed=0)
    clone = copy.deepcopy(gru)
    clone.weight_hh_l0 = np.zeros((12, 4))
    x = rng.standard_normal((2, 1, 3))
    assert not np.allclose(gru(x)[0], clone(x)[0])


def test_show_config(capsys):
    cgru.show_config()
    text = capsys.readouterr().out
    assert cgru.__version__ in text and "OpenMP" in text and "threads" in text
    assert "BLAS" in text
    assert "CPU:" in text and "features:" in text and "avx2" in text
    assert "bfloat16:" in text and "int8:" in text


# -- what a PyTorch user types -------------------------------------------------------------------

def test_all_weights_is_torchs_nested_list_of_the_parameters():
    gru = cgru.GRU(3, 4, 2, bidirectional=True, seed=0)
    weights = gru.all_weights
    assert len(weights) == 4                         # (layer, direction) pairs, forward first
    assert [w is gru.weight_ih_l1_reverse for w in weights[3]] == [True, False, False, False]
    assert [w.shape for w in weights[2]] == [(12, 8), (12, 4), (12,), (12,)]
    assert all(not w.flags.writeable for layer in weights for w in layer)
    assert [len(layer) for layer in cgru.GRU(3, 4, bias=False).all_weights] == [2]


def test_all_weights_matches_torch(torch):
    module = torch.nn.GRU(3, 4, 2, bidirectional=True)
    gru = cgru.GRU.from_torch(module)
    for ours, theirs in zip(gru.all_weights, module.all_weights, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b.detach().numpy())


@pytest.mark.parametrize("module", [cgru.GRU(3, 4, seed=0), cgru.GRUCell(3, 4, seed=0)])
def test_to_double_and_float_give_a_module_of_that_dtype(module, rng):
    assert module.to(np.float32) is module and module.float() is module
    assert module.to("cpu") is module and module.to(device="cpu") is module
    double = module.double()
    assert double is not module and double.dtype == np.float64 and module.dtype == np.float32
    assert double.to("cpu", "float64") is double and double.double() is double
    for name, value in module.named_parameters():
        np.testing.assert_array_equal(double.get_parameter(name), value.astype(np.float64))
    x = rng.standard_normal((5, 3) if isinstance(module, cgru.GRUCell) else (2, 5, 3))
    np.testing.assert_allclose(np.asarray(double(x)[0]), np.asarray(module(x)[0]), atol=1e-6)
    assert double.float().dtype == np.float32
    with pytest.raises(ValueError, match="CPUs only"):
        module.to("cuda")
    with pytest.raises(TypeError, match="float32 or numpy.float64"):
        module.to(np.float16)


def test_to_takes_torch_dtypes(torch):
    gru = cgru.GRU(3, 4, seed=0)
    assert gru.to(torch.float64).dtype == np.float64
    assert gru.to(torch.device("cpu")) is gru


@pytest.mark.parametrize("name,words", [
    ("zero_grad", "no gradients"), ("requires_grad_", "optimizer"),
    ("flatten_parameters", "nothing to call"), ("cuda", "CPUs"), ("half", "bfloat16")])
@pytest.mark.parametrize("cls", [cgru.GRU, cgru.GRUCell])
def test_torch_only_names_say_the_cgru_way(cls, name, words):
    module = cls(3, 4)
    assert not hasattr(module, name)
    with pytest.raises(AttributeError, match=words) as error:
        getattr(module, name)
    assert repr(name) in str(error.value)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'$"):
        module.no_such_thing


def test_state_dict_is_a_plain_dict_of_copies_that_pickles_as_one():
    import pickle
    state = cgru.GRU(3, 4, seed=0).state_dict()
    assert isinstance(state, dict) and all(v.flags.writeable for v in state.values())
    assert type(pickle.loads(pickle.dumps(state))) is dict
    assert type(copy.deepcopy(state)) is dict
