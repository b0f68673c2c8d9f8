"""A small, obviously-correct NumPy backward pass through time for the GRU; float64 throughout.

The companion of tests/reference.py (same conventions: padded time-major x (L, N, I) with
per-sequence lengths, output zero past each length, h_n at each sequence's own end, the reverse
direction starting at each sequence's own last element). Each step is differentiated by hand
from the documented equations::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

and the steps are walked back in the reverse of the order the forward pass took them, one
sequence at a time: no vectorisation over the batch, so that nothing can mix sequences.
"""
import numpy as np

from reference import _sigmoid


def _direction_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse):
    """One direction over padded x (L, N, I); returns (out (L, N, H), h_last (N, H), tape).

    tape[b] lists, in the order the steps ran, (t, h_prev, r, z, n, gh_n) for sequence b.
    """
    seq_len, batch, _ = x.shape
    hidden = w_hh.shape[1]
    out = np.zeros((seq_len, batch, hidden))
    h_last = np.array(h0, dtype=np.float64, copy=True)
    tape = []
    for b in range(batch):
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        h = h_last[b].copy()
        saved = []
        for t in steps:
            gi = w_ih @ x[t, b] + b_ih
            gh = w_hh @ h + b_hh
            r = _sigmoid(gi[:hidden] + gh[:hidden])
            z = _sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
            n = np.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
            saved.append((t, h, r, z, n, gh[2 * hidden:]))
            h = (1 - z) * n + z * h
            out[t, b] = h
        h_last[b] = h
        tape.append(saved)
    return out, h_last, tape


def _direction_backward(x, w_ih, w_hh, tape, grad_out, grad_h_last):
    """Gradients of sum(out * grad_out) + sum(h_last * grad_h_last) for one direction.

    Returns (dx (L, N, I), dh0 (N, H), dw_ih, dw_hh, db_ih, db_hh).
    """
    hidden = w_hh.shape[1]
    dx = np.zeros_like(x)
    dh0 = np.zeros_like(grad_h_last)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db_ih, db_hh = np.zeros(3 * hidden), np.zeros(3 * hidden)
    for b, saved in enumerate(tape):
        dh = grad_h_last[b].copy()            # d loss / d (the state after the last step run)
        for t, h_prev, r, z, n, gh_n in reversed(saved):
            dh = dh + grad_out[t, b]          # this step's h' is also out[t, b]
            dn = dh * (1 - z)
            dz = dh * (h_prev - n)
            dh_prev = dh * z
            da_n = dn * (1 - n * n)           # n = tanh(a_n), a_n = gi_n + r * gh_n
            da_r = (da_n * gh_n) * r * (1 - r)
            da_z = dz * z * (1 - z)
            d_gi = np.concatenate([da_r, da_z, da_n])
            d_gh = np.concatenate([da_r, da_z, da_n * r])
            dw_ih += np.outer(d_gi, x[t, b])
            dw_hh += np.outer(d_gh, h_prev)
            db_ih += d_gi
            db_hh += d_gh
            dx[t, b] += w_ih.T @ d_gi
            dh = dh_prev + w_hh.T @ d_gh
        dh0[b] = dh
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh


def _names(layer, direction):
    sfx = f"_l{layer}" + ("_reverse" if direction else "")
    return [f"weight_ih{sfx}", f"weight_hh{sfx}", f"bias_ih{sfx}", f"bias_hh{sfx}"]


