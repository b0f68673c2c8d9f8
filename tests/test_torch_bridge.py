"""cgru.torch: torch.nn.GRU / GRUCell subclasses that run cgru, against torch's own modules."""
import copy
import io
import itertools
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import cgru  # noqa: E402
import cgru.torch as ct  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

# Tolerance relative to the largest value compared (outputs and gradients).
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Subprocesses import the cgru these tests import (installed, or built in place) and start in
# tests/, where the uncompiled ./cgru of a checkout cannot shadow it.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cgru.__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """PyTorch's small-RNN autograd at 2 threads on a busy 2-core machine: 100 ms a step
    (4 ms at 1); tests that need 2 threads set them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_close(got, want, dtype):
    assert type(got) is type(want) or (torch.is_tensor(got) and torch.is_tensor(want))
    if want is None:
        assert got is None
        return
    got, want = got.detach(), want.detach()
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(1.0, float(want.abs().max()))
    err = float((got - want).abs().max())
    assert err <= TOL[dtype] * scale, f"max error {err:.3g} (scale {scale:.3g})"


def twins(*args, dtype=torch.float32, cell=False, **kwargs):
    """(torch module, cgru.torch module) with the same weights."""
    torch_cls, bridge_cls = (torch.nn.GRUCell, ct.GRUCell) if cell else (torch.nn.GRU, ct.GRU)
    reference = torch_cls(*args, dtype=dtype, **kwargs)
    bridge = bridge_cls(*args, dtype=dtype, **kwargs)
    bridge.load_state_dict(reference.state_dict())
    return reference, bridge


def results_and_grads(module, make_inputs, weights):
    """Outputs, then gradients of a fixed weighted sum of them w.r.t. inputs and parameters."""
    inputs = make_inputs()
    module.zero_grad()
    out = module(*inputs)
    outs = list(out) if isinstance(out, tuple) else [out]
    if isinstance(outs[0], torch.nn.utils.rnn.PackedSequence):
        outs[0] = outs[0].data
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    loss.backward()
    leaves = [t for t in inputs if torch.is_tensor(t)]
    if isinstance(inputs[0], torch.nn.utils.rnn.PackedSequence):
        leaves = [inputs[0].data] + leaves
    return outs + [t.grad for t in leaves] + [p.grad for p in module.parameters()]


# -- import ---------------------------------------------------------------------------------------

def test_import_cgru_does_not_import_torch():
    code = "import sys, cgru; cgru.GRU(2, 3)(__import__('numpy').zeros((1, 1, 2), 'f4')); " \
           "print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=HERE, check=True).stdout
    assert out.strip() == "False"


def test_is_a_torch_gru_with_torch_parameters():
    torch.manual_seed(3)
    reference = torch.nn.GRU(4, 6, 2, bidirectional=True)
    torch.manual_seed(3)
    bridge = ct.GRU(4, 6, 2, bidirectional=True)
    assert isinstance(bridge, torch.nn.GRU) and isinstance(ct.GRUCell(2, 3), torch.nn.GRUCell)
    assert list(bridge.state_dict()) == list(reference.state_dict())
    for (name, p), (_, q) in zip(bridge.named_parameters(), reference.named_parameters()):
        assert isinstance(p, torch.nn.Parameter) and torch.equal(p, q), name
    bridge(torch.zeros(3, 2, 4))
    assert list(bridge.state_dict()) == list(reference.state_dict())  # engine not registered
    assert len(list(bridge.parameters())) == len(list(reference.parameters()))
    assert repr(bridge) == repr(reference)


# -- parity ---------------------------------------------------------------------------------------

CONFIGS = [dict(num_layers=1, bias=True, bidirectional=False),
           dict(num_layers=2, bias=False, bidirectional=True),
           dict(num_layers=3, bias=True, bidirectional=True)]
LAYOUTS = ["dense", "batch_first", "unbatched", "packed_sorted", "packed_unsorted"]


