"""The kernel's sigmoid and tanh, read off directly: weights that make h' equal one activation
of the input, over a dense grid, against float64 NumPy."""
import numpy as np
import pytest

import cgru

# Largest absolute error allowed (the kernel's own comment promises these bounds).
BOUND = {np.float32: 2.5e-7, np.float64: 5e-16}
HIDDEN = 64


def _activation_gru(dtype, gate):
    """A one-layer GRU with I = H whose output is sigmoid(x) (gate 'z', h_0 = 1) or tanh(x)
    (gate 'n', z forced to 0)."""
    h = HIDDEN
    w_ih = np.zeros((3 * h, h))
    b_ih = np.zeros(3 * h)
    if gate == "z":
        w_ih[h:2 * h] = np.eye(h)      # z = sigmoid(x), n = tanh(0) = 0: h' = z * h_0
    else:
        w_ih[2 * h:] = np.eye(h)       # n = tanh(x)
        b_ih[h:2 * h] = -1e4           # z = 0: h' = n
    gru = cgru.GRU(h, h, dtype=dtype)
    gru.load_state_dict({"weight_ih_l0": w_ih, "weight_hh_l0": np.zeros((3 * h, h)),
                         "bias_ih_l0": b_ih, "bias_hh_l0": np.zeros(3 * h)})
    return gru


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gate", ["z", "n"])
def test_sigmoid_and_tanh_accuracy(dtype, gate):
    # 2^16 points on [-30, 30]: both tails, and every table entry and polynomial range
    x = np.linspace(-30, 30, 1 << 16).astype(dtype).reshape(1, -1, HIDDEN)
    gru = _activation_gru(dtype, gate)
    h0 = np.full((1, x.shape[1], HIDDEN), 1.0 if gate == "z" else 0.0, dtype=dtype)
    out, _ = gru(x, h0)
    exact = x.astype(np.float64)
    want = 1 / (1 + np.exp(-exact)) if gate == "z" else np.tanh(exact)
    error = np.abs(out.astype(np.float64) - want)
    assert error.max() <= BOUND[dtype], f"max error {error.max():.3g} at x = " \
                                        f"{exact.ravel()[error.argmax()]:.6g}"
    # the functions never leave their range; in float32 both saturate to exactly 1 at 30
    flat = out.ravel()
    assert flat.min() >= (0 if gate == "z" else -1) and flat.max() <= 1
    if dtype == np.float32:
        assert flat[-1] == 1
