"""GRUCell: parity with PyTorch's nn.GRUCell (fixtures, live), the reference, and bad input."""
import numpy as np
import pytest

import cgru
from conftest import assert_close, fixture_names, load_fixture
from reference import gru_reference


@pytest.mark.parametrize("name", fixture_names("cell"))
def test_cell_matches_torch_fixtures(name):
    config, params, arrays = load_fixture(name)
    cell = cgru.GRUCell(config["input_size"], config["hidden_size"], bias=config["bias"],
                        dtype=np.dtype(config["dtype"]))
    cell.load_state_dict(params)
    h1 = cell(arrays["x"], arrays.get("hx"))
    assert h1.dtype == np.dtype(config["dtype"])
    assert_close(h1, arrays["h1"], h1.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_matches_torch_live(torch, rng, dtype):
    for _ in range(5):
        isz, hsz, batch = (int(v) for v in rng.integers(1, 70, size=3))
        cell = cgru.GRUCell(isz, hsz, dtype=dtype, seed=int(rng.integers(1 << 30)))
        ref = torch.nn.GRUCell(isz, hsz).to(getattr(torch, np.dtype(dtype).name))
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
        x = rng.standard_normal((batch, isz)).astype(dtype)
        hx = rng.standard_normal((batch, hsz)).astype(dtype)
        with torch.no_grad():
            want = ref(torch.from_numpy(x), torch.from_numpy(hx)).numpy()
        assert_close(cell(x, hx), want, dtype)


def test_cell_equals_one_gru_step(rng):
    cell = cgru.GRUCell(5, 7, dtype=np.float64, seed=0)
    gru = cgru.GRU(5, 7, dtype=np.float64)
    gru.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = rng.standard_normal((6, 3, 5))
    h = np.zeros((3, 7))
    for t in range(6):          # streaming one step at a time equals the whole sequence
        h = cell(x[t], h)
    _, h_n = gru(x)
    np.testing.assert_allclose(h, h_n[0], atol=1e-12)
    ref_out, _ = gru_reference(gru.state_dict(), x, np.zeros((1, 3, 7)), 1, False)
    np.testing.assert_allclose(h, ref_out[-1], atol=1e-12)


def test_cell_parameters_and_state_dict():
    cell = cgru.GRUCell(3, 4, seed=0)
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert cell.weight_ih.shape == (12, 3) and cell.weight_hh.shape == (12, 4)
    assert list(cgru.GRUCell(3, 4, bias=False).state_dict()) == ["weight_ih", "weight_hh"]
    bound = 0.5
    assert all(np.abs(v).max() <= bound for v in cell.state_dict().values())
    with pytest.raises(KeyError):
        cell.load_state_dict({"weight_ih": np.zeros((12, 3))})
    with pytest.raises(ValueError, match="weight_hh"):
        cell.load_state_dict({**cell.state_dict(), "weight_hh": np.zeros((4, 12))})
    assert repr(cell) == "GRUCell(3, 4)"
    assert repr(cgru.GRUCell(3, 4, bias=False)) == "GRUCell(3, 4, bias=False)"
    assert cell.train() is cell and cell.eval() is cell and cell.training is False


def test_cell_unbatched_and_callers_arrays(rng):
    cell = cgru.GRUCell(3, 4, seed=0, dtype=np.float64)
    x = rng.standard_normal(3)
    hx = rng.standard_normal(4)
    x0, hx0 = x.copy(), hx.copy()
    h1 = cell(x, hx)
    assert h1.shape == (4,)
    np.testing.assert_array_equal(h1, cell(x[None], hx[None])[0])
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(hx, hx0)


@pytest.mark.parametrize("x_shape,hx_shape,match", [
    ((2, 2, 3), None, "Expected input to be 1D or 2D, got 3D instead"),
    ((2, 5), None, "inconsistent input_size: got 5 expected 3"),
    ((0, 3), None, "non-empty batch"),
    ((2, 3), (3, 4), "batch size 2 doesn't match hidden0 batch size 3"),
    ((2, 3), (4,), "Expected hx to be 2D"),
    ((3,), (1, 4), "Expected hx to be 1D"),
    ((2, 3), (2, 5), "inconsistent hidden_size: got 5, expected 4"),
])
def test_cell_bad_shapes(x_shape, hx_shape, match):
    cell = cgru.GRUCell(3, 4)
    with pytest.raises(ValueError, match=match):
        cell(np.zeros(x_shape), None if hx_shape is None else np.zeros(hx_shape))


@pytest.mark.parametrize("bad", ["x", None, {"a": 1}, 1.5, np.array([["a", "b", "c"]])])
def test_cell_not_arrays(bad):
    with pytest.raises(TypeError):
        cgru.GRUCell(3, 4)(bad)


@pytest.mark.parametrize("kwargs,error", [
    (dict(input_size=3.5, hidden_size=4), TypeError),
    (dict(input_size=3, hidden_size=0), ValueError),
    (dict(input_size=3, hidden_size=4, dtype=np.int8), TypeError),
])
def test_cell_bad_constructor(kwargs, error):
    with pytest.raises(error):
        cgru.GRUCell(**kwargs)
