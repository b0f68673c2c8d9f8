"""A small, obviously-correct NumPy GRU: the equations of the documentation, step by step.

Used as the independent oracle in property tests; float64 throughout.
"""
import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gru_direction(x, h, w_ih, w_hh, b_ih, b_hh, lengths, reverse):
    """One direction over padded x (L, N, I) with per-sequence lengths; returns (out, h_last)."""
    seq_len, batch, _ = x.shape
    hidden = w_hh.shape[1]
    out = np.zeros((seq_len, batch, hidden))
    h = h.copy()
    for b in range(batch):
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        hb = h[b]
        for t in steps:
            gi = w_ih @ x[t, b] + b_ih
            gh = w_hh @ hb + b_hh
            r = _sigmoid(gi[:hidden] + gh[:hidden])
            z = _sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
            n = np.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
            hb = (1 - z) * n + z * hb
            out[t, b] = hb
        h[b] = hb
    return out, h


def gru_reference(params, x, h0, num_layers, bidirectional, lengths=None):
    """Multi-layer GRU over padded time-major x (L, N, I); params: PyTorch-named arrays.

    Returns (output (L, N, D*H) with zeros past each length, h_n (D*layers, N, H)).
    """
    x = np.asarray(x, dtype=np.float64)
    seq_len, batch, _ = x.shape
    lengths = np.full(batch, seq_len) if lengths is None else np.asarray(lengths)
    dirs = 2 if bidirectional else 1
    h_n = []
    layer_input = x
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih = params[f"weight_ih{sfx}"].astype(np.float64)
            w_hh = params[f"weight_hh{sfx}"].astype(np.float64)
            zeros = np.zeros(w_ih.shape[0])
            b_ih = params.get(f"bias_ih{sfx}", zeros).astype(np.float64)
            b_hh = params.get(f"bias_hh{sfx}", zeros).astype(np.float64)
            out, h = gru_direction(layer_input, h0[layer * dirs + d].astype(np.float64),
                                   w_ih, w_hh, b_ih, b_hh, lengths, reverse=bool(d))
            outs.append(out)
            h_n.append(h)
        layer_input = np.concatenate(outs, axis=2)
    return layer_input, np.stack(h_n)
