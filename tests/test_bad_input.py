"""Every kind of bad input gets a clear ValueError or TypeError, and the module keeps working."""
import io
import json
import warnings
import zipfile

import numpy as np
import pytest

import cgru


@pytest.fixture
def gru():
    return cgru.GRU(3, 4, 2, seed=0)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(input_size=3.0, hidden_size=4), TypeError, "input_size should be of type int"),
    (dict(input_size="3", hidden_size=4), TypeError, "input_size"),
    (dict(input_size=3, hidden_size=None), TypeError, "hidden_size"),
    (dict(input_size=3, hidden_size=4, num_layers=1.5), TypeError, "num_layers"),
    (dict(input_size=0, hidden_size=4), ValueError, "input_size must be greater than zero"),
    (dict(input_size=3, hidden_size=-1), ValueError, "hidden_size must be greater than zero"),
    (dict(input_size=3, hidden_size=4, num_layers=0), ValueError, "num_layers"),
    (dict(input_size=3, hidden_size=4, dropout=1.5), ValueError, "dropout"),
    (dict(input_size=3, hidden_size=4, dropout=-0.1), ValueError, "dropout"),
    (dict(input_size=3, hidden_size=4, dropout="0.1"), ValueError, "dropout"),
    (dict(input_size=3, hidden_size=4, dtype=np.int32), TypeError, "dtype"),
    (dict(input_size=3, hidden_size=4, dtype="float16"), TypeError, "dtype"),
    (dict(input_size=3, hidden_size=4, seed="x"), TypeError, "seed"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        cgru.GRU(**kwargs)


def test_numpy_integers_are_integers():
    gru = cgru.GRU(np.int64(3), np.int32(4), np.uint8(2))
    assert (gru.input_size, gru.hidden_size, gru.num_layers) == (3, 4, 2)


@pytest.mark.parametrize("bad", ["abc", None, {"x": 1}, 3, 2.5, True,
                                 np.array([[["a"]]]), np.empty((2, 1, 3), dtype=object),
                                 np.zeros((2, 1, 3), dtype=complex)])
def test_input_that_is_not_an_array(gru, bad):
    with pytest.raises(TypeError):
        gru(bad)
    assert gru(np.zeros((2, 1, 3)))[0].shape == (2, 1, 4)


@pytest.mark.parametrize("shape,match", [
    ((3,), "Expected input to be 2D or 3D, got 1D instead"),
    ((2, 2, 2, 3), "Expected input to be 2D or 3D, got 4D instead"),
    ((5, 2, 7), "input.size\\(-1\\) must be equal to input_size. Expected 3, got 7"),
    ((5, 7), "Expected 3, got 7"),
    ((0, 2, 3), "sequence length"),
    ((0, 3), "sequence length"),
    ((5, 0, 3), "batch"),
])
def test_bad_input_shapes(gru, shape, match):
    with pytest.raises(ValueError, match=match):
        gru(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("x_shape,hx_shape,match", [
    ((5, 2, 3), (2, 3, 4), r"Expected hidden size \(2, 2, 4\), got \[2, 3, 4\]"),
    ((5, 2, 3), (1, 2, 4), r"Expected hidden size \(2, 2, 4\), got \[1, 2, 4\]"),
    ((5, 2, 3), (2, 2, 5), "Expected hidden size"),
    ((5, 2, 3), (2, 0, 4), "Expected hidden size"),
    ((5, 2, 3), (2, 4), "hx should also be 3-D but got 2-D"),
    ((5, 3), (2, 1, 4), "hx should also be 2-D but got 3-D"),
    ((5, 3), (3, 4), r"Expected hidden size \(2, 4\), got \[3, 4\]"),
])
def test_bad_hx_shapes(gru, x_shape, hx_shape, match):
    with pytest.raises(ValueError, match=match):
        gru(np.zeros(x_shape), np.zeros(hx_shape))
    assert gru(np.zeros((2, 1, 3)))[1].shape == (2, 1, 4)


@pytest.mark.parametrize("bad", ["abc", {"h": 1}, 0.0, np.array([["x"]])])
def test_hx_that_is_not_an_array(gru, bad):
    with pytest.raises(TypeError, match="hx"):
        gru(np.zeros((2, 1, 3)), bad)


def test_nan_input_propagates_without_crashing(gru):
    x = np.zeros((3, 2, 3))
    x[1, 0, 0] = np.nan
    output, _ = gru(x)
    assert np.isnan(output[1:, 0]).all() and not np.isnan(output[:, 1]).any()


def test_train_needs_a_bool(gru):
    with pytest.raises(ValueError, match="boolean"):     # PyTorch's error and wording
        gru.train("yes")
    with pytest.raises(ValueError, match="boolean"):
        gru.train(1)


def test_dropout_assignment_is_validated(gru):
    with pytest.raises(ValueError, match="dropout"):
        gru.dropout = 2.0
    assert gru.dropout == 0.0


def test_size_attributes_are_fixed(gru):
    with pytest.raises(AttributeError):
        gru.hidden_size = 10


# -- found by tests/test_fuzz.py ----------------------------------------------------------------

@pytest.mark.parametrize("sorted_indices", [np.array([1.0, 0.0]), [True, False],
                                            [[1], [0, 2]], ["1", "0"]])
def test_packed_sequence_with_sorted_indices_that_are_not_ints(sorted_indices):
    """PackedSequence(...) raised IndexError (floats) or NumPy's ValueError (bools, ragged
    lists) while deriving unsorted_indices; now it is built, and using it is a TypeError or
    ValueError that names the field."""
    packed = cgru.PackedSequence(np.zeros((3, 2), np.float32), [2, 1], sorted_indices)
    assert packed.unsorted_indices is None
    with pytest.raises((TypeError, ValueError), match="sorted_indices"):
        cgru.pad_packed_sequence(packed)
    with pytest.raises((TypeError, ValueError), match="sorted_indices"):
        cgru.GRU(2, 3)(packed)


@pytest.mark.parametrize("shape,batch_first", [((3, 0, 2), False), ((0, 3, 2), True),
                                               ((0, 0), False)])
def test_pack_padded_sequence_of_an_empty_batch(shape, batch_first):
    """N = 0 raised IndexError (from the batch sizes of no lengths); the README promises a
    ValueError."""
    with pytest.raises(ValueError, match="non-empty batch, got batch size 0"):
        cgru.pack_padded_sequence(np.zeros(shape), np.zeros(0, np.int64),
                                  batch_first=batch_first)
    with pytest.raises(ValueError, match="batch size 0"):
        cgru.pack_padded_sequence(np.zeros(shape), [], batch_first=batch_first,
                                  enforce_sorted=False)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_gru_refuses_complex_packed_data(dtype):
    """Complex PackedSequence.data was cast to real (imaginary parts dropped, a ComplexWarning
    only); dense complex input has always been a TypeError."""
    gru = cgru.GRU(2, 3, seed=0)
    packed = cgru.PackedSequence(np.ones((3, 2), dtype) * 1j, [2, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="PackedSequence.data must be a real numeric "
                                            "array, got an array of dtype complex"):
            gru(packed)
        with pytest.raises(TypeError, match="real numeric array"):
            gru.vjp(packed)
    # the packing utilities still move complex rows (as torch's do)
    padded, _ = cgru.pad_packed_sequence(packed)
    assert padded.dtype == dtype and padded[0, 0, 0] == 1j


@pytest.mark.parametrize("dtype,value,error", [
    (np.float32, 10 ** 400, ValueError), (np.int8, 1000, ValueError),
    (np.float64, None, TypeError), (np.float32, "x", TypeError), (np.float32, 1j, TypeError),
    (np.float32, [1.0], TypeError)])
def test_padding_value_that_does_not_fit(dtype, value, error):
    """pad_packed_sequence and pad_sequence raised OverflowError for a padding_value out of the
    data's range, and took None (as NaN), lists and complex numbers (dropping the imaginary
    part) for real data."""
    packed = cgru.PackedSequence(np.zeros((3, 2), dtype), [2, 1])
    with pytest.raises(error, match="padding_value"):
        cgru.pad_packed_sequence(packed, padding_value=value)
    with pytest.raises(error, match="padding_value"):
        cgru.pad_sequence([np.zeros((2, 2), dtype), np.zeros((1, 2), dtype)],
                          padding_value=value)


def test_padding_values_that_fit():
    packed = cgru.PackedSequence(np.zeros((3, 2), np.complex64), [2, 1])
    assert cgru.pad_packed_sequence(packed, padding_value=1j)[0][1, 1, 0] == 1j
    for value in (np.float32(2), np.array(2.0), True, 2):
        padded = cgru.pad_sequence([np.zeros(2, np.int8), np.zeros(1, np.int8)],
                                   padding_value=value)
        assert padded.dtype == np.int8 and padded[1, 1] == int(value)


def test_batch_sizes_whose_int64_sum_wraps_around():
    """batch_sizes [2**63 - 1, 2**63 - 1, 2] summed to 0 in int64 and matched empty data: the
    GRU then tried to allocate a state for 2**63 - 1 sequences."""
    huge = 2 ** 63 - 1
    for data in (np.zeros((0, 3), np.float32), np.zeros(0, np.float32)):
        packed = cgru.PackedSequence(data, np.array([huge, huge, 2]))
        with pytest.raises(ValueError, match=f"0 rows but batch_sizes sum to {2 * huge + 2}"):
            cgru.GRU(3, 2)(packed)
        with pytest.raises(ValueError, match="batch_sizes sum to"):
            cgru.pad_packed_sequence(packed)
        with pytest.raises(ValueError, match="batch_sizes sum to"):
            cgru.unpack_sequence(packed)


def test_uint64_values_beyond_int64():
    """uint64 lengths, batch sizes and indices above 2**63 - 1 wrapped around to negative int64
    values, and the errors showed those (lengths 2**64 - 1 were reported as -1)."""
    big = np.array([2 ** 64 - 1, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match=f"lengths must fit in int64, got a value of {2**64-1}"):
        cgru.pack_padded_sequence(np.zeros((3, 2, 1)), big)
    with pytest.raises(ValueError, match="batch_sizes must fit in int64"):
        cgru.unpack_sequence(cgru.PackedSequence(np.zeros((3, 1)), big))
    with pytest.raises(ValueError, match="sorted_indices must fit in int64"):
        cgru.unpack_sequence(cgru.PackedSequence(np.zeros((3, 1)), [2, 1], big))


def _rewritten(tmp_path, edit, compression=zipfile.ZIP_STORED):
    """A saved GRU(2, 3) whose zip members went through edit(name, bytes) -> bytes."""
    path = tmp_path / "model.npz"
    cgru.GRU(2, 3, seed=0).save(path)
    with zipfile.ZipFile(path) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    out = tmp_path / "edited.npz"
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, content in members:
            z.writestr(name, edit(name, content))
    return out


def _header_json(text):
    buffer = io.BytesIO()
    np.save(buffer, np.array(text))
    return buffer.getvalue()


def test_load_a_damaged_compressed_file_or_deep_json(tmp_path):
    """A damaged deflate stream raised zlib.error, and a header of JSON nested 100000 deep
    RecursionError; both are damaged files: ValueError."""
    deflated = _rewritten(tmp_path, lambda name, content: content, zipfile.ZIP_DEFLATED)
    assert cgru.load(deflated).hidden_size == 3
    data = bytearray(deflated.read_bytes())
    with zipfile.ZipFile(deflated) as z:
        info = z.getinfo("weight_ih_l0.npy")
    start = info.header_offset + 30 + len(info.filename)    # the compressed bytes
    data[start] ^= 0x55              # the first deflate block header: zlib.error
    deflated.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable cgru model file: error"):
        cgru.load(deflated)
    deep = _rewritten(tmp_path, lambda name, content: _header_json("[" * 10 ** 5 + "]" * 10 ** 5)
                      if name == "__cgru__.npy" else content)
    with pytest.raises(ValueError, match="RecursionError"):
        cgru.load(deep)


def _npy_with_shape(content, shape):
    """A .npy member's bytes with its header rewritten to declare `shape` (data kept)."""
    array = np.load(io.BytesIO(content), allow_pickle=False)
    header = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (array.dtype.str, shape)
    header += " " * ((-(10 + len(header) + 1)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + \
        array.tobytes()


@pytest.mark.parametrize("shape", [(2, 10 ** 9), (10 ** 12, 10 ** 12), (2 ** 62,), (5,)])
def test_load_a_member_whose_header_lies_about_its_size(tmp_path, shape):
    """NumPy allocates what a member's .npy header declares before reading its data: a damaged
    header made cgru.load raise MemoryError (or take gigabytes); now the declared size is
    checked against the bytes the member holds first."""
    path = _rewritten(tmp_path, lambda name, content: _npy_with_shape(content, shape)
                      if name == "weight_hh_l0.npy" else content)
    with pytest.raises(ValueError, match=r"member 'weight_hh_l0.npy' declares float32 of shape"):
        cgru.load(path)


@pytest.mark.parametrize("key,value", [("hidden_size", 10 ** 9), ("input_size", 10 ** 12),
                                       ("num_layers", 10 ** 6), ("hidden_size", 4)])
def test_load_a_header_whose_sizes_do_not_fit_its_weights(tmp_path, key, value):
    """cgru.load built the module from the header's config (allocating its initial weights)
    before comparing it with the file's weights: hidden_size=10**9 was a MemoryError and
    num_layers=10**6 built a million layers; now the sizes are checked first."""
    def edit(name, content):
        if name != "__cgru__.npy":
            return content
        header = json.loads(str(np.load(io.BytesIO(content))))
        header["config"][key] = value
        return _header_json(json.dumps(header))

    with pytest.raises(ValueError, match=f"its config has {key}={value} but its weights have "
                                         f"{key}="):
        cgru.load(_rewritten(tmp_path, edit))


def test_cli_errors_stay_on_one_line(tmp_path, capsys):
    """An input .npy with an oversized header got NumPy's multi-line message printed as is:
    `cgru run` errors are one line."""
    from cgru import cli
    cgru.GRU(3, 2, seed=0).save(tmp_path / "model.npz")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3), " + " " * 20000 + "}"
    header += " " * ((-(12 + len(header) + 1)) % 64) + "\n"
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little")
                                     + header.encode() + bytes(24))
    code = cli.main(["run", str(tmp_path / "model.npz"), str(tmp_path / "x.npy"), "-o",
                     str(tmp_path / "out.npy")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("cgru run: error: input ")
    assert "max_header_size" in err and len(err.strip().splitlines()) == 1


def _npy_with_header(header_text, data=bytes(24)):
    header = header_text + " " * ((-(10 + len(header_text) + 1)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data


def test_cli_input_with_an_unclosed_bracket_in_its_header(tmp_path, capsys):
    """NumPy raises tokenize.TokenError (not a ValueError) for a .npy header with an unclosed
    bracket: `cgru run` printed a traceback."""
    from cgru import cli
    cgru.GRU(3, 2, seed=0).save(tmp_path / "model.npz")
    (tmp_path / "x.npy").write_bytes(_npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3, }"))
    code = cli.main(["run", str(tmp_path / "model.npz"), str(tmp_path / "x.npy"), "-o",
                     str(tmp_path / "out.npy")])
    err = capsys.readouterr().err
    assert code == 1 and "is not a readable .npy array" in err
    assert len(err.strip().splitlines()) == 1


def test_load_a_member_with_an_unclosed_bracket_in_its_header(tmp_path):
    """The same tokenize.TokenError from a zip member's .npy header escaped cgru.load."""
    path = _rewritten(tmp_path, lambda name, content: _npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 3, }", content[-72:])
        if name == "weight_hh_l0.npy" else content)
    with pytest.raises(ValueError, match="not a readable cgru model file: TokenError"):
        cgru.load(path)


def test_cli_input_whose_header_shape_overflows(tmp_path, capsys):
    """A header shape of (10**12, 10**12) float64 is more bytes than an int64 counts: NumPy's
    memory map raised OverflowError through `cgru run` (a traceback)."""
    from cgru import cli
    cgru.GRU(3, 2, seed=0).save(tmp_path / "model.npz")
    (tmp_path / "x.npy").write_bytes(_npy_with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000000000000), }"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # NumPy's overflow warning would be a stderr line
        code = cli.main(["run", str(tmp_path / "model.npz"), str(tmp_path / "x.npy"), "-o",
                         str(tmp_path / "out.npy")])
    err = capsys.readouterr().err
    assert code == 1 and "is not a readable .npy array" in err
    assert len(err.strip().splitlines()) == 1
