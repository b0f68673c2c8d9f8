"""PackedSequence utilities and packed GRU input: semantics and bad input."""
import numpy as np
import pytest

import cgru
from cgru import PackedSequence


def test_packed_sequence_fields_and_keywords():
    packed = PackedSequence(data=np.zeros((3, 2)), batch_sizes=np.array([2, 1]),
                            sorted_indices=np.array([1, 0]))
    assert packed._fields == ("data", "batch_sizes", "sorted_indices", "unsorted_indices")
    np.testing.assert_array_equal(packed.unsorted_indices, [1, 0])
    assert PackedSequence(np.zeros((1, 1)), np.array([1])).sorted_indices is None


def test_pack_pad_round_trip(rng):
    lengths = [4, 1, 3, 4]
    padded = rng.standard_normal((4, 4, 2))
    for i, n in enumerate(lengths):
        padded[n:, i] = 0
    for bf in (False, True):
        src = padded.transpose(1, 0, 2) if bf else padded
        packed = cgru.pack_padded_sequence(src, lengths, batch_first=bf, enforce_sorted=False)
        assert packed.batch_sizes.dtype == np.int64 and packed.sorted_indices.dtype == np.int64
        back, back_lengths = cgru.pad_packed_sequence(packed, batch_first=bf)
        np.testing.assert_array_equal(back, src)
        np.testing.assert_array_equal(back_lengths, lengths)
    seqs = cgru.unpack_sequence(cgru.pack_padded_sequence(padded, lengths, enforce_sorted=False))
    assert [len(s) for s in seqs] == lengths
    for s, u in zip(seqs, cgru.unpad_sequence(padded, lengths)):
        np.testing.assert_array_equal(s, u)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_large_pack_and_pad_against_plain_loops(rng, threads, batch_first, enforce_sorted):
    """Batches over 1 MB (copied in parallel), trailing dims, int and float rows: every packed
    row and every padded row where a plain per-sequence loop puts it."""
    lengths = rng.integers(1, 151, size=97)
    if enforce_sorted:
        lengths = np.sort(lengths)[::-1]
    padded = rng.standard_normal((150, 97, 5, 7))
    src = np.ascontiguousarray(padded.transpose(1, 0, 2, 3)) if batch_first else padded
    order = np.argsort(-lengths, kind="stable")
    want = np.concatenate([padded[t, order[lengths[order] > t]] for t in range(lengths.max())])
    with cgru.use_threads(threads):
        packed = cgru.pack_padded_sequence(src, lengths, batch_first=batch_first,
                                           enforce_sorted=enforce_sorted)
        np.testing.assert_array_equal(packed.data, want)
        as_ints = packed._replace(data=(packed.data * 1000).astype(np.int32))
        for data, fill in ((packed, -2.5), (as_ints, 3)):
            back, back_lengths = cgru.pad_packed_sequence(data, batch_first=batch_first,
                                                          padding_value=fill, total_length=160)
            np.testing.assert_array_equal(back_lengths, lengths)
            for i, n in enumerate(lengths):
                sequence = back[i] if batch_first else back[:, i]
                expected = src[i, :n] if batch_first else src[:n, i]
                if data is as_ints:
                    expected = (expected * 1000).astype(np.int32)
                np.testing.assert_array_equal(sequence[:n], expected)
                assert np.all(sequence[n:] == fill) and sequence.shape[0] == 160


def test_total_length_pads_further():
    packed = cgru.pack_sequence([np.ones((3, 1)), np.ones((2, 1))])
    padded, lengths = cgru.pad_packed_sequence(packed, total_length=6, padding_value=-1)
    assert padded.shape == (6, 2, 1)
    assert np.all(padded[3:] == -1) and padded[2, 1, 0] == -1


def test_packed_gru_h_n_in_callers_order(rng):
    gru = cgru.GRU(2, 3, seed=0, dtype=np.float64)
    seqs = [rng.standard_normal((n, 2)) for n in (2, 5, 3)]
    _, h_n = gru(cgru.pack_sequence(seqs, enforce_sorted=False))
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(h_n[:, i], gru(s)[1], atol=1e-12)


