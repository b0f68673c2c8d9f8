"""g2p_en's pretrained grapheme-to-phoneme model (a GRU encoder and a GRUCell decoder, PyPI
package g2p_en, numpy checkpoint) run by cgru: greedy decoding of many words at once.

The checkpoint is read from the installed package without importing it (g2p_en's import
downloads NLTK data). Used by tests/test_quantized.py and benchmarks/bench_quantized.py.
"""
import importlib.util
import os

import numpy as np

import cgru

GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
START, END, MAX_STEPS = 2, 3, 20       # g2p_en's <s>, </s> and decoding limit


def checkpoint_path():
    """The path of g2p_en's checkpoint20.npz, or None when g2p_en is not installed."""
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "checkpoint20.npz")
    return path if os.path.exists(path) else None


class G2P:
    """The model as cgru modules: encoder GRU(256, 256), decoder GRUCell(256, 256), and the
    embeddings and output layer as arrays."""

    def __init__(self, path):
        with np.load(path) as v:
            self.variables = {k: v[k] for k in v.files}
        v = self.variables
        hidden = v["enc_w_hh"].shape[1]
        self.encoder = cgru.GRU(v["enc_emb"].shape[1], hidden)
        self.encoder.load_state_dict({"weight_ih_l0": v["enc_w_ih"], "weight_hh_l0": v["enc_w_hh"],
                                      "bias_ih_l0": v["enc_b_ih"], "bias_hh_l0": v["enc_b_hh"]})
        self.decoder = cgru.GRUCell(v["dec_emb"].shape[1], hidden)
        self.decoder.load_state_dict({"weight_ih": v["dec_w_ih"], "weight_hh": v["dec_w_hh"],
                                      "bias_ih": v["dec_b_ih"], "bias_hh": v["dec_b_hh"]})

    def decode(self, words, encoder=None, decoder=None):
        """Greedy phoneme indices of each word (list of lists), as g2p_en's predict decodes
        them, all words in one packed encoder call and one decoder call per step."""
        encoder = encoder or self.encoder
        decoder = decoder or self.decoder
        v = self.variables
        index = {g: i for i, g in enumerate(GRAPHEMES)}
        sequences = [v["enc_emb"][[index.get(c, 1) for c in word] + [index["</s>"]]]
                     for word in words]
        _, h_n = encoder(cgru.pack_sequence(sequences, enforce_sorted=False))
        h = h_n[0]
        token = np.full(len(words), START)
        done = np.zeros(len(words), bool)
        out = [[] for _ in words]
        for _ in range(MAX_STEPS):
            h = decoder(v["dec_emb"][token], h)
            token = np.argmax(h @ v["fc_w"].T + v["fc_b"], axis=1)
            done |= token == END
            for i in np.flatnonzero(~done):
                out[i].append(int(token[i]))
            if done.all():
                break
        return out


def numpy_predict(variables, word):
    """g2p_en's own G2p.predict (its NumPy GRU, one word at a time), as phoneme indices: the
    check that the cgru modules above hold its weights the right way round."""
    v = variables

    def cell(x, h, prefix):
        gi = x @ v[prefix + "w_ih"].T + v[prefix + "b_ih"]
        gh = h @ v[prefix + "w_hh"].T + v[prefix + "b_hh"]
        n3 = gi.shape[-1] // 3
        rz = 1 / (1 + np.exp(-(gi[:, :2 * n3] + gh[:, :2 * n3])))
        r, z = rz[:, :n3], rz[:, n3:]
        n = np.tanh(gi[:, 2 * n3:] + r * gh[:, 2 * n3:])
        return (1 - z) * n + z * h

    index = {g: i for i, g in enumerate(GRAPHEMES)}
    x = v["enc_emb"][[index.get(c, 1) for c in word] + [index["</s>"]]]
    h = np.zeros((1, v["enc_w_hh"].shape[1]), np.float32)
    for t in range(len(x)):
        h = cell(x[t:t + 1], h, "enc_")
    token, out = START, []
    for _ in range(MAX_STEPS):
        h = cell(v["dec_emb"][[token]], h, "dec_")
        token = int(np.argmax(h @ v["fc_w"].T + v["fc_b"]))
        if token == END:
            break
        out.append(token)
    return out


def pseudo_words(n, seed=0):
    """n distinct pronounceable lowercase words of one to three syllables (no word list ships
    with g2p_en's dependencies: NLTK's cmudict is a download)."""
    rng = np.random.default_rng(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t",
              "v", "w", "z", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gr", "pl", "pr",
              "sh", "sl", "sp", "st", "str", "th", "tr", "wh"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "oa", "ie", "y"]
    codas = ["", "", "b", "ck", "d", "ft", "g", "l", "ll", "m", "n", "nd", "ng", "nt", "p",
             "r", "rt", "s", "sh", "st", "t", "th", "x", "tion", "ment", "ing", "er", "ed"]
    words = set()
    while len(words) < n:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                       for _ in range(rng.integers(1, 4)))
        if 2 <= len(word) <= 14:
            words.add(word)
    return sorted(words)
