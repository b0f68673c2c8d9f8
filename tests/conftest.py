import glob
import json
import os

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# Absolute tolerances against PyTorch and the float64 reference.
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def fixture_names(prefix):
    paths = sorted(glob.glob(os.path.join(FIXTURES, f"{prefix}_*.npz")))
    return [os.path.basename(p)[:-4] for p in paths]


def load_fixture(name):
    """(config dict, params dict, other arrays dict) of one golden fixture."""
    with np.load(os.path.join(FIXTURES, f"{name}.npz"), allow_pickle=False) as data:
        config = json.loads(str(data["config"]))
        params = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
        arrays = {k: data[k] for k in data.files if k != "config" and not k.startswith("param/")}
    return config, params, arrays


def assert_close(actual, expected, dtype):
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE[np.dtype(dtype)])


@pytest.fixture(scope="session")
def torch():
    """The torch module when installed (live parity tests), else the test is skipped."""
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