def test_packed_gru_is_faster_path_semantically_same_as_each_sequence(rng):
    gru = cgru.GRU(2, 3, 2, bidirectional=True, seed=0, dtype=np.float64)
    seqs = [rng.standard_normal((n, 2)) for n in (4, 1, 6)]
    output, _ = gru(cgru.pack_sequence(seqs, enforce_sorted=False))
    for s, out in zip(seqs, cgru.unpack_sequence(output)):
        np.testing.assert_allclose(out, gru(s)[0], atol=1e-12)


@pytest.mark.parametrize("lengths,match", [
    ([0, 2], "positive"),
    ([-1, 2], "positive"),
    ([5, 2], "must not exceed the time axis"),
    ([2, 3], "sorted in decreasing order"),
    ([2], "batch_size"),
    ([[2, 1]], "1-D"),
])
def test_bad_lengths(lengths, match):
    with pytest.raises(ValueError, match=match):
        cgru.pack_padded_sequence(np.zeros((3, 2, 1)), lengths)


@pytest.mark.parametrize("lengths", [[2.0, 1.0], "21", None, 3])
def test_lengths_not_ints(lengths):
    with pytest.raises(TypeError):
        cgru.pack_padded_sequence(np.zeros((3, 2, 1)), lengths)


def test_bad_sequence_lists():
    with pytest.raises(ValueError, match="non-empty"):
        cgru.pack_sequence([])
    with pytest.raises(ValueError, match="non-empty"):
        cgru.pad_sequence([])
    with pytest.raises(ValueError, match="trailing shape"):
        cgru.pad_sequence([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="positive"):
        cgru.pack_sequence([np.zeros((2, 3)), np.zeros((0, 3))])
    with pytest.raises(TypeError):
        cgru.pack_sequence("abc")
    with pytest.raises(TypeError):
        cgru.pad_sequence([np.zeros(2), "x"])
    with pytest.raises(ValueError, match="padding_side"):
        cgru.pad_sequence([np.zeros(2)], padding_side="middle")


def test_total_length_too_small():
    packed = cgru.pack_sequence([np.ones((3, 1)), np.ones((2, 1))])
    with pytest.raises(ValueError, match="total_length=2"):
        cgru.pad_packed_sequence(packed, total_length=2)
    with pytest.raises(TypeError):
        cgru.pad_packed_sequence(packed, total_length=2.5)


def test_not_a_packed_sequence():
    with pytest.raises(TypeError, match="PackedSequence"):
        cgru.pad_packed_sequence((np.zeros((3, 1)), np.array([2, 1])))
    with pytest.raises(TypeError, match="PackedSequence"):
        cgru.unpack_sequence(np.zeros((3, 1)))


def _packed(data_rows=6, batch_sizes=(3, 2, 1), sorted_indices=None, unsorted_indices=None):
    return PackedSequence(np.ones((data_rows, 3), dtype=np.float32), np.asarray(batch_sizes),
                          None if sorted_indices is None else np.asarray(sorted_indices),
                          None if unsorted_indices is None else np.asarray(unsorted_indices))


@pytest.mark.parametrize("packed,match", [
    (_packed(data_rows=7), "rows but batch_sizes sum to 6"),
    (_packed(data_rows=5), "rows but batch_sizes sum to 6"),
    (_packed(batch_sizes=(1, 2, 3)), "non-increasing"),
    (_packed(batch_sizes=(3, 3, 0)), "positive"),
    (_packed(batch_sizes=(4, -1, 3)), "positive"),
    (_packed(data_rows=0, batch_sizes=()), "empty"),
    (_packed(sorted_indices=[0, 1, 5]), "permutation"),
    (_packed(sorted_indices=[0, 1]), "permutation"),
    (_packed(sorted_indices=[0, 0, 1]), "permutation"),
    (_packed(sorted_indices=[-1, 0, 1]), "permutation"),
    (_packed(sorted_indices=[2, 0, 1], unsorted_indices=[2, 0, 1]), "inverse"),
    (_packed(unsorted_indices=[0, 1, 9]), "permutation"),
])
def test_malformed_packed_sequences(packed, match):
    gru = cgru.GRU(3, 4, bidirectional=True, seed=0)
    with pytest.raises(ValueError, match=match):
        gru(packed)
    with pytest.raises(ValueError, match=match):
        cgru.pad_packed_sequence(packed)
    assert gru(_packed())[0].data.shape == (6, 8)   # the module keeps working


def test_malformed_packed_field_types():
    gru = cgru.GRU(3, 4, seed=0)
    with pytest.raises(TypeError):
        gru(PackedSequence(np.ones((3, 3)), np.array([2.0, 1.0])))
    with pytest.raises(TypeError):
        gru(PackedSequence("data", np.array([2, 1])))
    with pytest.raises(ValueError, match="2D"):
        gru(PackedSequence(np.ones(3), np.array([2, 1])))
    with pytest.raises(ValueError, match="input_size"):
        gru(PackedSequence(np.ones((3, 5)), np.array([2, 1])))


def test_packed_hx_of_wrong_batch():
    gru = cgru.GRU(3, 4, seed=0)
    with pytest.raises(ValueError, match="Expected hidden size"):
        gru(_packed(), np.zeros((1, 2, 4)))


def test_hand_built_packed_sequence_runs(rng):
    gru = cgru.GRU(3, 4, seed=0, dtype=np.float64)
    padded = rng.standard_normal((3, 3, 3))
    ref = cgru.pack_padded_sequence(padded, [3, 2, 1])
    hand = PackedSequence(ref.data.tolist(), [3, 2, 1])
    np.testing.assert_array_equal(gru(hand)[0].data, gru(ref)[0].data)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
@pytest.mark.parametrize("trailing", [(5,), (2, 3), ()])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_pack_sequence_from_the_list_equals_pad_then_pack(dtype, trailing, enforce_sorted):
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 9, size=23)
    if enforce_sorted:
        lengths = np.sort(lengths)[::-1]
    sequences = [(rng.standard_normal((n,) + trailing) * 10).astype(dtype) for n in lengths]
    originals = [s.copy() for s in sequences]
    packed = cgru.pack_sequence(sequences, enforce_sorted=enforce_sorted)
    expected = cgru.pack_padded_sequence(cgru.pad_sequence(sequences), lengths,
                                         enforce_sorted=enforce_sorted)
    np.testing.assert_array_equal(packed.data, expected.data)
    np.testing.assert_array_equal(packed.batch_sizes, expected.batch_sizes)
    for field in ("sorted_indices", "unsorted_indices"):
        got, want = getattr(packed, field), getattr(expected, field)
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_array_equal(got, want)
    unpacked = cgru.unpack_sequence(packed)
    assert len(unpacked) == len(sequences)
    for got, want, original in zip(unpacked, sequences, originals):
        assert got.dtype == want.dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(want, original)      # the caller's arrays untouched


