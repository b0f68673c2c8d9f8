"""Training-mode dropout: where PyTorch applies it, with the right statistics."""
import numpy as np
import pytest

import cgru


def _identity_like_layer1(gru):
    """Make layer 1 pass its input through in a measurable way: output = tanh(W_in x)."""
    h = gru.hidden_size
    w = np.zeros((3 * h, h))
    w[2 * h:] = np.eye(h)            # n = tanh(x), z = sigmoid(0) = 0.5 ... set z to -inf
    b = np.zeros(3 * h)
    b[h:2 * h] = -1e4                # z = 0: h' = n = tanh(x)
    gru.load_state_dict({"weight_ih_l1": w, "weight_hh_l1": np.zeros((3 * h, h)),
                         "bias_ih_l1": b, "bias_hh_l1": np.zeros(3 * h)}, strict=False)


def test_eval_mode_never_drops(rng):
    gru = cgru.GRU(4, 8, 2, dropout=0.9, seed=0)
    x = rng.standard_normal((5, 3, 4))
    np.testing.assert_array_equal(gru(x)[0], gru(x)[0])


def test_dropout_statistics_and_scaling():
    p = 0.3
    gru = cgru.GRU(2, 64, 2, dropout=p, dtype=np.float64, seed=0)
    _identity_like_layer1(gru)
    x = np.ones((50, 40, 2))
    clean = np.arctanh(gru(x)[0])                  # = layer-0 output, no dropout in eval
    layer0 = cgru.GRU(2, 64, 1, dtype=np.float64)
    layer0.load_state_dict({k: v for k, v in gru.state_dict().items() if k.endswith("l0")})
    np.testing.assert_allclose(clean, layer0(x)[0], atol=1e-9)
    gru.train()
    dropped = np.arctanh(gru(x)[0])
    zero = np.isclose(dropped, 0, atol=1e-12)
    assert abs(zero.mean() - p) < 0.01              # 128k elements: sd of the rate ~ 0.0013
    kept = ~zero
    np.testing.assert_allclose(dropped[kept], clean[kept] / (1 - p), rtol=1e-9)


def test_fresh_mask_each_call_and_seed_reproducible(rng):
    x = rng.standard_normal((6, 4, 3))
    a = cgru.GRU(3, 16, 3, dropout=0.5, seed=11).train()
    b = cgru.GRU(3, 16, 3, dropout=0.5, seed=11).train()
    first, second = a(x)[0], a(x)[0]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, b(x)[0])


def test_last_layer_is_not_dropped():
    gru = cgru.GRU(3, 16, 1, dtype=np.float64, seed=0)
    with pytest.warns(UserWarning):
        warned = cgru.GRU(3, 16, 1, dropout=0.9, dtype=np.float64, seed=0)
    warned.train()
    x = np.ones((4, 2, 3))
    np.testing.assert_array_equal(warned(x)[0], gru(x)[0])


def test_dropout_one_zeroes_inner_layers():
    gru = cgru.GRU(3, 5, 2, dropout=1.0, dtype=np.float64, seed=0).train()
    ref = cgru.GRU(3, 5, 1, dtype=np.float64)
    ref_state = {k.replace("_l1", "_l0"): v for k, v in gru.state_dict().items() if "_l1" in k}
    ref_state["weight_ih_l0"] = ref_state["weight_ih_l0"][:, :3] * 0
    ref.load_state_dict(ref_state)
    x = np.ones((4, 2, 3))
    np.testing.assert_allclose(gru(x)[0], ref(np.zeros_like(x))[0], atol=1e-15)


def test_dropout_with_packed_input(rng):
    gru = cgru.GRU(3, 8, 2, dropout=0.5, bidirectional=True, seed=3).train()
    packed = cgru.pack_sequence([rng.standard_normal((n, 3)) for n in (5, 3, 2)])
    output, h_n = gru(packed)
    assert output.data.shape == (10, 16) and h_n.shape == (4, 3, 8)
    assert np.isfinite(output.data).all()
