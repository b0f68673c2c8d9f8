"""PyTorch, Keras and ONNX import/export: live round trips when the frameworks are installed,
weight conversions against committed fixtures made by those frameworks when they are not."""
import os
import sys
import warnings

import numpy as np
import pytest

import cgru
from conftest import FIXTURES, assert_close, load_fixture


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch" if _has("torch") else "numpy")
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        pytest.skip("the Keras tests use a non-TensorFlow backend")
    return pytest.importorskip("keras")


def _has(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


# -- PyTorch -------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias", [
    (1, False, False, True), (2, True, True, True), (3, False, True, False)])
def test_from_torch_and_back(torch, rng, num_layers, bidirectional, batch_first, bias):
    module = torch.nn.GRU(5, 7, num_layers, bias=bias, batch_first=batch_first,
                          bidirectional=bidirectional, dropout=0.25 if num_layers > 1 else 0)
    gru = cgru.GRU.from_torch(module)
    assert (gru.input_size, gru.hidden_size, gru.num_layers, gru.bias, gru.batch_first,
            gru.bidirectional) == (5, 7, num_layers, bias, batch_first, bidirectional)
    assert gru.dropout == module.dropout and gru.training is False
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(x))
    got = gru(x)
    assert_close(got[0], want[0].numpy(), np.float32)
    assert_close(got[1], want[1].numpy(), np.float32)
    back = gru.to_torch()
    assert isinstance(back, torch.nn.GRU) and back.training is False
    with torch.no_grad():
        again = back(torch.from_numpy(x))
    np.testing.assert_array_equal(again[0].numpy(), want[0].numpy())


def test_from_torch_dtypes(torch, rng):
    double = cgru.GRU.from_torch(torch.nn.GRU(3, 4).double())
    assert double.dtype == np.float64 and double.to_torch().weight_hh_l0.dtype == torch.float64
    half = torch.nn.GRU(3, 4).half()
    single = cgru.GRU.from_torch(half)
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single.weight_ih_l0, half.weight_ih_l0.float().detach().numpy())


def test_cell_from_torch_and_back(torch, rng):
    module = torch.nn.GRUCell(4, 6)
    cell = cgru.GRUCell.from_torch(module)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    assert_close(cell(x), want, np.float32)
    assert isinstance(cell.to_torch(), torch.nn.GRUCell)
    with pytest.raises(TypeError, match="GRUCell"):
        cgru.GRUCell.from_torch(torch.nn.GRU(4, 6))


def test_from_torch_refuses_other_modules(torch):
    with pytest.raises(TypeError, match="torch.nn.GRU"):
        cgru.GRU.from_torch(torch.nn.LSTM(3, 4))
    with pytest.raises(TypeError):
        cgru.GRU.from_torch("not a module")


def test_missing_framework_is_a_clear_import_error(monkeypatch):
    gru = cgru.GRU(3, 4)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="torch==2.13.0"):
        gru.to_torch()
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="onnx"):
        gru.to_onnx("unused.onnx")
    with pytest.raises(ImportError, match="onnx"):
        cgru.GRU.from_onnx("unused.onnx")


# -- Keras ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gru", "bidirectional", "no_bias"])
def test_from_keras_raw_weights_match_keras_outputs(name):
    config, _, arrays = load_fixture(f"keras_{name}")
    weights = [arrays[f"w{i}"] for i in range(len([k for k in arrays if k.startswith("w")]))]
    gru = cgru.GRU.from_keras(weights)
    assert gru.batch_first and gru.bidirectional == (name == "bidirectional")
    assert gru.bias == (name != "no_bias")
    assert_close(gru(arrays["x"])[0], arrays["output"], np.float32)


def test_from_keras_raw_weight_errors():
    h, i = 4, 3
    kernel, recurrent = np.zeros((i, 3 * h)), np.zeros((h, 3 * h))
    with pytest.raises(ValueError, match="reset_after"):
        cgru.GRU.from_keras([kernel, recurrent, np.zeros(3 * h)])
    with pytest.raises(ValueError, match="expected"):
        cgru.GRU.from_keras([kernel])
    with pytest.raises(ValueError, match="kernel"):
        cgru.GRU.from_keras([kernel, np.zeros((h, 2 * h))])
    with pytest.raises(ValueError, match="bias"):
        cgru.GRU.from_keras([kernel, recurrent, np.zeros((3, 3 * h))])
    with pytest.raises(ValueError, match="differ"):
        cgru.GRU.from_keras([kernel, recurrent, np.zeros((5, 3 * h)), recurrent])