def gru_reference_vjp(params, x, h0, num_layers, bidirectional, lengths=None,
                      grad_output=None, grad_h_n=None, dropout_masks=None):
    """Forward pass and vector-Jacobian product of a multi-layer GRU, in float64.

    Parameters
    ----------
    params : mapping of PyTorch names to arrays (no bias keys means bias=False)
    x : (L, N, H_in) padded, time-major
    h0 : (D*num_layers, N, H), or None for zeros
    lengths : N ints in 1..L, or None for all L
    grad_output : (L, N, D*H), or None for zeros; entries past a sequence's length are ignored
        (that output is the constant 0)
    grad_h_n : (D*num_layers, N, H), or None for zeros
    dropout_masks : None, or num_layers - 1 arrays (L, N, D*H): layer k's output is multiplied
        by dropout_masks[k] (already scaled by 1 / (1 - p)) before it enters layer k + 1

    Returns
    -------
    output (L, N, D*H), h_n (D*num_layers, N, H), grads : dict with "input" (L, N, H_in),
    "hx" (D*num_layers, N, H), then every parameter of params by its name, in
    weight_ih, weight_hh, bias_ih, bias_hh order per layer and direction (state_dict order).

    where L is the sequence length, N the batch size, H = hidden_size, D = 2 if bidirectional.
    """
    x = np.asarray(x, dtype=np.float64)
    seq_len, batch, _ = x.shape
    lengths = np.full(batch, seq_len) if lengths is None else np.asarray(lengths)
    dirs = 2 if bidirectional else 1
    has_bias = "bias_ih_l0" in params
    hidden = np.asarray(params["weight_hh_l0"]).shape[1]
    state_shape = (dirs * num_layers, batch, hidden)
    h0 = np.zeros(state_shape) if h0 is None else np.asarray(h0, dtype=np.float64)
    grad_h_n = np.zeros(state_shape) if grad_h_n is None else np.asarray(grad_h_n, np.float64)
    if dropout_masks is not None and len(dropout_masks) != num_layers - 1:
        raise ValueError(f"expected {num_layers - 1} dropout masks, got {len(dropout_masks)}")

    def weights(layer, d):
        w_ih, w_hh, b_ih, b_hh = (params.get(n) for n in _names(layer, d))
        w_ih = np.asarray(w_ih, dtype=np.float64)
        w_hh = np.asarray(w_hh, dtype=np.float64)
        zeros = np.zeros(w_ih.shape[0])
        b_ih = zeros if b_ih is None else np.asarray(b_ih, dtype=np.float64)
        b_hh = zeros if b_hh is None else np.asarray(b_hh, dtype=np.float64)
        return w_ih, w_hh, b_ih, b_hh

    # forward, keeping every layer's input and every direction's tape
    layer_inputs, tapes, h_n = [], [], []
    layer_input = x
    for layer in range(num_layers):
        layer_inputs.append(layer_input)
        outs = []
        for d in range(dirs):
            out, h_last, tape = _direction_forward(layer_input, h0[layer * dirs + d],
                                                   *weights(layer, d), lengths, bool(d))
            outs.append(out)
            h_n.append(h_last)
            tapes.append(tape)
        layer_output = np.concatenate(outs, axis=2)
        if dropout_masks is not None and layer < num_layers - 1:
            layer_input = layer_output * np.asarray(dropout_masks[layer], dtype=np.float64)
        else:
            layer_input = layer_output
    output = layer_input

    # backward, top layer first
    grad_above = np.zeros_like(output) if grad_output is None else \
        np.array(grad_output, dtype=np.float64, copy=True)
    grads_by_layer = [None] * num_layers
    grad_h0 = np.zeros(state_shape)
    for layer in range(num_layers - 1, -1, -1):
        if dropout_masks is not None and layer < num_layers - 1:
            grad_above = grad_above * np.asarray(dropout_masks[layer], dtype=np.float64)
        grad_input = np.zeros_like(layer_inputs[layer])
        per_direction = []
        for d in range(dirs):
            k = layer * dirs + d
            w_ih, w_hh, _, _ = weights(layer, d)
            dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _direction_backward(
                layer_inputs[layer], w_ih, w_hh, tapes[k],
                grad_above[:, :, d * hidden:(d + 1) * hidden], grad_h_n[k])
            grad_input += dx
            grad_h0[k] = dh0
            per_direction.append((dw_ih, dw_hh, db_ih, db_hh))
        grads_by_layer[layer] = per_direction
        grad_above = grad_input

    grads = {"input": grad_above, "hx": grad_h0}
    for layer in range(num_layers):
        for d in range(dirs):
            for name, value in zip(_names(layer, d), grads_by_layer[layer][d]):
                if has_bias or name.startswith("weight"):
                    grads[name] = value
    return output, np.stack(h_n), grads


def gru_cell_reference_vjp(params, x, h0, grad_h1):
    """One GRUCell step on x (N, H_in), h0 (N, H) or None; returns (h1, grads) with "input",
    "hx", "weight_ih", "weight_hh" (and "bias_ih", "bias_hh" when params has them)."""
    layer_params = {f"{k}_l0": v for k, v in params.items()}
    x = np.asarray(x, dtype=np.float64)[None]
    h0 = None if h0 is None else np.asarray(h0, dtype=np.float64)[None]
    grad_h1 = None if grad_h1 is None else np.asarray(grad_h1, dtype=np.float64)[None]
    _, h_n, grads = gru_reference_vjp(layer_params, x, h0, 1, False, grad_h_n=grad_h1)
    out = {"input": grads["input"][0], "hx": grads["hx"][0]}
    out.update({k[:-3]: v for k, v in grads.items() if k.endswith("_l0")})
    return h_n[0], out


