"""The NumPy backward reference (tests/reference_grad.py) is itself right: against central
finite differences of tests/reference.py's forward pass (no torch needed) and against PyTorch's
autograd (live, skipped without torch)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import gru_reference
from reference_grad import (GRAD_TOLERANCE, assert_grads_close, gru_cell_reference_vjp,
                            gru_reference_vjp, torch_cell_vjp)

F64 = np.dtype(np.float64)
# Central differences with step 1e-6 in float64: truncation ~1e-12, rounding ~1e-10 * |loss|.
FD_STEP, FD_TOLERANCE = 1e-6, 1e-7


def _random_params(rng, input_size, hidden_size, num_layers, bias, bidirectional, scale=0.5):
    dirs = 2 if bidirectional else 1
    params = {}
    for layer in range(num_layers):
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            width = input_size if layer == 0 else dirs * hidden_size
            params[f"weight_ih{sfx}"] = rng.uniform(-scale, scale, (3 * hidden_size, width))
            params[f"weight_hh{sfx}"] = rng.uniform(-scale, scale, (3 * hidden_size, hidden_size))
            if bias:
                params[f"bias_ih{sfx}"] = rng.uniform(-scale, scale, 3 * hidden_size)
                params[f"bias_hh{sfx}"] = rng.uniform(-scale, scale, 3 * hidden_size)
    return params


def _problem(rng, input_size, hidden_size, num_layers, bias, bidirectional, seq_len, batch,
             variable_lengths):
    dirs = 2 if bidirectional else 1
    params = _random_params(rng, input_size, hidden_size, num_layers, bias, bidirectional)
    lengths = rng.integers(1, seq_len + 1, size=batch) if variable_lengths else \
        np.full(batch, seq_len)
    lengths[rng.integers(batch)] = seq_len          # the padded length is the longest one
    x = rng.standard_normal((seq_len, batch, input_size))
    h0 = rng.standard_normal((dirs * num_layers, batch, hidden_size))
    grad_output = rng.standard_normal((seq_len, batch, dirs * hidden_size))
    grad_h_n = rng.standard_normal((dirs * num_layers, batch, hidden_size))
    return params, lengths, x, h0, grad_output, grad_h_n


def _masked(grad_output, lengths):
    """grad_output with zeros past each length (what can reach the loss)."""
    keep = np.arange(grad_output.shape[0])[:, None] < np.asarray(lengths)[None, :]
    return grad_output * keep[:, :, None]


def _loss(output, h_n, grad_output, grad_h_n):
    return float(np.sum(output * grad_output) + np.sum(h_n * grad_h_n))


def _finite_differences(loss_of, arrays, coordinates=None, rng=None):
    """Central differences of loss_of(arrays) for each array of the dict (all coordinates, or
    `coordinates` random ones per array); returns {name: (flat indices, derivatives)}."""
    out = {}
    for name, value in arrays.items():
        flat = value.reshape(-1)
        idx = np.arange(flat.size)
        if coordinates is not None and flat.size > coordinates:
            idx = rng.choice(flat.size, size=coordinates, replace=False)
        derivs = []
        for i in idx:
            saved = flat[i]
            flat[i] = saved + FD_STEP
            up = loss_of(arrays)
            flat[i] = saved - FD_STEP
            down = loss_of(arrays)
            flat[i] = saved
            derivs.append((up - down) / (2 * FD_STEP))
        out[name] = (idx, np.array(derivs))
    return out


def _assert_matches_fd(grads, fd, what):
    scale = {k: max(1.0, float(np.max(np.abs(grads[k])))) for k in fd}
    errors = {k: float(np.max(np.abs(grads[k].reshape(-1)[idx] - d), initial=0)) / scale[k]
              for k, (idx, d) in fd.items()}
    bad = {k: e for k, e in errors.items() if not e <= FD_TOLERANCE}
    assert not bad, f"{what}: finite-difference errors above {FD_TOLERANCE:g}: {bad}"


# -- the reference's forward half is tests/reference.py's forward ------------------------------

@pytest.mark.parametrize("num_layers,bias,bidirectional",
                         list(itertools.product([1, 2, 3], [True, False], [False, True])))
def test_forward_equals_reference_forward(rng, num_layers, bias, bidirectional):
    params, lengths, x, h0, _, _ = _problem(rng, 3, 4, num_layers, bias, bidirectional, 5, 4,
                                            variable_lengths=True)
    output, h_n, _ = gru_reference_vjp(params, x, h0, num_layers, bidirectional, lengths)
    ref_out, ref_h = gru_reference(params, x, h0, num_layers, bidirectional, lengths)
    np.testing.assert_allclose(output, ref_out, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_n, ref_h, rtol=0, atol=1e-14)


# -- finite differences of tests/reference.py, no torch -----------------------------------------

FD_CONFIGS = [
    # input_size, hidden_size, num_layers, bias, bidirectional, seq_len, batch, variable lengths
    (2, 3, 1, True, False, 4, 2, False),
    (3, 2, 2, False, False, 3, 3, True),
    (2, 3, 1, True, True, 4, 3, True),
    (2, 2, 3, True, True, 3, 2, True),
    (1, 1, 2, True, True, 2, 1, False),
]


@pytest.mark.parametrize("config", FD_CONFIGS)
def test_matches_finite_differences_of_reference(rng, config):
    isz, hsz, layers, bias, bi, seq_len, batch, variable = config
    params, lengths, x, h0, g_out, g_h = _problem(rng, isz, hsz, layers, bias, bi, seq_len,
                                                  batch, variable)
    _, _, grads = gru_reference_vjp(params, x, h0, layers, bi, lengths, g_out, g_h)

    def loss_of(arrays):
        p = {k: v for k, v in arrays.items() if k not in ("input", "hx")}
        out, h_n = gru_reference(p, arrays["input"], arrays["hx"], layers, bi, lengths)
        return _loss(out, h_n, g_out, g_h)

    arrays = {"input": x.copy(), "hx": h0.copy(), **{k: v.copy() for k, v in params.items()}}
    assert list(grads) == list(arrays)
    _assert_matches_fd(grads, _finite_differences(loss_of, arrays), str(config))


def test_input_gradient_is_zero_past_lengths_and_grad_output_there_is_ignored(rng):
    params, lengths, x, h0, g_out, g_h = _problem(rng, 3, 4, 2, True, True, 6, 5, True)
    lengths[:] = [6, 1, 3, 6, 2]
    _, _, grads = gru_reference_vjp(params, x, h0, 2, True, lengths, g_out, g_h)
    _, _, masked = gru_reference_vjp(params, x, h0, 2, True, lengths, _masked(g_out, lengths),
                                     g_h)
    for k in grads:
        np.testing.assert_array_equal(grads[k], masked[k])
    past = np.arange(6)[:, None] >= lengths[None, :]
    assert np.all(grads["input"][past] == 0) and np.any(grads["input"][~past] != 0)


def test_none_upstream_gradients_are_zeros(rng):
    params, lengths, x, h0, g_out, g_h = _problem(rng, 2, 3, 2, True, True, 4, 2, True)
    for a, b in [(None, g_h), (g_out, None), (None, None)]:
        _, _, got = gru_reference_vjp(params, x, h0, 2, True, lengths, a, b)
        _, _, want = gru_reference_vjp(params, x, h0, 2, True, lengths,
                                       np.zeros_like(g_out) if a is None else a,
                                       np.zeros_like(g_h) if b is None else b)
        assert_grads_close(got, want, 0)
    _, _, zero = gru_reference_vjp(params, x, None, 2, True, lengths)
    assert all(not np.any(v) for v in zero.values())


def _dropout_masks(rng, layers, seq_len, batch, width, p=0.5):
    return [(rng.random((seq_len, batch, width)) >= p) / (1 - p) for _ in range(layers - 1)]


def _masked_forward(params, x, h0, layers, bidirectional, lengths, masks):
    """Independent forward with dropout: one tests/reference.py layer at a time."""
    dirs = 2 if bidirectional else 1
    layer_input, h_n = x, []
    for layer in range(layers):
        p = {k.replace(f"_l{layer}", "_l0"): v for k, v in params.items()
             if f"_l{layer}" in k}
        out, h = gru_reference(p, layer_input, h0[layer * dirs:(layer + 1) * dirs], 1,
                               bidirectional, lengths)
        h_n.append(h)
        layer_input = out * masks[layer] if layer < layers - 1 else out
    return layer_input, np.concatenate(h_n)


def test_dropout_masks_match_finite_differences(rng):
    layers, bi, seq_len, batch, hsz = 3, True, 3, 2, 2
    params, lengths, x, h0, g_out, g_h = _problem(rng, 2, hsz, layers, True, bi, seq_len, batch,
                                                  True)
    masks = _dropout_masks(rng, layers, seq_len, batch, 2 * hsz)
    output, h_n, grads = gru_reference_vjp(params, x, h0, layers, bi, lengths, g_out, g_h,
                                           dropout_masks=masks)
    ref_out, ref_h = _masked_forward(params, x, h0, layers, bi, lengths, masks)
    np.testing.assert_allclose(output, ref_out, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_n, ref_h, rtol=0, atol=1e-14)

    def loss_of(arrays):
        p = {k: v for k, v in arrays.items() if k not in ("input", "hx")}
        out, h = _masked_forward(p, arrays["input"], arrays["hx"], layers, bi, lengths, masks)
        return _loss(out, h, g_out, g_h)

    arrays = {"input": x.copy(), "hx": h0.copy(), **{k: v.copy() for k, v in params.items()}}
    _assert_matches_fd(grads, _finite_differences(loss_of, arrays), "dropout")


def test_all_ones_masks_are_no_dropout(rng):
    params, lengths, x, h0, g_out, g_h = _problem(rng, 2, 3, 3, True, False, 4, 2, True)
    ones = [np.ones((4, 2, 3))] * 2
    _, _, with_ones = gru_reference_vjp(params, x, h0, 3, False, lengths, g_out, g_h, ones)
    _, _, without = gru_reference_vjp(params, x, h0, 3, False, lengths, g_out, g_h)
    assert_grads_close(with_ones, without, 0)


@settings(max_examples=25, deadline=None)
@given(isz=st.integers(1, 3), hsz=st.integers(1, 3), layers=st.integers(1, 2),
       bias=st.booleans(), bi=st.booleans(),
       lengths=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       seed=st.integers(0, 2**31 - 1))
def test_directional_derivative_property(isz, hsz, layers, bias, bi, lengths, seed):
    """<grads, v> equals the central difference of the loss along a random direction v."""
    rng = np.random.default_rng(seed)
    seq_len, batch = max(lengths), len(lengths)
    dirs = 2 if bi else 1
    params = _random_params(rng, isz, hsz, layers, bias, bi)
    x = rng.standard_normal((seq_len, batch, isz))
    h0 = rng.standard_normal((dirs * layers, batch, hsz))
    g_out = rng.standard_normal((seq_len, batch, dirs * hsz))
    g_h = rng.standard_normal((dirs * layers, batch, hsz))
    _, _, grads = gru_reference_vjp(params, x, h0, layers, bi, lengths, g_out, g_h)
    base = {"input": x, "hx": h0, **params}
    direction = {k: rng.standard_normal(v.shape) for k, v in base.items()}

    def loss_at(step):
        moved = {k: v + step * direction[k] for k, v in base.items()}
        p = {k: v for k, v in moved.items() if k not in ("input", "hx")}
        out, h_n = gru_reference(p, moved["input"], moved["hx"], layers, bi, lengths)
        return _loss(out, h_n, g_out, g_h)

    fd = (loss_at(FD_STEP) - loss_at(-FD_STEP)) / (2 * FD_STEP)
    analytic = sum(float(np.sum(grads[k] * direction[k])) for k in base)
    assert abs(fd - analytic) <= FD_TOLERANCE * max(1.0, abs(analytic))


def test_cell_matches_finite_differences(rng):
    params = {k[:-3]: v for k, v in _random_params(rng, 3, 4, 1, True, False).items()}
    x, h0, g = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal(
        (2, 4))
    h1, grads = gru_cell_reference_vjp(params, x, h0, g)
    assert list(grads) == ["input", "hx", "weight_ih", "weight_hh", "bias_ih", "bias_hh"]

    def loss_of(arrays):
        p = {f"{k}_l0": v for k, v in arrays.items() if k not in ("input", "hx")}
        _, h_n = gru_reference(p, arrays["input"][None], arrays["hx"][None], 1, False)
        return float(np.sum(h_n[0] * g))

    arrays = {"input": x.copy(), "hx": h0.copy(), **{k: v.copy() for k, v in params.items()}}
    _assert_matches_fd(grads, _finite_differences(loss_of, arrays), "cell")


# -- PyTorch autograd, live ---------------------------------------------------------------------

def _torch_padded_vjp(torch, params, x, h0, layers, bi, lengths, g_out, g_h, masks=None):
    """torch autograd on padded time-major x; with masks, single-layer torch GRUs composed
    with the masks between them (what training-mode dropout does, with a known mask)."""
    from torch.nn.utils import rnn
    seq_len, batch, isz = x.shape
    hsz = params["weight_hh_l0"].shape[1]
    dirs = 2 if bi else 1
    bias = "bias_ih_l0" in params
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0, requires_grad=True)
    lengths_t = torch.as_tensor(np.asarray(lengths))
    layer_input, h_n, named = xt, [], {}
    for layer in range(layers):
        width = isz if layer == 0 else dirs * hsz
        mod = torch.nn.GRU(width, hsz, 1, bias=bias, bidirectional=bi).double()
        mod.load_state_dict({k: torch.tensor(params[k.replace("_l0", f"_l{layer}")])
                             for k in mod.state_dict()})
        named.update({k.replace("_l0", f"_l{layer}"): v for k, v in mod.named_parameters()})
        packed = rnn.pack_padded_sequence(layer_input, lengths_t, enforce_sorted=False)
        out, h = mod(packed, ht[layer * dirs:(layer + 1) * dirs])
        out, _ = rnn.pad_packed_sequence(out, total_length=seq_len)
        h_n.append(h)
        if masks is not None and layer < layers - 1:
            out = out * torch.tensor(masks[layer])
        layer_input = out
    h_n = torch.cat(h_n)
    loss = (layer_input * torch.tensor(g_out)).sum() + (h_n * torch.tensor(g_h)).sum()
    names = list(params)
    values = torch.autograd.grad(loss, [xt, ht] + [named[n] for n in names])
    grads = dict(zip(["input", "hx"] + names, (v.numpy() for v in values)))
    return layer_input.detach().numpy(), h_n.detach().numpy(), grads


def _torch_stacked_vjp(torch, params, x, h0, layers, bi, lengths, g_out, g_h):
    """torch autograd through one multi-layer torch.nn.GRU (no masks)."""
    from torch.nn.utils import rnn
    isz, hsz = x.shape[2], params["weight_hh_l0"].shape[1]
    mod = torch.nn.GRU(isz, hsz, layers, bias="bias_ih_l0" in params,
                       bidirectional=bi).double()
    mod.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(h0, requires_grad=True)
    packed = rnn.pack_padded_sequence(xt, torch.as_tensor(np.asarray(lengths)),
                                      enforce_sorted=False)
    out, h_n = mod(packed, ht)
    out, _ = rnn.pad_packed_sequence(out, total_length=x.shape[0])
    loss = (out * torch.tensor(g_out)).sum() + (h_n * torch.tensor(g_h)).sum()
    names = list(mod.state_dict())
    named = dict(mod.named_parameters())
    values = torch.autograd.grad(loss, [xt, ht] + [named[n] for n in names])
    return dict(zip(["input", "hx"] + names, (v.numpy() for v in values)))


@pytest.mark.parametrize("num_layers,bias,bidirectional,variable,with_hx",
                         list(itertools.product([1, 2, 3], [True, False], [False, True],
                                                [False, True], [False, True])))
def test_matches_torch_autograd(torch, rng, num_layers, bias, bidirectional, variable,
                                with_hx):
    isz, hsz = int(rng.integers(1, 6)), int(rng.integers(1, 7))
    seq_len, batch = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    params, lengths, x, h0, g_out, g_h = _problem(rng, isz, hsz, num_layers, bias,
                                                  bidirectional, seq_len, batch, variable)
    if not with_hx:
        h0 = np.zeros_like(h0)
    _, _, grads = gru_reference_vjp(params, x, h0 if with_hx else None, num_layers,
                                    bidirectional, lengths, g_out, g_h)
    want = _torch_stacked_vjp(torch, params, x, h0, num_layers, bidirectional, lengths,
                              _masked(g_out, lengths), g_h)
    assert_grads_close(grads, want, GRAD_TOLERANCE[F64], "reference vs torch")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_masks_match_torch_autograd(torch, rng, bidirectional):
    layers, seq_len, batch, hsz = 3, 5, 3, 4
    dirs = 2 if bidirectional else 1
    params, lengths, x, h0, g_out, g_h = _problem(rng, 3, hsz, layers, True, bidirectional,
                                                  seq_len, batch, True)
    masks = _dropout_masks(rng, layers, seq_len, batch, dirs * hsz)
    output, h_n, grads = gru_reference_vjp(params, x, h0, layers, bidirectional, lengths,
                                           g_out, g_h, dropout_masks=masks)
    t_out, t_h, want = _torch_padded_vjp(torch, params, x, h0, layers, bidirectional, lengths,
                                         _masked(g_out, lengths), g_h, masks)
    np.testing.assert_allclose(output, t_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, t_h, rtol=0, atol=1e-12)
    assert_grads_close(grads, want, GRAD_TOLERANCE[F64], "dropout reference vs torch")


@pytest.mark.parametrize("bias,with_hx", list(itertools.product([True, False], [True, False])))
def test_cell_matches_torch_autograd(torch, rng, bias, with_hx):
    cell = torch.nn.GRUCell(5, 7, bias=bias).double()
    params = {k: v.detach().numpy() for k, v in cell.state_dict().items()}
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 7))
    h0 = rng.standard_normal((3, 7)) if with_hx else None
    h1, grads = gru_cell_reference_vjp(params, x, h0, g)
    t_h1, want = torch_cell_vjp(torch, cell, x, h0, g)
    np.testing.assert_allclose(h1, t_h1, rtol=0, atol=1e-12)
    assert_grads_close(grads, want, GRAD_TOLERANCE[F64], "cell reference vs torch")
