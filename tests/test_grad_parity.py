"""GRU.vjp and GRUCell.vjp: gradients equal PyTorch's autograd (golden fixtures always, live when
torch is installed), central finite differences of cgru's own forward (dropout included), and
the NumPy reference; and the contract of backward (keys, dtypes, shapes, copies, bad input,
threads)."""
import copy
import itertools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cgru
from conftest import assert_close, fixture_names, load_fixture
from reference_grad import (GRAD_TOLERANCE, assert_grads_close, grad_error, gru_reference_vjp,
                            torch_cell_vjp, torch_vjp)

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
FD_STEP, FD_TOLERANCE = 1e-6, 1e-7       # float64 central differences (see test_grad_reference)

GRU_FIXTURES = [n for n in fixture_names("grad") if not n.startswith("grad_cell_")]
CELL_FIXTURES = fixture_names("grad_cell")


def _expected_keys(module):
    return ["input", "hx"] + list(module.state_dict())


def _check_contract(grads, module, input_shape, hx_shape):
    """Keys in order, the module's dtype, the right shapes, new C-contiguous arrays."""
    assert list(grads) == _expected_keys(module)
    shapes = {"input": tuple(input_shape), "hx": tuple(hx_shape),
              **{k: v.shape for k, v in module.state_dict().items()}}
    for name, value in grads.items():
        assert isinstance(value, np.ndarray), name
        assert value.dtype == module.dtype, (name, value.dtype)
        assert value.shape == shapes[name], (name, value.shape, shapes[name])
        assert value.flags.c_contiguous, name


# -- (a) golden fixtures from torch 2.13 --------------------------------------------------------

def _fixture_module(config, params):
    gru = cgru.GRU(config["input_size"], config["hidden_size"], config["num_layers"],
                   bias=config["bias"], batch_first=config["batch_first"],
                   bidirectional=config["bidirectional"], dtype=np.dtype(config["dtype"]))
    gru.load_state_dict(params)
    return gru


@pytest.mark.parametrize("name", GRU_FIXTURES)
def test_gru_gradients_match_torch_fixture(name):
    config, params, arrays = load_fixture(name)
    dtype = np.dtype(config["dtype"])
    gru = _fixture_module(config, params)
    expected = {k[len("grad/"):]: v for k, v in arrays.items() if k.startswith("grad/")}
    assert list(expected) == _expected_keys(gru)
    if config["packed"]:
        source = cgru.pack_padded_sequence(arrays["x"], config["lengths"],
                                           batch_first=config["batch_first"],
                                           enforce_sorted=config["enforce_sorted"])
        np.testing.assert_array_equal(source.data, arrays["data"])
        np.testing.assert_array_equal(source.batch_sizes, arrays["batch_sizes"])
        input_shape = source.data.shape
    else:
        source = arrays["x"]
        input_shape = source.shape
    (output, h_n), backward = gru.vjp(source, arrays.get("hx"))
    assert_close(output.data if config["packed"] else output, arrays["output"], dtype)
    assert_close(h_n, arrays["h_n"], dtype)
    grads = backward(arrays.get("grad_output"), arrays.get("grad_h_n"))
    _check_contract(grads, gru, input_shape, arrays["h_n"].shape)
    assert_grads_close(grads, expected, GRAD_TOLERANCE[dtype], name)
    if config["packed"]:       # grad_output as a PackedSequence too, with the output's fields
        as_packed = cgru.PackedSequence(arrays["grad_output"], output.batch_sizes,
                                        output.sorted_indices, output.unsorted_indices)
        again = backward(as_packed, arrays["grad_h_n"])
        for k in grads:
            np.testing.assert_array_equal(again[k], grads[k])


@pytest.mark.parametrize("name", CELL_FIXTURES)
def test_cell_gradients_match_torch_fixture(name):
    config, params, arrays = load_fixture(name)
    dtype = np.dtype(config["dtype"])
    cell = cgru.GRUCell(config["input_size"], config["hidden_size"], bias=config["bias"],
                        dtype=dtype)
    cell.load_state_dict(params)
    h1, backward = cell.vjp(arrays["x"], arrays.get("hx"))
    assert_close(h1, arrays["h1"], dtype)
    grads = backward(arrays["grad_h1"])
    expected = {k[len("grad/"):]: v for k, v in arrays.items() if k.startswith("grad/")}
    _check_contract(grads, cell, arrays["x"].shape, arrays["h1"].shape)
    assert_grads_close(grads, expected, GRAD_TOLERANCE[dtype], name)


