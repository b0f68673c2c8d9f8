"""Live parity with PyTorch on seeded random configurations (skipped without torch)."""
import itertools

import numpy as np
import pytest

import cgru
from conftest import assert_close


def _pair(torch, rng, input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
          dtype):
    gru = cgru.GRU(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                   bidirectional=bidirectional, dtype=dtype, seed=int(rng.integers(1 << 30)))
    ref = torch.nn.GRU(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                       bidirectional=bidirectional).to(getattr(torch, np.dtype(dtype).name))
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    return gru, ref.eval()


CONFIGS = list(itertools.product([1, 2, 3], [True, False], [False, True], [False, True],
                                 [np.float32, np.float64]))


@pytest.mark.parametrize("num_layers,bias,batch_first,bidirectional,dtype", CONFIGS)
def test_random_configurations(torch, rng, num_layers, bias, batch_first, bidirectional, dtype):
    for _ in range(3):
        input_size, hidden_size = (int(v) for v in rng.integers(1, 40, size=2))
        seq_len, batch = int(rng.integers(1, 12)), int(rng.integers(1, 10))
        gru, ref = _pair(torch, rng, input_size, hidden_size, num_layers, bias, batch_first,
                         bidirectional, dtype)
        d = 2 if bidirectional else 1
        shape = (batch, seq_len, input_size) if batch_first else (seq_len, batch, input_size)
        x = rng.standard_normal(shape).astype(dtype)
        hx = rng.standard_normal((d * num_layers, batch, hidden_size)).astype(dtype)
        for h0 in (None, hx):
            output, h_n = gru(x, h0)
            with torch.no_grad():
                t_out, t_h = ref(torch.from_numpy(x), None if h0 is None else torch.from_numpy(h0))
            assert_close(output, t_out.numpy(), dtype)
            assert_close(h_n, t_h.numpy(), dtype)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched(torch, rng, bidirectional):
    gru, ref = _pair(torch, rng, 6, 9, 2, True, False, bidirectional, np.float32)
    x = rng.standard_normal((7, 6)).astype(np.float32)
    output, h_n = gru(x)
    with torch.no_grad():
        t_out, t_h = ref(torch.from_numpy(x))
    assert output.shape == tuple(t_out.shape) and h_n.shape == tuple(t_h.shape)
    assert_close(output, t_out.numpy(), np.float32)
    assert_close(h_n, t_h.numpy(), np.float32)


def test_large_hidden(torch, rng):
    gru, ref = _pair(torch, rng, 64, 300, 1, True, False, True, np.float32)
    x = rng.standard_normal((20, 40, 64)).astype(np.float32)
    output, h_n = gru(x)
    with torch.no_grad():
        t_out, t_h = ref(torch.from_numpy(x))
    assert_close(output, t_out.numpy(), np.float32)
    assert_close(h_n, t_h.numpy(), np.float32)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed(torch, rng, enforce_sorted, bidirectional):
    from torch.nn.utils import rnn
    for _ in range(4):
        batch = int(rng.integers(1, 12))
        lengths = rng.integers(1, 15, size=batch)
        if enforce_sorted:
            lengths = np.sort(lengths)[::-1].copy()
        gru, ref = _pair(torch, rng, 5, 11, 2, True, False, bidirectional, np.float32)
        padded = rng.standard_normal((int(lengths.max()), batch, 5)).astype(np.float32)
        hx = rng.standard_normal((4 if bidirectional else 2, batch, 11)).astype(np.float32)
        packed = cgru.pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)
        t_packed = rnn.pack_padded_sequence(torch.from_numpy(padded), torch.from_numpy(lengths),
                                            enforce_sorted=enforce_sorted)
        np.testing.assert_array_equal(packed.data, t_packed.data.numpy())
        output, h_n = gru(packed, hx)
        with torch.no_grad():
            t_out, t_h = ref(t_packed, torch.from_numpy(hx))
        assert_close(output.data, t_out.data.numpy(), np.float32)
        assert_close(h_n, t_h.numpy(), np.float32)
        padded_out, out_lengths = cgru.pad_packed_sequence(output, padding_value=-3.0)
        t_padded, t_lengths = rnn.pad_packed_sequence(t_out, padding_value=-3.0)
        assert_close(padded_out, t_padded.numpy(), np.float32)
        np.testing.assert_array_equal(out_lengths, t_lengths.numpy())


def test_utilities_round_trips(torch, rng):
    from torch.nn.utils import rnn
    seqs = [rng.standard_normal((int(n), 3, 2)) for n in rng.integers(0, 7, size=6)]
    t_seqs = [torch.from_numpy(s) for s in seqs]
    for bf in (False, True):
        for side in ("left", "right"):
            np.testing.assert_array_equal(
                cgru.pad_sequence(seqs, bf, 2.5, side),
                rnn.pad_sequence(t_seqs, bf, 2.5, side).numpy())
    nonempty = [s for s in seqs if len(s)] or [rng.standard_normal((2, 3, 2))]
    t_nonempty = [torch.from_numpy(s) for s in nonempty]
    packed = cgru.pack_sequence(nonempty, enforce_sorted=False)
    t_packed = rnn.pack_sequence(t_nonempty, enforce_sorted=False)
    for field in packed._fields:
        np.testing.assert_array_equal(getattr(packed, field), getattr(t_packed, field).numpy())
    for ours, theirs in zip(cgru.unpack_sequence(packed), rnn.unpack_sequence(t_packed)):
        np.testing.assert_array_equal(ours, theirs.numpy())
    padded = cgru.pad_sequence(nonempty, batch_first=True)
    lengths = [len(s) for s in nonempty]
    for ours, theirs in zip(cgru.unpad_sequence(padded, lengths, batch_first=True),
                            rnn.unpad_sequence(torch.from_numpy(padded), torch.tensor(lengths),
                                               batch_first=True)):
        np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_gates_inf_and_nan_as_torch(torch, rng, dtype):
    """Inputs far outside exp's range, +-inf and NaN: the gates' range reduction and reciprocal
    saturate as torch's do, and NaN propagates to the same outputs. H = 20 covers a whole
    16-unit block and a partial one."""
    gru, ref = _pair(torch, rng, 8, 20, 1, True, False, False, dtype)
    x = (rng.standard_normal((6, 3, 8)) * 1e3).astype(dtype)
    x[2, 1, 3] = np.nan
    x[1, 2, :] = np.inf
    x[3, 0, :] = -np.inf
    output, h_n = gru(x)
    with torch.no_grad():
        t_out, t_h = ref(torch.from_numpy(x))
    t_out = t_out.numpy()
    np.testing.assert_array_equal(np.isnan(output), np.isnan(t_out))
    assert np.isnan(output).any() and not np.isnan(output).all()
    assert_close(np.nan_to_num(output), np.nan_to_num(t_out), dtype)