def make_call(layout, config, dtype, with_hx, seed=0):
    """A function returning fresh leaf inputs (input [, hx]) for this layout."""
    gen = torch.Generator().manual_seed(seed)
    L, N, I, H = 5, 3, 4, 6
    D = (2 if config["bidirectional"] else 1) * config["num_layers"]
    x = torch.randn(L, N, I, generator=gen, dtype=dtype)
    hx = torch.randn(D, N, H, generator=gen, dtype=dtype)
    lengths = torch.tensor([5, 4, 2] if layout == "packed_sorted" else [2, 5, 3])

    def inputs():
        h = hx.clone().requires_grad_() if with_hx else None
        if layout == "batch_first":
            inp = x.transpose(0, 1).contiguous().requires_grad_()
        elif layout == "unbatched":
            inp = x[:, 0].clone().requires_grad_()
            h = hx[:, 0].clone().requires_grad_() if with_hx else None
        elif layout.startswith("packed"):
            packed = pack_padded_sequence(x, lengths, enforce_sorted=layout == "packed_sorted")
            inp = PackedSequence(packed.data.clone().requires_grad_(), packed.batch_sizes,
                                 packed.sorted_indices, packed.unsorted_indices)
        else:
            inp = x.clone().requires_grad_()
        return (inp, h) if with_hx else (inp,)
    return inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", CONFIGS, ids=["1l", "2l-bi-nobias", "3l-bi"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
def test_gru_parity_outputs_and_gradients(dtype, config, layout, with_hx):
    reference, bridge = twins(4, 6, dtype=dtype, batch_first=layout == "batch_first", **config)
    inputs = make_call(layout, config, dtype, with_hx)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        out, h_n = reference(*inputs())
    out = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
    weights = [torch.randn(out.shape, generator=gen, dtype=dtype),
               torch.randn(h_n.shape, generator=gen, dtype=dtype)]
    want = results_and_grads(reference, inputs, weights)
    got = results_and_grads(bridge, inputs, weights)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_close(g, w, dtype)