# -- (b) live against torch autograd ------------------------------------------------------------

def _pair(torch, rng, input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
          dtype):
    gru = cgru.GRU(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                   bidirectional=bidirectional, dtype=dtype, seed=int(rng.integers(1 << 30)))
    ref = torch.nn.GRU(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                       bidirectional=bidirectional).to(getattr(torch, np.dtype(dtype).name))
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    return gru, ref.eval()


def _compare_live(torch, rng, gru, ref, mode, upstream, seq_len, batch, what):
    """One vjp + backward of gru against torch autograd on ref, for an input mode:
    "dense", "dense_no_hx", "unbatched", "packed_sorted" or "packed_unsorted"."""
    dtype, d = gru.dtype, gru.num_directions
    state = (d * gru.num_layers, batch, gru.hidden_size)
    kwargs = {}
    if mode == "unbatched":
        x = rng.standard_normal((seq_len, gru.input_size)).astype(dtype)
        state = (state[0], state[2])
        source = x
    else:
        x = rng.standard_normal((batch, seq_len, gru.input_size) if gru.batch_first
                                else (seq_len, batch, gru.input_size)).astype(dtype)
        source = x
        if mode.startswith("packed"):
            lengths = rng.integers(1, seq_len + 1, size=batch)
            lengths[rng.integers(batch)] = seq_len
            enforce = mode == "packed_sorted"
            if enforce:
                lengths = np.sort(lengths)[::-1].copy()
            kwargs = dict(lengths=lengths, enforce_sorted=enforce)
            source = cgru.pack_padded_sequence(x, lengths, batch_first=gru.batch_first,
                                               enforce_sorted=enforce)
    hx = None if mode in ("dense_no_hx", "unbatched_no_hx") else \
        rng.standard_normal(state).astype(dtype)
    (output, h_n), backward = gru.vjp(source, hx)
    out_array = output.data if mode.startswith("packed") else output
    g_out = rng.standard_normal(out_array.shape).astype(dtype) if upstream != "h_n" else None
    g_h = rng.standard_normal(h_n.shape).astype(dtype) if upstream != "output" else None
    grads = backward(g_out, g_h)
    t_out, t_h, want = torch_vjp(torch, ref, x, hx, g_out, g_h, **kwargs)
    assert_close(out_array, t_out, dtype)
    assert_close(h_n, t_h, dtype)
    input_shape = source.data.shape if mode.startswith("packed") else x.shape
    _check_contract(grads, gru, input_shape, state)
    assert_grads_close(grads, want, GRAD_TOLERANCE[dtype], f"{what} {mode} upstream={upstream}")