# Scale-relative tolerances for gradients: max|actual - expected| <= tol * max(1, max|expected|).
# A gradient sums many products, so its absolute error grows with its size; a bug makes an
# error of the order of the gradient itself, far above either bound.
GRAD_TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def grad_error(actual, expected):
    """max|actual - expected| / max(1, max|expected|) (0 for empty arrays)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected {expected.shape}")
    if expected.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


def assert_grads_close(actual, expected, tol, what=""):
    """Compare two dicts (or arrays) of gradients key by key; the message lists every key's
    scale-relative error, so a failure shows all of them at once."""
    if not isinstance(expected, dict):
        actual, expected = {"value": actual}, {"value": expected}
    assert list(actual) == list(expected), f"{what} keys {list(actual)} != {list(expected)}"
    errors = {k: grad_error(actual[k], expected[k]) for k in expected}
    bad = {k: e for k, e in errors.items() if not e <= tol}
    assert not bad, (f"{what} scale-relative errors above {tol:g}: " +
                     ", ".join(f"{k}={e:.3g}" for k, e in bad.items()) +
                     "; all: " + ", ".join(f"{k}={e:.2g}" for k, e in errors.items()))


# -- the PyTorch oracle (torch is passed in, so that this module imports without it) ------------

def torch_vjp(torch, module, x, hx=None, grad_output=None, grad_h_n=None, lengths=None,
              enforce_sorted=True):
    """PyTorch autograd's (output, h_n, grads) for a torch.nn.GRU, in cgru.GRU.vjp's layouts.

    x is the input as module takes it (its batch_first; unbatched 2-D allowed), or with
    lengths the padded batch to pack (then output, grad_output and grads["input"] are
    shaped like the packed data). hx None is zeros, and grads["hx"] is still returned.
    """
    from torch.nn.utils import rnn
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    dirs = 2 if module.bidirectional else 1
    if lengths is not None:
        packed = rnn.pack_padded_sequence(xt, torch.as_tensor(np.asarray(lengths)),
                                          batch_first=module.batch_first,
                                          enforce_sorted=enforce_sorted)
        source, run_input, batch = packed.data, packed, len(lengths)
        batched = True
    else:
        source, run_input = xt, xt
        batched = xt.dim() == 3
        batch = (xt.shape[0] if module.batch_first else xt.shape[1]) if batched else None
    state_shape = (dirs * module.num_layers,) + ((batch,) if batched else ()) + \
        (module.hidden_size,)
    h0 = torch.zeros(state_shape, dtype=xt.dtype) if hx is None else torch.from_numpy(
        np.array(hx))
    h0.requires_grad_(True)
    output, h_n = module(run_input, h0)
    if lengths is not None:
        output = output.data
    loss = (output * 0).sum()
    if grad_output is not None:
        loss = loss + (output * torch.from_numpy(np.asarray(grad_output))).sum()
    if grad_h_n is not None:
        loss = loss + (h_n * torch.from_numpy(np.asarray(grad_h_n))).sum()
    names = list(module.state_dict())
    params = dict(module.named_parameters())
    wrt = [source, h0] + [params[n] for n in names]
    values = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = {}
    for name, tensor, value in zip(["input", "hx"] + names, wrt, values):
        grads[name] = np.zeros(tuple(tensor.shape)) if value is None else value.detach().numpy()
    return output.detach().numpy(), h_n.detach().numpy(), grads


def torch_cell_vjp(torch, cell, x, hx=None, grad_h1=None):
    """PyTorch autograd's (h1, grads) for a torch.nn.GRUCell, in cgru.GRUCell.vjp's layout."""
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    state_shape = tuple(xt.shape[:-1]) + (cell.hidden_size,)
    h0 = torch.zeros(state_shape, dtype=xt.dtype) if hx is None else torch.from_numpy(
        np.array(hx))
    h0.requires_grad_(True)
    h1 = cell(xt, h0)
    loss = (h1 * 0).sum()
    if grad_h1 is not None:
        loss = loss + (h1 * torch.from_numpy(np.asarray(grad_h1))).sum()
    names = list(cell.state_dict())
    params = dict(cell.named_parameters())
    wrt = [xt, h0] + [params[n] for n in names]
    values = torch.autograd.grad(loss, wrt)
    return h1.detach().numpy(), {n: v.numpy() for n, v in zip(["input", "hx"] + names, values)}
