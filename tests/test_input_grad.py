"""backward(..., input_grad=False): no gradient of the input, every other gradient as before."""
import numpy as np
import pytest

import cgru


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layers,bidirectional,packed", [(1, False, False), (2, True, False),
                                                         (3, False, True), (2, True, True)])
def test_gru_without_input_gradient(dtype, layers, bidirectional, packed, rng):
    gru = cgru.GRU(5, 7, num_layers=layers, bidirectional=bidirectional, dtype=dtype, seed=1)
    x = rng.standard_normal((6, 4, 5)).astype(dtype)
    if packed:
        x = cgru.pack_padded_sequence(x, [6, 3, 5, 1], enforce_sorted=False)
    (out, h_n), backward = gru.vjp(x)
    g_out = rng.standard_normal((out.data if packed else out).shape).astype(dtype)
    g_h = rng.standard_normal(h_n.shape).astype(dtype)
    full = backward(g_out, g_h)
    partial = backward(g_out, g_h, input_grad=False)
    assert "input" in full and "input" not in partial
    assert list(partial) == [k for k in full if k != "input"]
    for name, value in partial.items():
        np.testing.assert_array_equal(value, full[name], err_msg=name)


def test_cell_without_input_gradient(rng):
    cell = cgru.GRUCell(3, 4, seed=0)
    h1, backward = cell.vjp(rng.standard_normal((2, 3)).astype(np.float32))
    g = np.ones_like(h1)
    full, partial = backward(g), backward(g, input_grad=False)
    assert sorted(full) == sorted(list(partial) + ["input"])
    for name, value in partial.items():
        np.testing.assert_array_equal(value, full[name])


def test_vjp_tape_does_not_see_later_edits_of_the_input(rng):
    gru = cgru.GRU(3, 4, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    (out, _), backward = gru.vjp(x)
    expected = backward(np.ones_like(out))
    x[:] = 100.0            # the caller reuses its buffer
    for name, value in backward(np.ones_like(out)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_named_parameters_are_the_read_only_parameters():
    gru = cgru.GRU(3, 4, num_layers=2, seed=0)
    named = list(gru.named_parameters())
    assert [name for name, _ in named] == list(gru.state_dict())
    for name, value in named:
        assert value is gru.get_parameter(name) and not value.flags.writeable
    assert [v is p for v, p in zip(gru.parameters(), (v for _, v in named))] == [True] * 8
    with pytest.raises(AttributeError, match="no parameter 'weight_ih_l7'"):
        gru.get_parameter("weight_ih_l7")