def test_packed_output_is_a_torch_packed_sequence_in_callers_order():
    reference, bridge = twins(3, 4, 2)
    seqs = [torch.randn(n, 3) for n in (2, 6, 4)]
    packed = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    hx = torch.randn(2, 3, 4)
    got, got_h = bridge(packed, hx)
    want, want_h = reference(packed, hx)
    assert isinstance(got, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(got.batch_sizes, want.batch_sizes)
    assert torch.equal(got.sorted_indices, want.sorted_indices)
    assert torch.equal(got.unsorted_indices, want.unsorted_indices)
    assert_close(got.data, want.data.detach(), torch.float32)
    assert_close(got_h, want_h.detach(), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
def test_cell_parity_outputs_and_gradients(dtype, bias, batched, with_hx):
    reference, bridge = twins(4, 5, bias=bias, dtype=dtype, cell=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn((3, 4) if batched else (4,), generator=gen, dtype=dtype)
    hx = torch.randn((3, 5) if batched else (5,), generator=gen, dtype=dtype)
    weight = torch.randn(hx.shape, generator=gen, dtype=dtype)

    def inputs():
        return (x.clone().requires_grad_(),) + ((hx.clone().requires_grad_(),) if with_hx
                                                else ())
    want = results_and_grads(reference, inputs, [weight])
    got = results_and_grads(bridge, inputs, [weight])
    for g, w in zip(got, want):
        assert_close(g, w, dtype)


def test_non_contiguous_input_and_hx():
    reference, bridge = twins(4, 6, 2, dtype=torch.float64)
    x = torch.randn(3, 5, 4, dtype=torch.float64).transpose(0, 1)     # (5, 3, 4) strided
    hx = torch.randn(3, 2, 6, dtype=torch.float64).transpose(0, 1)
    for got, want in zip(bridge(x, hx), reference(x, hx)):
        assert_close(got.detach(), want.detach(), torch.float64)


# -- gradients: only those asked for; gradcheck; no double backward ------------------------------

def test_only_the_gradients_autograd_asks_for():
    reference, bridge = twins(4, 6, 2)
    for module in (reference, bridge):
        module.weight_ih_l0.requires_grad_(False)
    x = torch.randn(5, 3, 4)                 # needs no gradient
    hx = torch.randn(2, 3, 6, requires_grad=True)
    got = torch.autograd.grad(bridge(x, hx)[0].sum(), [hx, bridge.weight_hh_l1])
    want = torch.autograd.grad(reference(x, hx)[0].sum(), [hx, reference.weight_hh_l1])
    for g, w in zip(got, want):
        assert_close(g, w, torch.float32)
    bridge(x, hx)[1].sum().backward()
    assert bridge.weight_ih_l0.grad is None and x.grad is None
    assert bridge.weight_hh_l0.grad is not None


def test_gradcheck_float64():
    gru = ct.GRU(3, 4, 2, bidirectional=True, dtype=torch.float64)
    cell = ct.GRUCell(3, 4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    names, params = zip(*gru.named_parameters())

    def with_params(module, names):
        # gradcheck perturbs its inputs through .data, unseen by the version counter the
        # bridge watches: hand the module fresh copies instead
        return lambda x, hx, *p: torch.func.functional_call(
            module, {n: q.clone() for n, q in zip(names, p)}, (x, hx))
    assert torch.autograd.gradcheck(with_params(gru, names), [x, hx] + list(params))
    lengths = torch.tensor([4, 2])
    assert torch.autograd.gradcheck(
        lambda x, hx: gru(pack_padded_sequence(x, lengths), hx)[0].data, [x, hx])
    names, params = zip(*cell.named_parameters())
    assert torch.autograd.gradcheck(with_params(cell, names), [x[0], hx[0]] + list(params))


def test_double_backward_is_refused():
    gru = ct.GRU(3, 4, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(gru(x)[0].pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice|once_differentiable"):
        g.sum().backward()


def test_no_grad_and_inference_mode_run_without_tape():
    reference, bridge = twins(4, 6, 2)
    x = torch.randn(5, 3, 4, requires_grad=True)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            out, h_n = bridge(x)
            want, want_h = reference(x)
        assert out.grad_fn is None and not out.requires_grad
        assert_close(out, want, torch.float32)
        assert_close(h_n, want_h, torch.float32)


# -- parameters changed in place ------------------------------------------------------------------

def test_in_place_parameter_changes_are_seen_and_reload_only_then():
    reference, bridge = twins(4, 6, 2)
    x = torch.randn(5, 3, 4)
    bridge(x)
    engine = bridge.__dict__["_cgru_engine"]
    loads = []
    original = engine.load_state_dict
    engine.load_state_dict = lambda state, strict=True: (loads.append(sorted(state)),
                                                         original(state, strict))[1]
    bridge(x)
    assert loads == []                                  # nothing changed: no re-layout
    with torch.no_grad():
        for module in (reference, bridge):
            module.weight_hh_l1.mul_(0.5)
    assert_close(bridge(x)[0].detach(), reference(x)[0].detach(), torch.float32)
    assert loads == [["weight_hh_l1"]]                   # only what changed
    opt = torch.optim.SGD(bridge.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for module, o in ((bridge, opt), (reference, ref_opt)):
        module(x)[0].sum().backward()
        o.step()
    assert_close(bridge(x)[0].detach(), reference(x)[0].detach(), torch.float32)
    state = {k: v * 0.9 for k, v in reference.state_dict().items()}
    bridge.load_state_dict(state)
    reference.load_state_dict(state)
    assert_close(bridge(x)[0].detach(), reference(x)[0].detach(), torch.float32)


def test_dtype_and_device_moves_rebuild_and_other_dtypes_fall_back():
    reference, bridge = twins(4, 6)
    x = torch.randn(5, 3, 4)
    bridge(x)
    reference.double(), bridge.double()
    assert_close(bridge(x.double())[0].detach(), reference(x.double())[0].detach(),
                 torch.float64)
    reference.to(torch.bfloat16), bridge.to(torch.bfloat16)      # torch's own forward
    assert torch.equal(bridge(x.bfloat16())[0], reference(x.bfloat16())[0])
    assert _error(lambda: bridge(x)) == _error(lambda: reference(x)) is not None


# -- bad input: torch's own errors ----------------------------------------------------------------

def _error(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the exception type is what is compared
        return type(error), str(error)
    return None


@pytest.mark.parametrize("case", ["input_size", "hx_shape", "4d", "unbatched_3d_hx",
                                  "batched_2d_hx", "packed_hx", "cell_size", "cell_hx",
                                  "cell_3d", "dtype_mix"])
def test_bad_input_raises_torchs_errors(case):
    reference, bridge = twins(4, 6, 2)
    ref_cell, cell = twins(4, 6, cell=True)
    x = torch.randn(5, 3, 4)
    calls = {
        "input_size": lambda m, c: m(torch.randn(5, 3, 7)),
        "hx_shape": lambda m, c: m(x, torch.randn(2, 2, 6)),
        "4d": lambda m, c: m(torch.randn(5, 3, 4, 1)),
        "unbatched_3d_hx": lambda m, c: m(x[:, 0], torch.randn(2, 1, 6)),
        "batched_2d_hx": lambda m, c: m(x, torch.randn(2, 6)),
        "packed_hx": lambda m, c: m(pack_padded_sequence(x, torch.tensor([5, 4, 2])),
                                    torch.randn(2, 2, 6)),
        "cell_size": lambda m, c: c(torch.randn(3, 5)),
        "cell_hx": lambda m, c: c(torch.randn(3, 4), torch.randn(2, 6)),
        "cell_3d": lambda m, c: c(torch.randn(1, 3, 4)),
        "dtype_mix": lambda m, c: m(x, torch.randn(2, 3, 6, dtype=torch.float64)),
    }
    want = _error(lambda: calls[case](reference, ref_cell))
    assert want is not None
    assert _error(lambda: calls[case](bridge, cell)) == want


# -- modules in models: convert, training, persistence --------------------------------------------

class Classifier(torch.nn.Module):
    def __init__(self, vocab=20, embed=8, hidden=16, classes=3, bidirectional=True):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, embed)
        self.gru = torch.nn.GRU(embed, hidden, 2, batch_first=True, bidirectional=bidirectional)
        self.head = torch.nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, tokens):
        _, h_n = self.gru(self.embed(tokens))
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))


def train_losses(model, steps=25, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        tokens = torch.randint(0, 20, (8, 12), generator=gen)
        labels = tokens[:, 0] % 3                  # learnable: the first token decides
        loss = torch.nn.functional.cross_entropy(model(tokens), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


def test_convert_keeps_parameters_and_optimizer():
    torch.manual_seed(0)
    model = Classifier()
    plain = copy.deepcopy(model)
    params = {name: p for name, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    assert ct.convert(model) is model
    assert type(model.gru) is ct.GRU and isinstance(model.gru, torch.nn.GRU)
    assert all(p is params[name] for name, p in model.named_parameters())
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    tokens = torch.randint(0, 20, (4, 7))
    labels = torch.tensor([0, 1, 2, 1])
    for m, o in ((model, opt), (plain, plain_opt)):
        for _ in range(3):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(tokens), labels).backward()
            o.step()
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert float((p - q).detach().abs().max()) < 1e-5, name
    cell = torch.nn.GRUCell(3, 4)
    assert type(ct.convert(cell)) is ct.GRUCell
    assert_close(cell(torch.ones(2, 3)), torch.nn.GRUCell.forward(cell, torch.ones(2, 3)),
                 torch.float32)


def test_training_loop_loss_curve_equals_pytorch():
    torch.manual_seed(0)
    plain = Classifier()
    bridged = ct.convert(copy.deepcopy(plain))
    want = train_losses(plain)
    got = train_losses(bridged)
    assert want[-1] < want[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=0)


def test_state_dict_pickle_deepcopy_and_torch_save():
    reference, bridge = twins(4, 6, 2, bidirectional=True)
    x = torch.randn(5, 3, 4)
    want = reference(x)[0].detach()
    bridge(x)                                       # the engine exists, and must not travel
    plain = torch.nn.GRU(4, 6, 2, bidirectional=True)
    plain.load_state_dict(bridge.state_dict())
    assert_close(plain(x)[0].detach(), want, torch.float32)
    buffer = io.BytesIO()
    torch.save(bridge, buffer)
    buffer.seek(0)
    copies = [pickle.loads(pickle.dumps(bridge)), copy.deepcopy(bridge),
              torch.load(buffer, weights_only=False)]
    for other in copies:
        assert type(other) is ct.GRU and "_cgru_engine" not in other.__dict__
        assert_close(other(x)[0].detach(), want, torch.float32)
        with torch.no_grad():
            other.weight_hh_l0.zero_()                 # its own Parameters
    assert_close(bridge(x)[0].detach(), want, torch.float32)


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    reference, bridge = twins(4, 6, 3, dropout=0.5)
    x = torch.randn(5, 3, 4)
    bridge.eval(), reference.eval()
    assert_close(bridge(x)[0].detach(), reference(x)[0].detach(), torch.float32)
    bridge.train()
    first, second = bridge(x)[0], bridge(x)[0]
    assert not torch.equal(first, second)           # fresh masks per call
    torch.manual_seed(5)
    a = copy.deepcopy(bridge)(x)[0]
    torch.manual_seed(5)
    b = copy.deepcopy(bridge)(x)[0]
    assert torch.equal(a, b)                        # seeded from torch's generator
    # dropout=1 drops every unit between layers: deterministic, so comparable to torch
    reference, bridge = twins(4, 6, 2, dropout=1.0)
    reference.train(), bridge.train()
    inputs = make_call("dense", dict(bidirectional=False, num_layers=2), torch.float32, True)
    weights = [torch.randn(5, 3, 6), torch.randn(2, 3, 6)]
    for g, w in zip(results_and_grads(bridge, inputs, weights),
                    results_and_grads(reference, inputs, weights)):
        assert_close(g, w, torch.float32)


# -- threads --------------------------------------------------------------------------------------

def test_threads_follow_torch_unless_cgru_count_was_set():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with ct._threads() as n:
            assert n == 1
        with cgru.use_threads(cgru.get_num_threads() + 2):
            with ct._threads() as n:
                assert n == cgru.get_num_threads()
        torch.set_num_threads(2)
        reference, bridge = twins(4, 6, 2)
        x = torch.randn(5, 9, 4)
        two = bridge(x)[0]
        torch.set_num_threads(1)
        assert torch.equal(bridge(x)[0], two)
    finally:
        torch.set_num_threads(before)


# -- DistributedDataParallel ----------------------------------------------------------------------

DDP_WORKER = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, os.environ["CGRU_ROOT"])
import cgru.torch as ct
rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
torch.manual_seed(0)
model = ct.GRU(4, 6, 2, bidirectional=True)
x = torch.randn(5, 8, 4)
ddp = torch.nn.parallel.DistributedDataParallel(model)
ddp(x[:, rank * 4:(rank + 1) * 4])[0].pow(2).mean().backward()
if rank == 0:
    torch.save({n: p.grad for n, p in model.named_parameters()}, out)
# both ranks done before either tears gloo down: a rank that destroyed its group while the
# other's was still connected died in std::terminate once in CI
dist.barrier()
dist.destroy_process_group()
"""


def test_distributed_data_parallel_gradients_equal_single_process(tmp_path):
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script, out = tmp_path / "worker.py", tmp_path / "grads.pt"
    script.write_text(DDP_WORKER)
    env = dict(os.environ, CGRU_ROOT=PACKAGE_ROOT, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(port), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(2)]
    try:
        logs = [p.communicate(timeout=60)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    got = torch.load(out)
    torch.manual_seed(0)
    model = torch.nn.GRU(4, 6, 2, bidirectional=True)
    x = torch.randn(5, 8, 4)
    model(x)[0].pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert_close(got[name], p.grad, torch.float32)


# -- torch.compile --------------------------------------------------------------------------------

def _compile_or_skip(model, **kwargs):
    try:
        compiled = torch.compile(model, backend="aot_eager", **kwargs)
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"torch.compile is not available here: {error}")
    return compiled


@pytest.mark.parametrize("allow_rnn", [False, True], ids=["default", "allow_rnn"])
def test_torch_compile(allow_rnn):
    """Default config: dynamo leaves any torch.nn.GRU subclass to eager code (its RNN rule), and
    the bridge runs there; with torch._dynamo.config.allow_rnn the bridge's custom operators
    make one graph (fullgraph=True)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    plain = Classifier()
    model = ct.convert(copy.deepcopy(plain))
    tokens = torch.randint(0, 20, (4, 9))
    with torch._dynamo.config.patch(allow_rnn=allow_rnn):
        compiled = _compile_or_skip(model, fullgraph=allow_rnn)
        try:
            out = compiled(tokens)
        except Exception as error:  # noqa: BLE001
            if "compiler" in str(error).lower() and "cgru" not in str(error):
                pytest.skip(f"torch.compile cannot run here: {error}")
            raise
        out.sum().backward()
        plain(tokens).sum().backward()
        assert_close(out.detach(), plain(tokens).detach(), torch.float32)
        for (name, p), q in zip(model.named_parameters(), plain.parameters()):
            assert_close(p.grad, q.grad, torch.float32)
        with torch.no_grad():
            model.gru.weight_hh_l0.mul_(0.5)
            plain.gru.weight_hh_l0.mul_(0.5)
            assert_close(compiled(tokens), plain(tokens), torch.float32)
        if allow_rnn:
            explanation = torch._dynamo.explain(model)(tokens)
            assert explanation.graph_break_count == 0
    del out
    assert ct._tapes == {}                      # no tape outlives its graph


def test_torch_compile_cell_in_a_loop():
    torch._dynamo.reset()
    reference, cell = twins(3, 5, cell=True)
    xs = torch.randn(4, 2, 3, requires_grad=True)

    def unroll(module, xs):
        h = None
        for x in xs:
            h = module(x, h)
        return h

    compiled = _compile_or_skip(lambda xs: unroll(cell, xs), fullgraph=True)
    got = compiled(xs)
    (got_grad,) = torch.autograd.grad(got.sum(), xs)
    want = unroll(reference, xs)
    (want_grad,) = torch.autograd.grad(want.sum(), xs)
    assert_close(got, want, torch.float32)
    assert_close(got_grad, want_grad, torch.float32)
    with torch.no_grad():
        assert_close(compiled(xs), unroll(reference, xs), torch.float32)


def test_readme_example_runs():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    code = text[text.index("## cgru inside PyTorch"):].split("```python\n", 1)[1]
    code = code.split("```", 1)[0]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT), cwd=HERE, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("GRU True loss ")