MODES = ["dense", "dense_no_hx", "unbatched", "packed_sorted", "packed_unsorted"]
UPSTREAMS = ["both", "output", "h_n"]
LIVE_CONFIGS = list(itertools.product([1, 2, 3], [True, False], [False, True], [False, True],
                                      [np.float32, np.float64]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers,bias,batch_first,bidirectional,dtype", LIVE_CONFIGS)
def test_gradients_match_torch_live(torch, rng, num_layers, bias, batch_first, bidirectional,
                                    dtype, mode):
    for upstream in UPSTREAMS:
        isz, hsz = int(rng.integers(1, 9)), int(rng.integers(1, 21))
        seq_len, batch = int(rng.integers(1, 7)), int(rng.integers(1, 6))
        gru, ref = _pair(torch, rng, isz, hsz, num_layers, bias, batch_first, bidirectional,
                         dtype)
        what = (f"layers={num_layers} bias={bias} batch_first={batch_first} "
                f"bidirectional={bidirectional} {np.dtype(dtype).name} I={isz} H={hsz} "
                f"L={seq_len} N={batch}")
        _compare_live(torch, rng, gru, ref, mode, upstream, seq_len, batch, what)


@pytest.mark.parametrize("input_size,hidden_size,seq_len,batch",
                         [(1, 1, 1, 1), (3, 17, 5, 3), (2, 130, 2, 2), (5, 33, 4, 7),
                          (4, 16, 3, 1), (7, 48, 6, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_odd_sizes_match_torch_live(torch, rng, input_size, hidden_size, seq_len, batch, dtype):
    for num_layers, bidirectional, mode in [(1, False, "dense"), (2, True, "packed_unsorted")]:
        gru, ref = _pair(torch, rng, input_size, hidden_size, num_layers, True, False,
                         bidirectional, dtype)
        what = f"I={input_size} H={hidden_size} L={seq_len} N={batch} layers={num_layers}"
        _compare_live(torch, rng, gru, ref, mode, "both", seq_len, batch, what)


@pytest.mark.parametrize("bias,batched,with_hx",
                         list(itertools.product([True, False], [True, False], [True, False])))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_gradients_match_torch_live(torch, rng, bias, batched, with_hx, dtype):
    for isz, hsz, batch in [(4, 5, 3), (3, 17, 2), (2, 130, 1)]:
        cell = cgru.GRUCell(isz, hsz, bias=bias, dtype=dtype, seed=int(rng.integers(1 << 30)))
        ref = torch.nn.GRUCell(isz, hsz, bias=bias).to(getattr(torch, np.dtype(dtype).name))
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
        lead = (batch,) if batched else ()
        x = rng.standard_normal(lead + (isz,)).astype(dtype)
        hx = rng.standard_normal(lead + (hsz,)).astype(dtype) if with_hx else None
        g = rng.standard_normal(lead + (hsz,)).astype(dtype)
        h1, backward = cell.vjp(x, hx)
        grads = backward(g)
        t_h1, want = torch_cell_vjp(torch, ref, x, hx, g)
        assert_close(h1, t_h1, dtype)
        _check_contract(grads, cell, x.shape, lead + (hsz,))
        assert_grads_close(grads, want, GRAD_TOLERANCE[np.dtype(dtype)],
                           f"cell I={isz} H={hsz} N={batch if batched else None}")


# -- the NumPy reference (a third oracle, float64, any lengths) ----------------------------------

@settings(max_examples=30, deadline=None)
@given(isz=st.integers(1, 6), hsz=st.integers(1, 20), layers=st.integers(1, 3),
       bias=st.booleans(), bi=st.booleans(),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=6),
       seed=st.integers(0, 2**31 - 1))
def test_packed_gradients_match_numpy_reference(isz, hsz, layers, bias, bi, lengths, seed):
    rng = np.random.default_rng(seed)
    gru = cgru.GRU(isz, hsz, layers, bias=bias, bidirectional=bi, dtype=np.float64, seed=seed)
    d, seq_len, batch = 2 if bi else 1, max(lengths), len(lengths)
    x = rng.standard_normal((seq_len, batch, isz))
    hx = rng.standard_normal((d * layers, batch, hsz))
    g_padded = rng.standard_normal((seq_len, batch, d * hsz))
    g_h = rng.standard_normal((d * layers, batch, hsz))
    packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    g_out = cgru.pack_padded_sequence(g_padded, lengths, enforce_sorted=False).data
    (output, h_n), backward = gru.vjp(packed, hx)
    grads = backward(g_out, g_h)
    ref_out, ref_h, want = gru_reference_vjp(gru.state_dict(), x, hx, layers, bi, lengths,
                                             g_padded, g_h)
    want["input"] = cgru.pack_padded_sequence(want["input"], lengths, enforce_sorted=False).data
    padded_out, _ = cgru.pad_packed_sequence(output)
    assert_close(padded_out, ref_out, np.float64)
    assert_close(h_n, ref_h, np.float64)
    assert_grads_close(grads, want, GRAD_TOLERANCE[F64], "vs numpy reference")


# -- (c) central finite differences of cgru's own forward, float64 -------------------------------

def _loss_of(module, source, hx, g_out, g_h):
    output, h_n = module(source, hx)
    out = output.data if isinstance(output, cgru.PackedSequence) else output
    return float(np.sum(out * g_out) + np.sum(h_n * g_h))


def _with_data(source, data):
    if isinstance(source, cgru.PackedSequence):
        return cgru.PackedSequence(data, source.batch_sizes, source.sorted_indices,
                                   source.unsorted_indices)
    return data


def _check_finite_differences(rng, make_module, source, hx, g_out, g_h, grads, coordinates=6):
    """Central differences of the loss, make_module() giving a module in the forward's state
    (for dropout: a deep copy that draws the same mask), on `coordinates` random entries of the
    input, hx and every parameter, and along one random direction over all of them."""
    x = source.data if isinstance(source, cgru.PackedSequence) else source
    base = {"input": np.array(x), "hx": np.array(hx), **make_module().state_dict()}

    def loss_at(arrays):
        module = make_module()
        module.load_state_dict({k: v for k, v in arrays.items() if k not in ("input", "hx")})
        return _loss_of(module, _with_data(source, arrays["input"]), arrays["hx"], g_out, g_h)

    errors = {}
    for name, value in base.items():
        flat_grad = grads[name].reshape(-1)
        scale = max(1.0, float(np.max(np.abs(flat_grad))))
        picks = rng.choice(value.size, size=min(coordinates, value.size), replace=False)
        worst = 0.0
        for i in picks:
            moved = {k: v.copy() for k, v in base.items()}
            moved[name].reshape(-1)[i] += FD_STEP
            up = loss_at(moved)
            moved[name].reshape(-1)[i] -= 2 * FD_STEP
            down = loss_at(moved)
            worst = max(worst, abs((up - down) / (2 * FD_STEP) - flat_grad[i]) / scale)
        errors[name] = worst
    direction = {k: rng.standard_normal(v.shape) for k, v in base.items()}
    fd = (loss_at({k: v + FD_STEP * direction[k] for k, v in base.items()})
          - loss_at({k: v - FD_STEP * direction[k] for k, v in base.items()})) / (2 * FD_STEP)
    analytic = sum(float(np.sum(grads[k] * direction[k])) for k in base)
    errors["<direction>"] = abs(fd - analytic) / max(1.0, abs(analytic))
    bad = {k: e for k, e in errors.items() if not e <= FD_TOLERANCE}
    assert not bad, f"finite-difference errors above {FD_TOLERANCE:g}: {bad}"


FD_CASES = [
    # input_size, hidden_size, num_layers, bias, batch_first, bidirectional, mode, L, N
    (3, 4, 1, True, False, False, "dense", 4, 2),
    (2, 3, 2, False, True, True, "dense", 3, 3),
    (3, 5, 3, True, False, True, "packed", 4, 3),
    (2, 4, 2, True, False, False, "unbatched", 5, 1),
    (2, 17, 1, True, False, True, "dense", 2, 2),
]


@pytest.mark.parametrize("case", FD_CASES)
def test_gradients_match_finite_differences(rng, case):
    isz, hsz, layers, bias, bf, bi, mode, seq_len, batch = case
    gru = cgru.GRU(isz, hsz, layers, bias=bias, batch_first=bf, bidirectional=bi,
                   dtype=np.float64, seed=int(rng.integers(1 << 30)))
    d = 2 if bi else 1
    if mode == "unbatched":
        source = rng.standard_normal((seq_len, isz))
        hx = rng.standard_normal((d * layers, hsz))
    else:
        x = rng.standard_normal((batch, seq_len, isz) if bf else (seq_len, batch, isz))
        hx = rng.standard_normal((d * layers, batch, hsz))
        source = x
        if mode == "packed":
            source = cgru.pack_padded_sequence(x, [seq_len, 1, seq_len - 1][:batch],
                                               batch_first=bf, enforce_sorted=False)
    (output, h_n), backward = gru.vjp(source, hx)
    out = output.data if mode == "packed" else output
    g_out, g_h = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    grads = backward(g_out, g_h)
    _check_finite_differences(rng, lambda: copy.deepcopy(gru), source, hx, g_out, g_h, grads)


# -- (d) dropout: the mask of the vjp's forward is the one its backward uses -----------------------

@pytest.mark.parametrize("bidirectional,packed", [(False, False), (True, True)])
def test_dropout_gradients_match_finite_differences(rng, bidirectional, packed):
    gru = cgru.GRU(3, 4, 3, dropout=0.5, bidirectional=bidirectional, dtype=np.float64,
                   seed=1234).train()
    d = 2 if bidirectional else 1
    x = rng.standard_normal((5, 3, 3))
    hx = rng.standard_normal((3 * d, 3, 4))
    source = cgru.pack_padded_sequence(x, [2, 5, 4], enforce_sorted=False) if packed else x
    # Every module here is a deep copy of `before`, so all start from the same generator state
    # and draw the same mask (see test_deepcopy_continues_the_random_stream for the original).
    before = copy.deepcopy(gru)
    (output, h_n), backward = copy.deepcopy(before).vjp(source, hx)
    replay_out, replay_h = copy.deepcopy(before)(source, hx)
    out = output.data if packed else output
    np.testing.assert_array_equal(out, replay_out.data if packed else replay_out)
    np.testing.assert_array_equal(h_n, replay_h)
    # the mask is not vacuous: eval mode differs, in the output and the gradients
    eval_out = copy.deepcopy(before).eval()(source, hx)[0]
    assert not np.allclose(out, eval_out.data if packed else eval_out)
    g_out, g_h = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    grads = backward(g_out, g_h)
    _, eval_backward = copy.deepcopy(before).eval().vjp(source, hx)
    assert grad_error(grads["input"], eval_backward(g_out, g_h)["input"]) > 1e-3
    _check_finite_differences(rng, lambda: copy.deepcopy(before), source, hx, g_out, g_h,
                              grads)


def test_vjp_draws_the_mask_forward_would_draw(rng):
    """In training mode, vjp's forward is the forward: same draws from the module's generator,
    so a module and its twin (same seed) agree call by call, whichever of the two each uses."""
    a = cgru.GRU(3, 6, 3, dropout=0.4, dtype=np.float64, seed=99).train()
    b = cgru.GRU(3, 6, 3, dropout=0.4, dtype=np.float64, seed=99).train()
    x = rng.standard_normal((4, 2, 3))
    for _ in range(3):
        (out_a, h_a), _ = a.vjp(x)
        out_b, h_b = b(x)
        np.testing.assert_array_equal(out_a, out_b)
        np.testing.assert_array_equal(h_a, h_b)
        out_a, h_a = a(x)
        (out_b, h_b), _ = b.vjp(x)
        np.testing.assert_array_equal(out_a, out_b)


def test_deepcopy_continues_the_random_stream(rng):
    """A deep copy of a training-mode module draws the dropout mask the original would draw
    next (what the finite-difference check of dropout relies on when it copies the module
    before its vjp)."""
    gru = cgru.GRU(3, 4, 2, dropout=0.5, dtype=np.float64, seed=5).train()
    x = rng.standard_normal((4, 2, 3))
    twin = copy.deepcopy(gru)
    np.testing.assert_array_equal(twin(x)[0], gru(x)[0])


def test_dropout_one_blocks_gradient_to_lower_layers(rng):
    gru = cgru.GRU(3, 4, 2, dropout=1.0, dtype=np.float64, seed=0).train()
    (output, h_n), backward = gru.vjp(rng.standard_normal((4, 2, 3)))
    grads = backward(rng.standard_normal(output.shape), None)
    for name in ("input", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert not np.any(grads[name]), name
    assert np.any(grads["weight_hh_l1"])


# -- (e) the contract of backward ---------------------------------------------------------------

def _small_problem(rng, dtype=np.float64, **config):
    config = dict(dict(num_layers=2, bidirectional=True), **config)
    gru = cgru.GRU(3, 5, dtype=dtype, seed=7, **config)
    d = 2 if config["bidirectional"] else 1
    x = rng.standard_normal((4, 3, 3)).astype(dtype)
    hx = rng.standard_normal((d * config["num_layers"], 3, 5)).astype(dtype)
    return gru, x, hx


def test_vjp_forward_is_the_forward(rng):
    for dtype in (np.float32, np.float64):
        gru, x, hx = _small_problem(rng, dtype)
        packed = cgru.pack_padded_sequence(x, [2, 4, 1], enforce_sorted=False)
        for source, h in [(x, hx), (x, None), (x[:, 0], hx[:, 0]), (packed, hx)]:
            (output, h_n), _ = gru.vjp(source, h)
            want_out, want_h = gru(source, h)
            if isinstance(source, cgru.PackedSequence):
                assert isinstance(output, cgru.PackedSequence)
                for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
                    np.testing.assert_array_equal(getattr(output, field),
                                                  getattr(want_out, field))
                output, want_out = output.data, want_out.data
            assert output.dtype == want_out.dtype and output.flags.c_contiguous
            np.testing.assert_array_equal(output, want_out)
            np.testing.assert_array_equal(h_n, want_h)


@pytest.mark.parametrize("layout", ["dense", "batch_first", "unbatched", "packed", "no_hx",
                                    "unbatched_no_hx"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_dtypes_and_order(rng, layout, dtype):
    gru = cgru.GRU(3, 5, 2, bias=layout != "packed", batch_first=layout == "batch_first",
                   bidirectional=True, dtype=dtype, seed=3)
    x = rng.standard_normal((3, 4, 3) if layout == "batch_first" else (4, 3, 3))
    hx = rng.standard_normal((4, 3, 5))
    source, h, input_shape, hx_shape = x, hx, x.shape, hx.shape
    if layout.startswith("unbatched"):
        source, h, input_shape, hx_shape = x[:, 0], hx[:, 0], (4, 3), (4, 5)
    if layout == "packed":
        source = cgru.pack_padded_sequence(x, [3, 4, 1], enforce_sorted=False)
        input_shape = (8, 3)
    if layout.endswith("no_hx"):
        h = None
    (output, h_n), backward = gru.vjp(source, h)
    assert h_n.shape == hx_shape
    for g_out, g_h in [(None, None), (None, np.ones(hx_shape)),
                       (np.ones((output.data if layout == "packed" else output).shape), None)]:
        grads = backward(g_out, g_h)
        _check_contract(grads, gru, input_shape, hx_shape)
        if g_out is None and g_h is None:
            assert all(not np.any(v) for v in grads.values())


def test_cell_keys_without_bias(rng):
    cell = cgru.GRUCell(3, 4, bias=False, seed=0)
    h1, backward = cell.vjp(rng.standard_normal((2, 3)))
    grads = backward(np.ones_like(h1))
    assert list(grads) == ["input", "hx", "weight_ih", "weight_hh"]
    _check_contract(grads, cell, (2, 3), (2, 4))
    assert all(not np.any(v) for v in backward(None).values())


def test_backward_twice_gives_identical_independent_results(rng):
    gru, x, hx = _small_problem(rng)
    (output, h_n), backward = gru.vjp(x, hx)
    g_out, g_h = rng.standard_normal(output.shape), rng.standard_normal(h_n.shape)
    first = backward(g_out, g_h)
    kept = {k: v.copy() for k, v in first.items()}
    for v in first.values():
        v[...] = np.nan              # the caller owns what backward returned
    second = backward(g_out, g_h)
    for k in kept:
        np.testing.assert_array_equal(second[k], kept[k])
        assert not np.shares_memory(second[k], first[k])
    other = backward(2 * g_out, 2 * g_h)     # linear in the upstream gradients
    for k in kept:
        np.testing.assert_allclose(other[k], 2 * kept[k], rtol=1e-12, atol=1e-14)


def test_hx_none_is_zeros(rng):
    gru, x, hx = _small_problem(rng)
    (output, h_n), backward = gru.vjp(x)
    (output0, h_n0), backward0 = gru.vjp(x, np.zeros_like(hx))
    g_out, g_h = rng.standard_normal(output.shape), rng.standard_normal(h_n.shape)
    assert_grads_close(backward(g_out, g_h), backward0(g_out, g_h), 0)


def test_callers_arrays_are_never_written(rng):
    for dtype in (np.float32, np.float64):
        gru, x, hx = _small_problem(rng, dtype)
        x_f = np.asfortranarray(x)                  # the module's dtype: may be used in place
        packed = cgru.pack_padded_sequence(x, [4, 2, 3], enforce_sorted=False)
        for source, h in [(x, hx), (x_f, hx), (packed, hx), (x[:, 1], hx[:, 1])]:
            data = source.data if isinstance(source, cgru.PackedSequence) else source
            copies = (data.copy(), h.copy())
            (output, h_n), backward = gru.vjp(source, h)
            out = output.data if isinstance(output, cgru.PackedSequence) else output
            g_out, g_h = rng.standard_normal(out.shape).astype(dtype), \
                rng.standard_normal(h_n.shape).astype(dtype)
            g_copies = (g_out.copy(), g_h.copy())
            grads = backward(g_out, g_h)
            if isinstance(source, cgru.PackedSequence):
                backward(cgru.PackedSequence(g_out, output.batch_sizes, output.sorted_indices,
                                             output.unsorted_indices), g_h)
            for got, want in zip((data, h, g_out, g_h), copies + g_copies):
                np.testing.assert_array_equal(got, want)
            for v in grads.values():
                for a in (data, h, g_out, g_h, out, h_n):
                    assert not np.shares_memory(v, a)


def test_later_edits_of_inputs_do_not_reach_backward(rng):
    gru, x, hx = _small_problem(rng)
    packed = cgru.pack_padded_sequence(x, [4, 2, 3], enforce_sorted=False)
    for source in (x.copy(), cgru.PackedSequence(packed.data.copy(), packed.batch_sizes,
                                                 packed.sorted_indices,
                                                 packed.unsorted_indices)):
        h = hx.copy()
        (output, h_n), backward = gru.vjp(source, h)
        out = output.data if isinstance(output, cgru.PackedSequence) else output
        g_out, g_h = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
        want = backward(g_out, g_h)
        (source.data if isinstance(source, cgru.PackedSequence) else source)[...] = 3.0
        h[...] = -2.0
        out[...] = 0.0
        h_n[...] = 0.0
        assert_grads_close(backward(g_out, g_h), want, 0)
    # the output vjp returns is the caller's: the tape keeps the states it needs apart
    cell = cgru.GRUCell(3, 4, dtype=np.float64, seed=0)
    x1, h = x[0].copy(), hx[0, :, :4].copy()
    h1, cell_backward = cell.vjp(x1, h)
    g = rng.standard_normal(h1.shape)
    want = cell_backward(g)
    x1[...], h[...], h1[...] = 3.0, -2.0, 0.0
    assert_grads_close(cell_backward(g), want, 0)


def test_backward_keeps_the_weights_of_its_forward(rng):
    gru, x, hx = _small_problem(rng)
    (output, h_n), backward = gru.vjp(x, hx)
    g_out, g_h = rng.standard_normal(output.shape), rng.standard_normal(h_n.shape)
    want = backward(g_out, g_h)
    new = {k: v + 0.5 for k, v in gru.state_dict().items()}
    gru.load_state_dict(new)
    gru.weight_hh_l1 = np.zeros_like(gru.weight_hh_l1)
    assert_grads_close(backward(g_out, g_h), want, 0)
    _, fresh = gru.vjp(x, hx)               # a new vjp sees the new weights
    assert grad_error(fresh(g_out, g_h)["input"], want["input"]) > 1e-3

    cell = cgru.GRUCell(3, 4, dtype=np.float64, seed=0)
    h1, cell_backward = cell.vjp(x[0], hx[0, :, :4])
    g = rng.standard_normal(h1.shape)
    cell_want = cell_backward(g)
    cell.load_state_dict({k: v * 2 for k, v in cell.state_dict().items()})
    assert_grads_close(cell_backward(g), cell_want, 0)


def _bad_upstreams(output, h_n, packed):
    g_out = np.ones((output.data if packed else output).shape)
    g_h = np.ones(h_n.shape)
    bad = [
        ("grad_output one row short", (g_out[:-1], g_h)),
        ("grad_output one channel more", (np.ones(g_out.shape[:-1] + (g_out.shape[-1] + 1,)),
                                          g_h)),
        ("grad_output transposed", (np.ones(g_out.shape[::-1]), g_h)),
        ("grad_output extra axis", (g_out[None], g_h)),
        ("grad_h_n wrong batch", (g_out, np.ones(h_n.shape[:-2] + (h_n.shape[-2] + 1,
                                                                   h_n.shape[-1])))),
        ("grad_h_n too few layers", (g_out, g_h[:-1])),
        ("grad_h_n 1-D", (g_out, g_h.reshape(-1))),
        ("grad_output a string", ("grad", g_h)),
        ("grad_h_n a string", (g_out, "grad")),
        ("grad_output a dict", ({"a": 1}, g_h)),
        ("grad_output an object", (object(), g_h)),
        ("grad_output complex", (g_out.astype(complex), g_h)),
    ]
    if packed:
        sizes = output.batch_sizes.copy()
        other = sizes.copy()
        other[0], other[-1] = other[-1], other[0]        # same total, other batch_sizes
        bad += [
            ("packed grad_output, other batch_sizes",
             (cgru.PackedSequence(g_out, other, output.sorted_indices, output.unsorted_indices),
              g_h)),
            ("packed grad_output, one step short",
             (cgru.PackedSequence(g_out[:-int(sizes[-1])], sizes[:-1], output.sorted_indices,
                                  output.unsorted_indices), g_h)),
        ]
    else:
        bad.append(("PackedSequence for a dense output",
                    (cgru.PackedSequence(g_out.reshape(-1, g_out.shape[-1]),
                                         np.array([g_out.reshape(-1, g_out.shape[-1]).shape[0]]
                                                  )), g_h)))
    return bad


@pytest.mark.parametrize("layout", ["dense", "unbatched", "packed_sorted", "packed_unsorted"])
def test_bad_upstream_gradients_raise_and_backward_still_works(rng, layout):
    gru, x, hx = _small_problem(rng)
    source, h = x, hx
    if layout == "unbatched":
        source, h = x[:, 0], hx[:, 0]
    elif layout.startswith("packed"):
        source = cgru.pack_padded_sequence(x, [4, 3, 1] if layout == "packed_sorted"
                                           else [1, 4, 3],
                                           enforce_sorted=layout == "packed_sorted")
    (output, h_n), backward = gru.vjp(source, h)
    packed = layout.startswith("packed")
    out = output.data if packed else output
    g_out, g_h = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    want = backward(g_out, g_h)
    raised = {}
    for what, args in _bad_upstreams(output, h_n, packed):
        try:
            backward(*args)
        except (ValueError, TypeError) as error:
            raised[what] = type(error).__name__
        except Exception as error:  # noqa: BLE001 - a wrong exception type is the failure
            raised[what] = f"WRONG {type(error).__name__}: {error}"
        else:
            raised[what] = "no error"
    wrong = {k: v for k, v in raised.items() if v not in ("ValueError", "TypeError")}
    assert not wrong, f"{layout}: {wrong}"
    assert_grads_close(backward(g_out, g_h), want, 0)


def test_cell_bad_upstream_raises(rng):
    cell = cgru.GRUCell(3, 4, dtype=np.float64, seed=0)
    h1, backward = cell.vjp(rng.standard_normal((2, 3)))
    want = backward(np.ones((2, 4)))
    for bad in (np.ones((2, 5)), np.ones((3, 4)), np.ones(4), np.ones((1, 2, 4)), "grad"):
        with pytest.raises((ValueError, TypeError)):
            backward(bad)
    assert_grads_close(backward(np.ones((2, 4))), want, 0)


# -- (f) Python threads sharing one module --------------------------------------------------------

def test_python_threads_share_one_module(rng):
    gru = cgru.GRU(4, 9, 2, bidirectional=True, dtype=np.float64, seed=5)
    jobs = []
    for i in range(4):
        batch = int(rng.integers(1, 6))
        x = rng.standard_normal((int(rng.integers(2, 8)), batch, 4))
        source = cgru.pack_padded_sequence(x, rng.integers(1, x.shape[0] + 1, size=batch),
                                           enforce_sorted=False) if i % 2 else x
        hx = rng.standard_normal((4, batch, 9))
        (output, h_n), backward = gru.vjp(source, hx)
        out = output.data if i % 2 else output
        g_out, g_h = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
        jobs.append((source, hx, g_out, g_h, out, h_n, backward(g_out, g_h)))
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def work(i):
        source, hx, g_out, g_h = jobs[i][:4]
        try:
            barrier.wait()
            for _ in range(10):
                (output, h_n), backward = gru.vjp(source, hx)
                out = output.data if isinstance(output, cgru.PackedSequence) else output
                results[i] = (out, h_n, backward(g_out, g_h))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (job, got) in enumerate(zip(jobs, results)):
        np.testing.assert_array_equal(got[0], job[4])
        np.testing.assert_array_equal(got[1], job[5])
        assert_grads_close(got[2], job[6], 0, f"thread {i}")


# -- (g) thread counts --------------------------------------------------------------------------

@pytest.mark.parametrize("batch,hidden,bidirectional", [(1, 40, False), (1, 17, True),
                                                        (9, 33, True), (16, 20, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_agree(rng, batch, hidden, bidirectional, dtype):
    gru = cgru.GRU(6, hidden, 2, bidirectional=bidirectional, dtype=dtype, seed=0)
    x = rng.standard_normal((7, batch, 6)).astype(dtype)
    lengths = rng.integers(1, 8, size=batch)
    packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    results = {}
    for n in (1, 2):
        for name, source in (("dense", x), ("packed", packed)):
            with cgru.use_threads(n):
                (output, h_n), backward = gru.vjp(source)
                out = output.data if name == "packed" else output
                up = np.random.default_rng(1)
                g_out = up.standard_normal(out.shape).astype(dtype)
                g_h = up.standard_normal(h_n.shape).astype(dtype)
                results[n, name] = backward(g_out, g_h)
    previous = cgru.get_num_threads()
    try:                                   # the process-wide setting too
        cgru.set_num_threads(2)
        (output, h_n), backward = gru.vjp(x)
        up = np.random.default_rng(1)
        g_out = up.standard_normal(output.shape).astype(dtype)
        g_h = up.standard_normal(h_n.shape).astype(dtype)
        results["set2", "dense"] = backward(g_out, g_h)
    finally:
        cgru.set_num_threads(None)
    assert cgru.get_num_threads() == previous
    tol = GRAD_TOLERANCE[np.dtype(dtype)]
    for name in ("dense", "packed"):
        assert_grads_close(results[2, name], results[1, name], tol, f"{name} 1 vs 2 threads")
    assert_grads_close(results["set2", "dense"], results[1, "dense"], tol, "set_num_threads(2)")
