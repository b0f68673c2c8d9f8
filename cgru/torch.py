"""cgru inside PyTorch: drop-in torch.nn.GRU and torch.nn.GRUCell that run cgru's kernels.

    import cgru.torch
    gru = cgru.torch.GRU(64, 128, num_layers=2, batch_first=True)   # a torch.nn.GRU
    model = cgru.torch.convert(model)        # or swap the GRUs of an existing model in place

Importing this module imports torch (``import cgru`` never does). The classes subclass
torch.nn.GRU / torch.nn.GRUCell and keep their Parameters exactly (names, shapes,
initialisation, state_dict, optimizers, pickle, deepcopy, torch.save, DDP). Only ``forward``
changes:

* CPU tensors of float32 or float64 (input, hx and every parameter of one dtype): cgru's
  forward, through NumPy views of the tensors (no copy where none is needed). When autograd
  needs gradients, a ``torch.autograd.Function`` runs cgru's ``vjp`` and, on the way back, its
  ``backward``, computing only the gradients autograd asks for (``ctx.needs_input_grad``).
  Under ``torch.no_grad()`` / ``torch.inference_mode()`` it is the plain forward, no tape.
* Anything else (other devices or dtypes, mixed dtypes, empty batches, tensor subclasses,
  shapes torch.nn.GRU rejects) runs torch's own ``super().forward``, so bad input gets torch's
  own exceptions and messages.

Design:
    * The cgru module ("engine") is a plain attribute, not a submodule: it never appears in
      ``state_dict`` or ``parameters()``, and pickling leaves it out (it is rebuilt on first
      use). Its weights are reloaded from the torch Parameters when a Parameter's
      ``(data_ptr, _version)`` changes (an optimizer step, an in-place edit, ``load_state_dict``,
      ``.to()``), only for the changed ones, and only then: cgru re-lays out just those layers.
    * Gradients map one to one: the Function's inputs are (input or packed data, hx,
      *parameters in ``_flat_weights_names`` order); cgru's backward dict holds "input", "hx"
      and every parameter by that same name. A gradient autograd does not need is returned as
      None, and the first layer's input gradient is not computed at all when the input needs
      none (backward's ``input_grad=False``).
    * Threads: cgru runs ``torch.get_num_threads()`` threads, so ``torch.set_num_threads``
      governs both, unless cgru's own count was set to something other than its default
      (``cgru.set_num_threads(n)`` or a ``with cgru.use_threads(n):`` block): then cgru's wins.
    * Double backward (``create_graph=True``) is refused with a RuntimeError
      (``once_differentiable``), never answered wrongly.
    * ``torch.compile``: the bridge is registered as custom operators (``cgru::gru``,
      ``cgru::gru_backward``, ``cgru::gru_cell``, ``cgru::gru_cell_backward``) with fake
      implementations and ``register_autograd``, so a compiled model calls them without a
      graph break (see _compiled_gru).
    * Dropout masks (training mode, dropout > 0, between layers) come from cgru's generator,
      seeded from torch's global generator when the module first runs with dropout, so
      ``torch.manual_seed`` makes them reproducible; they are not torch's masks.
"""
import itertools
import os
import threading
import weakref
from typing import List, Optional

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence as TorchPackedSequence

import cgru

__all__ = ["GRU", "GRUCell", "convert"]

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_sync_lock = threading.Lock()


# -- threads -------------------------------------------------------------------------------------