@pytest.mark.parametrize("not_a_layer", [object(), 3, "gru.keras", {"kernel": None}])
def test_from_keras_names_what_it_expects(not_a_layer):
    with pytest.raises(TypeError, match="keras.layers.GRU.*list of weight arrays") as error:
        cgru.GRU.from_keras(not_a_layer)
    assert type(not_a_layer).__name__ in str(error.value)


def test_from_keras_layers_live(rng):
    keras = _keras()
    x = rng.standard_normal((2, 7, 3)).astype(np.float32)
    for layer in [keras.layers.GRU(5, return_sequences=True),
                  keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True),
                                             merge_mode="concat"),
                  keras.layers.GRU(2, return_sequences=True, use_bias=False)]:
        want = np.asarray(keras.ops.convert_to_numpy(layer(x)))
        gru = cgru.GRU.from_keras(layer)
        assert_close(gru(x)[0], want, np.float32)
    last = keras.layers.GRU(3)                       # return_sequences=False: the last output
    want = np.asarray(keras.ops.convert_to_numpy(last(x)))
    assert_close(cgru.GRU.from_keras(last)(x)[1][0], want, np.float32)


def test_from_keras_refusals_live(rng):
    keras = _keras()
    x = rng.standard_normal((1, 2, 3)).astype(np.float32)
    cases = [(keras.layers.GRU(2, reset_after=False), ValueError, "reset_after"),
             (keras.layers.GRU(2, activation="relu"), ValueError, "activation"),
             (keras.layers.GRU(2, recurrent_activation="hard_sigmoid"), ValueError, "sigmoid"),
             (keras.layers.Bidirectional(keras.layers.GRU(2), merge_mode="sum"), ValueError,
              "concat"),
             (keras.layers.LSTM(2), TypeError, "GRU")]
    for layer, error, match in cases:
        layer(x)
        with pytest.raises(error, match=match):
            cgru.GRU.from_keras(layer)
    backwards = keras.layers.GRU(2, go_backwards=True)
    backwards(x)
    with pytest.warns(UserWarning, match="go_backwards"):
        cgru.GRU.from_keras(backwards)


# -- ONNX ----------------------------------------------------------------------------------------

def test_from_onnx_reads_torchs_own_export():
    pytest.importorskip("onnx")
    _, _, arrays = load_fixture("torch_export")
    gru = cgru.GRU.from_onnx(os.path.join(FIXTURES, "torch_export.onnx"))
    assert (gru.num_layers, gru.bidirectional, gru.batch_first) == (2, True, True)
    output, h_n = gru(arrays["x"])
    assert_close(output, arrays["output"], np.float32)
    assert_close(h_n, arrays["h_n"], np.float32)


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias", [
    (1, False, False, True), (2, True, False, True), (2, True, True, False),
    (3, False, True, True)])
@pytest.mark.parametrize("initial_state", [False, True])
def test_to_onnx_runs_in_onnxruntime(tmp_path, rng, num_layers, bidirectional, batch_first, bias,
                                     initial_state):
    ort = pytest.importorskip("onnxruntime")
    gru = cgru.GRU(5, 6, num_layers, bias=bias, batch_first=batch_first,
                   bidirectional=bidirectional, seed=1)
    path = tmp_path / "gru.onnx"
    gru.to_onnx(path, initial_state=initial_state)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    d = 2 if bidirectional else 1
    for batch, seq_len in [(1, 1), (3, 7)]:              # dynamic batch and sequence axes
        shape = (batch, seq_len, 5) if batch_first else (seq_len, batch, 5)
        x = rng.standard_normal(shape).astype(np.float32)
        h0 = rng.standard_normal((d * num_layers, batch, 6)).astype(np.float32)
        feeds = {"input": x, "h0": h0} if initial_state else {"input": x}
        output, h_n = session.run(None, feeds)
        want = gru(x, h0 if initial_state else None)
        assert_close(output, want[0], np.float32)
        assert_close(h_n, want[1], np.float32)
    again = cgru.GRU.from_onnx(path)
    assert repr(again) == repr(gru)
    for k, v in gru.state_dict().items():
        np.testing.assert_array_equal(getattr(again, k), v)


def test_to_onnx_float64_round_trip(tmp_path):
    pytest.importorskip("onnx")
    gru = cgru.GRU(3, 4, 2, dtype=np.float64, seed=0)
    gru.to_onnx(tmp_path / "g.onnx")
    again = cgru.GRU.from_onnx(str(tmp_path / "g.onnx"))
    assert again.dtype == np.float64
    np.testing.assert_array_equal(again.weight_hh_l1, gru.weight_hh_l1)


