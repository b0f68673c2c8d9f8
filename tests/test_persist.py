"""save / load, pickling and copies: exact round trips, and clear errors for bad files."""
import copy
import json
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest

import cgru


def _modules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [cgru.GRU(3, 5, seed=0),
                cgru.GRU(4, 6, 3, bias=False, batch_first=True, dropout=0.3, bidirectional=True,
                         dtype=np.float64, seed=1),
                cgru.GRUCell(3, 7, seed=2),
                cgru.GRUCell(2, 3, bias=False, dtype=np.float64, seed=3)]


def _assert_same(a, b, rng):
    assert type(a) is type(b) and repr(a) == repr(b)
    assert list(a.state_dict()) == list(b.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
        assert getattr(b, k).dtype == v.dtype
    shape = (2, a.input_size) if isinstance(a, cgru.GRUCell) else (4, 2, a.input_size)
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(np.asarray(a(x)[0]), np.asarray(b(x)[0]))


@pytest.mark.parametrize("index", range(4))
def test_save_load_round_trip(tmp_path, rng, index):
    module = _modules()[index]
    path = tmp_path / "model.npz"
    module.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = cgru.load(path)
    _assert_same(module, loaded, rng)
    assert os.listdir(tmp_path) == ["model.npz"]          # no temporary file left behind
    with np.load(path, allow_pickle=False) as data:      # readable without pickles
        assert json.loads(str(data["__cgru__"]))["format"] == "cgru"


@pytest.mark.parametrize("index", range(4))
def test_pickle_and_deepcopy(rng, index):
    module = _modules()[index]
    module.train()
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module), copy.copy(module)):
        _assert_same(module.eval(), clone.eval(), rng)
        module.train()


def _write_npz(path, header=None, **arrays):
    if header is not None:
        arrays["__cgru__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    cgru.GRU(3, 4, seed=0).save(path)
    with np.load(path) as data:
        return path, json.loads(str(data["__cgru__"])), {k: data[k] for k in data.files
                                                         if k != "__cgru__"}


def test_truncated_file(tmp_path, saved):
    path, _, _ = saved
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cgru model file"):
            cgru.load(bad)


def test_files_from_other_programs(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    plain = tmp_path / "array.npy"
    np.save(plain, np.zeros(3))
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(2))
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("readme.txt", "not numpy")
    for path in (text, plain, other, tmp_path / "zip.npz"):
        with pytest.raises(ValueError):
            cgru.load(path)
    with pytest.raises(FileNotFoundError):
        cgru.load(tmp_path / "missing.npz")


def test_inconsistent_files(tmp_path, saved):
    _, header, weights = saved
    cases = {
        "version": (dict(header, version=99), weights, "version 99"),
        "format": (dict(header, format="other"), weights, "not a cgru model file"),
        "class": (dict(header, **{"class": "LSTM"}), weights, "unknown model class"),
        "config": (dict(header, config=dict(header["config"], hidden_size=-1)), weights,
                   "inconsistent"),
        "missing": (header, {k: v for k, v in weights.items() if k != "weight_hh_l0"},
                    "weight_hh_l0"),
        "shape": (header, dict(weights, bias_ih_l0=np.zeros(5, np.float32)), "bias_ih_l0"),
        "extra": (header, dict(weights, weight_ih_l1=np.zeros((12, 4))), "weight_ih_l1"),
    }
    for name, (head, arrays, match) in cases.items():
        path = tmp_path / f"{name}.npz"
        _write_npz(path, head, **arrays)
        with pytest.raises(ValueError, match=match):
            cgru.load(path)
    garbled = tmp_path / "garbled.npz"
    np.savez(garbled, __cgru__=np.array("{not json"), **weights)
    with pytest.raises(ValueError):
        cgru.load(garbled)