def _cgru_default_threads():
    """cgru's documented default count: OMP_NUM_THREADS when set, else the usable cores."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Read once, at import (2 us a call on a busy 2-core machine): a later change of
# OMP_NUM_THREADS then counts as a count of cgru's own, and wins.
_CGRU_DEFAULT_THREADS = _cgru_default_threads()


def _threads():
    """cgru.use_threads(torch's count), unless the user gave cgru a count of its own."""
    current = cgru.get_num_threads()
    if current != _CGRU_DEFAULT_THREADS:
        return cgru.use_threads(current)
    return cgru.use_threads(max(1, torch.get_num_threads()))


# -- tensors <-> arrays --------------------------------------------------------------------------

def _array(tensor):
    """A NumPy view of a CPU tensor (strided views stay views; cgru copies only if it must)."""
    return None if tensor is None else tensor.detach().numpy()


def _tensor(array):
    return torch.from_numpy(array) if array.flags.writeable else torch.from_numpy(array.copy())


_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _plain(tensor):
    """None, or a CPU tensor of the plain classes (no subclass, no FakeTensor), strided.
    (is_cpu: 0.1 us; tensor.device.type, which builds a device object: 1 us.)"""
    return tensor is None or (type(tensor) in _PLAIN_TYPES and tensor.is_cpu
                              and tensor.layout is torch.strided)


def _run_backward(backward, grads, input_grad):
    """cgru's backward on the upstream gradients; the input's gradient only when wanted."""
    return backward(*grads, input_grad=input_grad)


# -- the engine: a cgru module kept in step with the torch Parameters ----------------------------

def _engine(module, params, dtype):
    """module's cgru twin, its weights reloaded from those Parameters that changed since."""
    state = module.__dict__
    with _sync_lock:
        engine = state.get("_cgru_engine")
        np_dtype = np.dtype(_DTYPES[dtype])
        if engine is None or engine.dtype != np_dtype:
            engine = module._cgru_new_engine(np_dtype)
            state["_cgru_engine"], state["_cgru_versions"] = engine, {}
        versions = state["_cgru_versions"]
        changed = {}
        for name, param in params:
            seen = versions.get(name)
            # the same tensor object (a freed one's address may be reused), storage, version
            if seen is None or seen[0]() is not param or seen[1:] != (param.data_ptr(),
                                                                       param._version):
                changed[name] = _array(param)
                versions[name] = (weakref.ref(param), param.data_ptr(), param._version)
        if changed:
            engine.load_state_dict(changed, strict=False)
        return engine


def _dropout_seed(module):
    """A seed for the engine's dropout generator, drawn from torch's global generator (only
    when dropout can act, so models without dropout leave torch's random stream alone)."""
    if getattr(module, "dropout", 0) and module.num_layers > 1:
        return int(torch.empty((), dtype=torch.int64).random_().item())
    return None


class _BridgeState:
    """Pickling and copying leave the engine out: it is rebuilt from the Parameters."""

    _CGRU_KEYS = ("_cgru_engine", "_cgru_versions")

    def __getstate__(self):
        state = super().__getstate__()
        return {k: v for k, v in (state or self.__dict__).items()
                if k not in self._CGRU_KEYS and k != "_cgru_key"}

    def __setstate__(self, state):
        super().__setstate__(state)
        _register(self)

    def _cgru_forget(self):
        for key in self._CGRU_KEYS:
            self.__dict__.pop(key, None)

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        self._cgru_forget()        # .to(), .double(), .cuda(): rebuild from the new tensors
        return result


# -- autograd ------------------------------------------------------------------------------------

def _grad_tensors(grads, param_names, needs):
    """Tensors for (input, hx, *params) from cgru's dict, None where autograd needs none."""
    keys = ("input", "hx") + tuple(param_names)
    return tuple(_tensor(grads[k]) if need else None for k, need in zip(keys, needs))


class _Call:
    """One forward call's engine and layout, handed to the autograd Function."""

    def __init__(self, engine, packed, threads):
        self.engine, self.packed, self.threads = engine, packed, threads

    def _input(self, x):
        x = _array(x)
        if self.packed is not None:
            batch_sizes, sorted_indices, unsorted_indices = self.packed
            x = cgru.PackedSequence(x, _array(batch_sizes), _array(sorted_indices),
                                    _array(unsorted_indices))
        return x

    def run(self, x, hx):
        with self.threads():
            output, h_n = self.engine(self._input(x), _array(hx))
        return self._result(output, h_n)

    def vjp(self, x, hx):
        with self.threads():
            (output, h_n), backward = self.engine.vjp(self._input(x), _array(hx))
        output, h_n = self._result(output, h_n)

        def threaded_backward(*grads, input_grad=True):
            with self.threads():
                return _run_backward(backward, grads, input_grad)
        return (output, h_n), threaded_backward

    def _result(self, output, h_n):
        if self.packed is not None:
            output = output.data
        return _tensor(output), _tensor(h_n)


def _needs_grad(tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# -- the modules ---------------------------------------------------------------------------------

class GRU(_BridgeState, torch.nn.GRU):
    """torch.nn.GRU whose forward runs cgru on CPU float32/float64 tensors (see cgru.torch).

    Same arguments, Parameters, initialisation and results as torch.nn.GRU (no ``proj_size``:
    torch's GRU has none either). Shapes, with D = 2 if bidirectional else 1:
        input  (L, N, H_in), (N, L, H_in) if batch_first, (L, H_in) unbatched, or a
               torch.nn.utils.rnn.PackedSequence (sorted or not)
        hx     (D*num_layers, N, H) or (D*num_layers, H); zeros when None
        output (L, N, D*H) / (N, L, D*H) / (L, D*H), or a PackedSequence; h_n like hx
    where:
        L sequence length, N batch, H_in = input_size, H = hidden_size.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype)
        _register(self)

    def _cgru_new_engine(self, dtype):
        return cgru.GRU(self.input_size, self.hidden_size, self.num_layers, bias=self.bias,
                        batch_first=self.batch_first, dropout=0.0,
                        bidirectional=self.bidirectional, dtype=dtype,
                        seed=_dropout_seed(self))

    def _cgru_params(self):
        # straight from _parameters: Module.__getattr__ costs 1-2 us a name
        params = self._parameters
        return [(name, params[name]) for name in self._flat_weights_names]

    def _cgru_plan(self, input, hx):
        """(data, hx, packed, params) when cgru can run this call, else None (torch runs it)."""
        if getattr(self, "proj_size", 0) or not isinstance(self.num_layers, int):
            return None
        packed = None
        if isinstance(input, TorchPackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            if data.dim() != 2 or not all(_plain(t) for t in (batch_sizes, sorted_indices,
                                                             unsorted_indices)):
                return None
            batch = int(batch_sizes[0]) if batch_sizes.numel() else 0
            batched = True
            packed = (batch_sizes, sorted_indices, unsorted_indices)
        else:
            data = input
            if not isinstance(data, torch.Tensor) or data.dim() not in (2, 3):
                return None
            batched = data.dim() == 3
            batch = (data.shape[0] if self.batch_first else data.shape[1]) if batched else 1
        if data.shape[-1] != self.input_size or data.numel() == 0 or batch == 0:
            return None
        params = self._cgru_params()
        if data.dtype not in _DTYPES or not _plain(data) or not _plain(hx):
            return None
        if any(not _plain(p) or p.dtype != data.dtype for _, p in params):
            return None
        d = 2 if self.bidirectional else 1
        state = (d * self.num_layers, batch, self.hidden_size) if batched else \
            (d * self.num_layers, self.hidden_size)
        if hx is not None and (tuple(hx.shape) != state or hx.dtype != data.dtype):
            return None
        return data, hx, packed, params

    def forward(self, input, hx=None):
        plan = self._cgru_plan(input, hx)
        if plan is None:
            return super().forward(input, hx)
        data, hx, packed, params = plan
        if torch.compiler.is_compiling():
            output, h_n = _compiled_gru(self, data, hx, packed, params)
        else:
            output, h_n = _eager_gru(self, data, hx, packed, params)
        if packed is not None:
            return TorchPackedSequence(output, *packed), h_n
        return output, h_n


@torch.compiler.disable     # NumPy calls: never traced, even between compiled graphs (1 us)
def _eager_gru(module, data, hx, packed, params):
    """(output or packed output data, h_n) of module, through the autograd Function when a
    gradient is needed."""
    engine = _engine(module, params, data.dtype)
    engine.train(module.training)
    engine.dropout = module.dropout if module.num_layers > 1 else 0.0
    call = _Call(engine, packed, _threads)
    tensors = [p for _, p in params]
    if _needs_grad([data, hx] + tensors):
        return _GRUApply.apply(call, [name for name, _ in params], data, hx, *tensors)
    return call.run(data, hx)


class _GRUApply(torch.autograd.Function):
    """(call, names, input or packed data, hx, *params) -> (output [data], h_n)."""

    @staticmethod
    def forward(ctx, call, names, x, hx, *params):
        (output, h_n), ctx.cgru_backward = call.vjp(x, hx)
        ctx.cgru_names = names
        ctx.set_materialize_grads(False)
        return output, h_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, grad_h_n):
        needs = ctx.needs_input_grad[2:]
        grads = ctx.cgru_backward(_array(grad_output), _array(grad_h_n), input_grad=needs[0])
        return (None, None) + _grad_tensors(grads, ctx.cgru_names, needs)


class GRUCell(_BridgeState, torch.nn.GRUCell):
    """torch.nn.GRUCell whose forward runs cgru on CPU float32/float64 tensors.

    input (N, H_in) or unbatched (H_in,); hx and the result (N, H) or (H,); zeros when hx is
    None. Same Parameters as torch.nn.GRUCell: weight_ih (3*H, H_in), weight_hh (3*H, H),
    bias_ih, bias_hh (3*H,).
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        _register(self)

    def _cgru_new_engine(self, dtype):
        return cgru.GRUCell(self.input_size, self.hidden_size, bias=self.bias, dtype=dtype)

    def _cgru_params(self):
        params = self._parameters
        return [(name, params[name]) for name in
                (("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.bias else
                 ("weight_ih", "weight_hh"))]

    def _cgru_plan(self, input, hx):
        if not isinstance(input, torch.Tensor) or input.dim() not in (1, 2):
            return None
        if input.shape[-1] != self.input_size or input.numel() == 0:
            return None
        params = self._cgru_params()
        if input.dtype not in _DTYPES or not _plain(input) or not _plain(hx):
            return None
        if any(not _plain(p) or p.dtype != input.dtype for _, p in params):
            return None
        state = (input.shape[0], self.hidden_size) if input.dim() == 2 else (self.hidden_size,)
        if hx is not None and (tuple(hx.shape) != state or hx.dtype != input.dtype):
            return None
        return input, hx, params

    def forward(self, input, hx=None):
        plan = self._cgru_plan(input, hx)
        if plan is None:
            return super().forward(input, hx)
        input, hx, params = plan
        if torch.compiler.is_compiling():
            return _compiled_cell(self, input, hx, params)
        return _eager_cell(self, input, hx, params)


@torch.compiler.disable
def _eager_cell(module, input, hx, params):
    call = _CellCall(_engine(module, params, input.dtype), _threads)
    tensors = [p for _, p in params]
    if _needs_grad([input, hx] + tensors):
        return _CellApply.apply(call, [name for name, _ in params], input, hx, *tensors)
    return call.run(input, hx)


class _CellCall:
    def __init__(self, engine, threads):
        self.engine, self.threads = engine, threads

    def run(self, x, hx):
        with self.threads():
            return _tensor(self.engine(_array(x), _array(hx)))

    def vjp(self, x, hx):
        with self.threads():
            h1, backward = self.engine.vjp(_array(x), _array(hx))

        def threaded_backward(grad_h1, input_grad=True):
            with self.threads():
                return _run_backward(backward, (grad_h1,), input_grad)
        return _tensor(h1), threaded_backward


class _CellApply(torch.autograd.Function):
    """(call, names, input, hx, *params) -> h1."""

    @staticmethod
    def forward(ctx, call, names, x, hx, *params):
        h1, ctx.cgru_backward = call.vjp(x, hx)
        ctx.cgru_names = names
        ctx.set_materialize_grads(False)
        return h1

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h1):
        needs = ctx.needs_input_grad[2:]
        grads = ctx.cgru_backward(_array(grad_h1), input_grad=needs[0])
        return (None, None) + _grad_tensors(grads, ctx.cgru_names, needs)


# -- convert -------------------------------------------------------------------------------------

def convert(module):
    """Swap every torch.nn.GRU and torch.nn.GRUCell in module (module itself included) for
    cgru.torch's, in place, keeping the same Parameter objects (an optimizer built before
    still drives them). Returns module. Subclasses of GRU/GRUCell other than the plain ones,
    and modules with proj_size, are left alone."""
    for child in itertools.chain([module], module.modules()):
        if type(child) is torch.nn.GRU and not getattr(child, "proj_size", 0):
            child.__class__ = GRU
            _register(child)
        elif type(child) is torch.nn.GRUCell:
            child.__class__ = GRUCell
            _register(child)
    return module


# -- torch.compile: the same calls as custom operators --------------------------------------------
# Dynamo cannot trace NumPy calls on tensors, so under torch.compile the bridge calls custom
# operators instead of the autograd Function. Operators take tensors and plain values only:
# the module is named by a registry key (an int fixed per module, a constant in the graph), and
# the forward's tape (cgru's backward closure) waits in _tapes under a token, an int64 scalar
# tensor the forward returns and autograd saves for the backward operator. The tape is dropped
# when that tensor is freed with the graph (weakref.finalize), used or not.

_modules = weakref.WeakValueDictionary()
_module_keys = itertools.count()
_tapes = {}
_tape_tokens = itertools.count()


def _register(module):
    key = next(_module_keys)
    module.__dict__["_cgru_key"] = key
    _modules[key] = module
    return key


def _store_tape(backward):
    token = next(_tape_tokens)
    _tapes[token] = backward
    tensor = torch.tensor(token, dtype=torch.int64)
    weakref.finalize(tensor, _tapes.pop, token, None)
    return tensor


def _op_params(module, params):
    return list(zip((name for name, _ in module._cgru_params()), params))


@torch.library.custom_op("cgru::gru", mutates_args=())
def _gru_op(input: torch.Tensor, hx: Optional[torch.Tensor], params: List[torch.Tensor],
            key: int, training: bool, tape: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor]:
    module = _modules[key]
    engine = _engine(module, _op_params(module, params), input.dtype)
    engine.train(training)
    engine.dropout = module.dropout if module.num_layers > 1 else 0.0
    call = _Call(engine, None, _threads)
    if not tape:
        output, h_n = call.run(input, hx)
        return output, h_n, torch.tensor(-1, dtype=torch.int64)
    (output, h_n), backward = call.vjp(input, hx)
    return output, h_n, _store_tape(backward)


@_gru_op.register_fake
def _gru_fake(input, hx, params, key, training, tape):
    module = _modules[key]
    d = 2 if module.bidirectional else 1
    if input.dim() == 3:
        batch = input.shape[0] if module.batch_first else input.shape[1]
        state = (d * module.num_layers, batch, module.hidden_size)
    else:
        state = (d * module.num_layers, module.hidden_size)
    output = input.new_empty(tuple(input.shape[:-1]) + (d * module.hidden_size,))
    return output, input.new_empty(state), torch.empty((), dtype=torch.int64)


@torch.library.custom_op("cgru::gru_cell", mutates_args=())
def _cell_op(input: torch.Tensor, hx: Optional[torch.Tensor], params: List[torch.Tensor],
             key: int, tape: bool) -> tuple[torch.Tensor, torch.Tensor]:
    module = _modules[key]
    call = _CellCall(_engine(module, _op_params(module, params), input.dtype), _threads)
    if not tape:
        return call.run(input, hx), torch.tensor(-1, dtype=torch.int64)
    h1, backward = call.vjp(input, hx)
    return h1, _store_tape(lambda grad_h1, _unused, input_grad=True:
                           backward(grad_h1, input_grad=input_grad))


@_cell_op.register_fake
def _cell_fake(input, hx, params, key, tape):
    module = _modules[key]
    return (input.new_empty(tuple(input.shape[:-1]) + (module.hidden_size,)),
            torch.empty((), dtype=torch.int64))


@torch.library.custom_op("cgru::gru_backward", mutates_args=())
def _backward_op(token: torch.Tensor, grad_a: Optional[torch.Tensor],
                 grad_b: Optional[torch.Tensor], input: torch.Tensor,
                 hx: Optional[torch.Tensor], params: List[torch.Tensor], key: int,
                 input_grad: bool) -> List[torch.Tensor]:
    """[d input (empty when not input_grad), d hx (empty when hx is None), d params...]."""
    backward = _tapes.get(int(token))
    if backward is None:
        raise RuntimeError("cgru.torch: the forward pass's saved state is gone (backward "
                           "called after the graph was freed?)")
    grads = backward(_array(grad_a), _array(grad_b), input_grad=input_grad)
    names = [name for name, _ in _modules[key]._cgru_params()]
    empty = input.new_empty(0)
    return [_tensor(grads["input"]) if input_grad else empty,
            _tensor(grads["hx"]) if hx is not None else empty.clone()] + \
        [_tensor(grads[name]) for name in names]


@_backward_op.register_fake
def _backward_fake(token, grad_a, grad_b, input, hx, params, key, input_grad):
    return [torch.empty_like(input) if input_grad else input.new_empty(0),
            torch.empty_like(hx) if hx is not None else input.new_empty(0)] + \
        [torch.empty_like(p) for p in params]


def _setup_gru(ctx, inputs, output):
    input, hx, params, key = inputs[:4]
    ctx.save_for_backward(output[-1], input, hx, *params)
    ctx.cgru_key = key


def _op_backward(ctx, grad_a, grad_b):
    token, input, hx, *params = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grads = torch.ops.cgru.gru_backward(token, grad_a, grad_b, input, hx, params,
                                        ctx.cgru_key, bool(needs[0]))
    return (grads[0] if needs[0] else None, grads[1] if hx is not None and needs[1] else None,
            grads[2:])


def _gru_backward(ctx, grad_output, grad_h_n, _grad_token):
    return _op_backward(ctx, grad_output, grad_h_n) + (None, None, None)


def _cell_backward(ctx, grad_h1, _grad_token):
    return _op_backward(ctx, grad_h1, None) + (None, None)


torch.library.register_autograd("cgru::gru", _gru_backward, setup_context=_setup_gru)
torch.library.register_autograd("cgru::gru_cell", _cell_backward, setup_context=_setup_gru)


def _compiled_gru(module, data, hx, packed, params):
    tensors = [p for _, p in params]
    if packed is not None:
        # Packed batches carry data-dependent sizes (batch_sizes[0]): a graph break
        return _eager_gru(module, data, hx, packed, params)
    output, h_n, _ = torch.ops.cgru.gru(data, hx, tensors, module._cgru_key, module.training,
                                        _needs_grad([data, hx] + tensors))
    return output, h_n


def _compiled_cell(module, input, hx, params):
    tensors = [p for _, p in params]
    h1, _ = torch.ops.cgru.gru_cell(input, hx, tensors, module._cgru_key,
                                    _needs_grad([input, hx] + tensors))
    return h1
