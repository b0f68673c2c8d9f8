"""Parity with PyTorch 2.13 through committed golden fixtures (no torch needed)."""
import numpy as np
import pytest

import cgru
from conftest import assert_close, fixture_names, load_fixture


def _module(config, params):
    gru = cgru.GRU(config["input_size"], config["hidden_size"], config["num_layers"],
                   bias=config["bias"], batch_first=config["batch_first"],
                   bidirectional=config["bidirectional"], dtype=np.dtype(config["dtype"]))
    gru.load_state_dict(params)
    return gru


@pytest.mark.parametrize("name", fixture_names("dense"))
def test_dense_matches_torch(name):
    config, params, arrays = load_fixture(name)
    gru = _module(config, params)
    output, h_n = gru(arrays["x"], arrays.get("hx"))
    assert output.dtype == np.dtype(config["dtype"])
    assert_close(output, arrays["output"], output.dtype)
    assert_close(h_n, arrays["h_n"], output.dtype)


@pytest.mark.parametrize("name", fixture_names("packed"))
def test_packed_matches_torch(name):
    config, params, arrays = load_fixture(name)
    gru = _module(config, params)
    packed = cgru.pack_padded_sequence(arrays["padded"], config["lengths"],
                                       batch_first=config["batch_first"],
                                       enforce_sorted=config["enforce_sorted"])
    np.testing.assert_array_equal(packed.data, arrays["data"])
    np.testing.assert_array_equal(packed.batch_sizes, arrays["batch_sizes"])
    if config["enforce_sorted"]:
        assert packed.sorted_indices is None and packed.unsorted_indices is None
    else:
        np.testing.assert_array_equal(packed.sorted_indices, arrays["sorted_indices"])
        np.testing.assert_array_equal(packed.unsorted_indices, arrays["unsorted_indices"])
    output, h_n = gru(packed, arrays.get("hx"))
    assert isinstance(output, cgru.PackedSequence)
    np.testing.assert_array_equal(output.batch_sizes, packed.batch_sizes)
    assert_close(output.data, arrays["output_data"], np.float32)
    assert_close(h_n, arrays["h_n"], np.float32)


def test_packed_equal_lengths_equal_unpacked():
    config, params, arrays = load_fixture("packed_equal_lengths")
    gru = _module(config, params)
    packed_out, packed_h = gru(cgru.pack_padded_sequence(arrays["padded"], config["lengths"]),
                               arrays["hx"])
    dense_out, dense_h = gru(arrays["padded"], arrays["hx"])
    padded, _ = cgru.pad_packed_sequence(packed_out)
    np.testing.assert_array_equal(padded, dense_out)
    np.testing.assert_array_equal(packed_h, dense_h)


def test_utilities_match_torch():
    config, _, arrays = load_fixture("utilities")
    seqs = [arrays[f"seq{i}"] for i in range(len(config["lengths"]))]
    for bf in (False, True):
        for side in ("right", "left"):
            padded = cgru.pad_sequence(seqs, batch_first=bf, padding_value=-1.5,
                                       padding_side=side)
            np.testing.assert_array_equal(padded, arrays[f"pad_sequence/bf{int(bf)}/{side}"])
    packed = cgru.pack_sequence(seqs, enforce_sorted=False)
    for field in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
        np.testing.assert_array_equal(getattr(packed, field), arrays[f"pack_sequence/{field}"])
    for bf in (False, True):
        padded, lengths = cgru.pad_packed_sequence(packed, batch_first=bf, padding_value=7.0,
                                                   total_length=8)
        np.testing.assert_array_equal(padded, arrays[f"pad_packed_sequence/bf{int(bf)}/padded"])
        np.testing.assert_array_equal(lengths, arrays[f"pad_packed_sequence/bf{int(bf)}/lengths"])
        assert lengths.dtype == np.int64
    packed_sorted = cgru.pack_sequence(sorted(seqs, key=len, reverse=True))
    np.testing.assert_array_equal(packed_sorted.data, arrays["pack_sequence_sorted/data"])
    np.testing.assert_array_equal(packed_sorted.batch_sizes,
                                  arrays["pack_sequence_sorted/batch_sizes"])
    assert packed_sorted.sorted_indices is None
