"""Property tests against the NumPy reference GRU over shapes, lengths and options."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import cgru
from conftest import assert_close
from reference import gru_reference


@st.composite
def configurations(draw):
    return dict(
        input_size=draw(st.integers(1, 20)),
        hidden_size=draw(st.integers(1, 40)),
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
    )


@settings(max_examples=60, deadline=None)
@given(config=configurations(), seq_len=st.integers(1, 9), batch=st.integers(1, 20),
       with_hx=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_dense_matches_reference(config, seq_len, batch, with_hx, seed):
    rng = np.random.default_rng(seed)
    gru = cgru.GRU(**config, seed=seed)
    d = 2 if config["bidirectional"] else 1
    x = rng.standard_normal((seq_len, batch, config["input_size"]))
    hx = rng.standard_normal((d * config["num_layers"], batch, config["hidden_size"]))
    output, h_n = gru(x, hx if with_hx else None)
    ref_out, ref_h = gru_reference(gru.state_dict(), x.astype(config["dtype"]),
                                   hx.astype(config["dtype"]) if with_hx else 0 * hx,
                                   config["num_layers"], config["bidirectional"])
    assert output.shape == (seq_len, batch, d * config["hidden_size"])
    assert_close(output, ref_out, config["dtype"])
    assert_close(h_n, ref_h, config["dtype"])


@settings(max_examples=60, deadline=None)
@given(config=configurations(), lengths=st.lists(st.integers(1, 10), min_size=1, max_size=24),
       seed=st.integers(0, 2**31 - 1))
def test_packed_matches_reference(config, lengths, seed):
    rng = np.random.default_rng(seed)
    gru = cgru.GRU(**config, seed=seed)
    d = 2 if config["bidirectional"] else 1
    batch = len(lengths)
    x = rng.standard_normal((max(lengths), batch, config["input_size"])).astype(config["dtype"])
    hx = rng.standard_normal((d * config["num_layers"], batch,
                              config["hidden_size"])).astype(config["dtype"])
    packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    output, h_n = gru(packed, hx)
    padded, out_lengths = cgru.pad_packed_sequence(output)
    ref_out, ref_h = gru_reference(gru.state_dict(), x, hx, config["num_layers"],
                                   config["bidirectional"], lengths=lengths)
    np.testing.assert_array_equal(out_lengths, lengths)
    assert_close(padded, ref_out, config["dtype"])
    assert_close(h_n, ref_h, config["dtype"])