def _gru_model(**attrs):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    h, i = attrs.pop("hidden", 2), 3
    extra_nodes = attrs.pop("extra_nodes", [])
    inits = [numpy_helper.from_array(np.zeros((1, 3 * h, i), np.float32), "W"),
             numpy_helper.from_array(np.zeros((1, 3 * h, h), np.float32), "R")]
    w_input = attrs.pop("w_input", "W")
    node = helper.make_node("GRU", ["X", w_input, "R"], ["Y", "Yh"], hidden_size=h, **attrs)
    graph = helper.make_graph(
        [node] + extra_nodes, "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["L", "N", i]),
         helper.make_tensor_value_info("Wdyn", TensorProto.FLOAT, [1, 3 * h, i])],
        [helper.make_tensor_value_info("Yh", TensorProto.FLOAT, [1, "N", h])], inits)
    return helper.make_model(graph)


@pytest.mark.parametrize("attrs,match", [
    (dict(linear_before_reset=0), "linear_before_reset"),
    (dict(), "linear_before_reset"),
    (dict(linear_before_reset=1, clip=1.0), "clip"),
    (dict(linear_before_reset=1, activations=["Relu", "Tanh"]), "activations"),
    (dict(linear_before_reset=1, direction="reverse"), "direction"),
    (dict(linear_before_reset=1, w_input="Wdyn"), "computed"),
])
def test_from_onnx_refusals(attrs, match):
    with pytest.raises(ValueError, match=match):
        cgru.GRU.from_onnx(_gru_model(**attrs))


def test_from_onnx_refuses_other_operators_and_inputs():
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    extra = helper.make_node("MatMul", ["Yh", "Yh"], ["Z"])
    with pytest.raises(ValueError, match="MatMul"):
        cgru.GRU.from_onnx(_gru_model(linear_before_reset=1, extra_nodes=[extra]))
    empty = helper.make_model(helper.make_graph([], "empty", [], []))
    with pytest.raises(ValueError, match="no GRU node"):
        cgru.GRU.from_onnx(empty)
    with pytest.raises(TypeError):
        cgru.GRU.from_onnx(42)
    assert isinstance(onnx.ModelProto(), onnx.ModelProto)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _gru_model(linear_before_reset=1)
    assert cgru.GRU.from_onnx(model.SerializeToString()).hidden_size == 2


# -- torch's PackedSequence, and Keras's messages --------------------------------------------------

def test_gru_takes_torchs_packed_sequence(torch, rng):
    module = torch.nn.GRU(3, 4, 2, bidirectional=True)
    gru = cgru.GRU.from_torch(module)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    lengths = [4, 6, 2]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x).requires_grad_(), torch.tensor(lengths), enforce_sorted=False)
    output, h_n = gru(packed)
    assert type(output) is cgru.PackedSequence and isinstance(output.data, np.ndarray)
    want_output, want_h_n = gru(cgru.pack_padded_sequence(x, lengths, enforce_sorted=False))
    np.testing.assert_array_equal(output.data, want_output.data)
    np.testing.assert_array_equal(output.batch_sizes, packed.batch_sizes.numpy())
    np.testing.assert_array_equal(h_n, want_h_n)
    with torch.no_grad():
        torch_output, torch_h_n = module(packed)
    assert_close(output.data, torch_output.data.numpy(), np.float32)
    assert_close(h_n, torch_h_n.numpy(), np.float32)
    padded, got_lengths = cgru.pad_packed_sequence(packed)
    assert got_lengths.tolist() == lengths and padded.shape == (6, 3, 3)
    (_, _), backward = gru.vjp(packed)
    grad = packed._replace(data=torch.ones(sum(lengths), 8))
    assert backward(grad)["input"].shape == (sum(lengths), 3)


def test_from_keras_reset_before_message_has_keras_equation():
    h, i = 4, 3
    with pytest.raises(ValueError, match=r"W_hn \(r \* h\)") as error:
        cgru.GRU.from_keras([np.zeros((i, 3 * h)), np.zeros((h, 3 * h)), np.zeros(3 * h)])
    assert "reset_after" in str(error.value)


def test_from_keras_layer_messages_live():
    keras = _keras()
    layer = keras.layers.GRU(2, reset_after=False)
    layer.build((None, None, 3))
    with pytest.raises(ValueError, match=r"W_hn \(r \* h\).*r \* \(W_hn h \+ b_hn\)"):
        cgru.GRU.from_keras(layer)
    for unbuilt in (keras.layers.GRU(2),
                    keras.layers.Bidirectional(keras.layers.GRU(2), merge_mode="concat")):
        with pytest.raises(ValueError, match="no weights yet: build it"):
            cgru.GRU.from_keras(unbuilt)