def test_pack_sequence_large_batch_on_threads():
    rng = np.random.default_rng(3)
    sequences = [rng.standard_normal((int(n), 256)).astype(np.float32)
                 for n in rng.integers(1, 36, size=400)]
    with cgru.use_threads(2):
        packed = cgru.pack_sequence(sequences, enforce_sorted=False)
        unpacked = cgru.unpack_sequence(packed)
    expected = cgru.pack_padded_sequence(cgru.pad_sequence(sequences),
                                         [len(s) for s in sequences], enforce_sorted=False)
    np.testing.assert_array_equal(packed.data, expected.data)
    for got, want in zip(unpacked, sequences):
        np.testing.assert_array_equal(got, want)


# -- another library's PackedSequence (torch's), duck-typed ----------------------------------------

class _ForeignPackedSequence(tuple):
    """Stands for torch.nn.utils.rnn.PackedSequence: the same name and four fields."""

    __slots__ = ()
    data = property(lambda self: self[0])
    batch_sizes = property(lambda self: self[1])
    sorted_indices = property(lambda self: self[2])
    unsorted_indices = property(lambda self: self[3])


_ForeignPackedSequence.__name__ = "PackedSequence"


def test_a_foreign_packed_sequence_runs_as_cgrus(rng):
    gru = cgru.GRU(3, 4, bidirectional=True, seed=0)
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    ours = cgru.pack_padded_sequence(x, [2, 5, 3], enforce_sorted=False)
    foreign = _ForeignPackedSequence([list(ours.data), ours.batch_sizes, ours.sorted_indices,
                                      ours.unsorted_indices])
    output, h_n = gru(foreign)
    want_output, want_h_n = gru(ours)
    assert type(output) is cgru.PackedSequence
    np.testing.assert_array_equal(output.data, want_output.data)
    np.testing.assert_array_equal(h_n, want_h_n)
    padded, lengths = cgru.pad_packed_sequence(foreign)
    assert lengths.tolist() == [2, 5, 3]
    assert cgru.packing.as_packed(object()) is None and cgru.packing.as_packed(x) is None
