"""cgru inside PyTorch: a model with torch.nn.GRU against the same model with cgru.torch.GRU.

    python benchmarks/bench_torch.py [--cases S3,S4,S8] [--threads 1,2] [--repeats 15]

Model: Embedding -> GRU -> Linear on the last layer's final state (h_n[-1]), the same weights
in both. Measured, per case and thread count (torch.set_num_threads; the bridge follows it):
    train      forward, cross-entropy, backward, Adam step (torch.optim.Adam)
    infer      the model's forward under torch.no_grad()
    bridge     the GRU layer alone: cgru.torch.GRU on tensors against cgru.GRU on the same
               arrays (inference), and against cgru's vjp + backward (training: forward,
               backward for h_n[-1]), i.e. what the bridge costs on top of cgru
    relayout   loading every weight into the cgru twin (what the bridge does once after each
               optimizer step), per step and as a share of the bridge's training step
Cases (benchmarks/RESULTS.md), (L, N, H_in, H): S3 100, 8, 40, 256; S4 100, 32, 64, 128;
S8 batch 64, lengths uniform in 10..200 (seed 0), 64 -> 128, packed
(pack_padded_sequence(enforce_sorted=False), inside the timed step).
Each sample: the implementations in turn, in an order that rotates from sample to sample,
each timed over --inner calls after one untimed call; the table gives medians and ratios
(>1: the cgru side is faster). Gradients and outputs are checked against torch first.
"""
import argparse
import statistics
import time

import numpy as np
import torch

import cgru
import cgru.torch

CASES = {
    "S3": dict(seq_len=100, batch=8, input_size=40, hidden_size=256),
    "S4": dict(seq_len=100, batch=32, input_size=64, hidden_size=128),
    "S8": dict(seq_len=200, batch=64, input_size=64, hidden_size=128, packed=True),
}
VOCAB, CLASSES = 1000, 10


class Model(torch.nn.Module):
    def __init__(self, gru_class, input_size, hidden_size):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, input_size)
        self.gru = gru_class(input_size, hidden_size, batch_first=True)
        self.head = torch.nn.Linear(hidden_size, CLASSES)

    def forward(self, tokens, lengths=None):
        x = self.embed(tokens)
        if lengths is not None:
            x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                        enforce_sorted=False)
        _, h_n = self.gru(x)
        return self.head(h_n[-1])


def make_case(spec, seed=0):
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(0, VOCAB, (spec["batch"], spec["seq_len"])))
    labels = torch.from_numpy(rng.integers(0, CLASSES, spec["batch"]))
    lengths = torch.from_numpy(rng.integers(10, 201, spec["batch"])) if spec.get("packed") \
        else None
    torch.manual_seed(seed)
    plain = Model(torch.nn.GRU, spec["input_size"], spec["hidden_size"])
    bridged = Model(cgru.torch.GRU, spec["input_size"], spec["hidden_size"])
    bridged.load_state_dict(plain.state_dict())
    return plain, bridged, tokens, labels, lengths


def train_step(model, opt, tokens, labels, lengths):
    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens, lengths), labels)
        loss.backward()
        opt.step()
    return step


def infer_step(model, tokens, lengths):
    def step():
        with torch.no_grad():
            model(tokens, lengths)
    return step


def layer_steps(bridged, tokens, lengths):
    """(bridge inference, cgru inference, bridge training, cgru training) on the GRU alone."""
    with torch.no_grad():
        x = bridged.embed(tokens)
    engine = cgru.GRU(bridged.gru.input_size, bridged.gru.hidden_size, batch_first=True)
    engine.load_state_dict(bridged.gru.state_dict())
    x_np = x.numpy()
    if lengths is not None:
        tensor_in = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                            enforce_sorted=False)
        array_in = cgru.PackedSequence(tensor_in.data.numpy(), tensor_in.batch_sizes.numpy(),
                                       tensor_in.sorted_indices.numpy(),
                                       tensor_in.unsorted_indices.numpy())
    else:
        tensor_in, array_in = x, x_np
    gru = bridged.gru
    grad_h = np.ones((1, tokens.shape[0], gru.hidden_size), dtype=np.float32)

    def bridge_infer():
        with torch.no_grad():
            gru(tensor_in)

    def cgru_infer():
        engine(array_in)

    def bridge_train():
        gru.zero_grad(set_to_none=True)
        _, h_n = gru(tensor_in)
        h_n.backward(torch.from_numpy(grad_h))

    def cgru_train():
        (_, h_n), backward = engine.vjp(array_in)
        backward(None, grad_h)

    return bridge_infer, cgru_infer, bridge_train, cgru_train, engine


def check(plain, bridged, tokens, labels, lengths):
    """Outputs and gradients of the two models agree (float32: within 1e-4 of their scale)."""
    results = []
    for model in (plain, bridged):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens, lengths), labels)
        loss.backward()
        results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*results):
        scale = max(1.0, float(a.abs().max()))
        assert float((a - b).abs().max()) <= 1e-4 * scale, "cgru.torch disagrees with torch"
    for model in (plain, bridged):
        model.zero_grad()


def time_interleaved(fns, repeats, inner):
    """Median seconds per call of each fn; fns run in turn, order rotating per sample."""
    samples = {name: [] for name in fns}
    names = list(fns)
    for fn in fns.values():
        fn()
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fns[name]()
            start = time.perf_counter()
            for _ in range(inner):
                fns[name]()
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(v) for name, v in samples.items()}


def run_case(name, threads, repeats, inner):
    spec = CASES[name]
    plain, bridged, tokens, labels, lengths = make_case(spec)
    torch.set_num_threads(threads)
    check(plain, bridged, tokens, labels, lengths)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-3)
    opt_bridged = torch.optim.Adam(bridged.parameters(), lr=1e-3)
    bridge_infer, cgru_infer, bridge_train, cgru_train, engine = \
        layer_steps(bridged, tokens, lengths)
    weights = {k: v.detach().numpy() for k, v in bridged.gru.state_dict().items()}

    def relayout():
        engine.load_state_dict(weights)

    with cgru.use_threads(threads):     # the raw cgru calls; the bridge follows torch itself
        t = time_interleaved({
            "torch train": train_step(plain, opt_plain, tokens, labels, lengths),
            "bridge train": train_step(bridged, opt_bridged, tokens, labels, lengths),
            "torch infer": infer_step(plain, tokens, lengths),
            "bridge infer": infer_step(bridged, tokens, lengths),
            "layer bridge infer": bridge_infer, "layer cgru infer": cgru_infer,
            "layer bridge train": bridge_train, "layer cgru train": cgru_train,
            "relayout": relayout,
        }, repeats, inner)
    return t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="S3,S4,S8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=15, help="samples per measurement")
    parser.add_argument("--inner", type=int, default=3, help="calls per sample")
    args = parser.parse_args(argv)
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    threads = [int(n) for n in args.threads.split(",")]
    print(f"torch {torch.__version__}, cgru {cgru.__version__}; medians of {args.repeats} "
          f"samples of {args.inner} calls, ms; ratio > 1: cgru side faster")
    header = ("| case | threads | train: torch | bridge | ratio | infer: torch | bridge | "
              "ratio | layer infer: cgru | bridge | overhead | layer train: cgru | bridge | "
              "overhead | relayout | share of step |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for n in threads:
        for name in names:
            t = run_case(name, n, args.repeats, args.inner)
            ms = {k: v * 1e3 for k, v in t.items()}
            print(f"| {name} | {n} | {ms['torch train']:.2f} | {ms['bridge train']:.2f} | "
                  f"{t['torch train'] / t['bridge train']:.2f}x | {ms['torch infer']:.2f} | "
                  f"{ms['bridge infer']:.2f} | {t['torch infer'] / t['bridge infer']:.2f}x | "
                  f"{ms['layer cgru infer']:.3f} | {ms['layer bridge infer']:.3f} | "
                  f"{(t['layer bridge infer'] / t['layer cgru infer'] - 1) * 100:+.1f}% | "
                  f"{ms['layer cgru train']:.2f} | {ms['layer bridge train']:.2f} | "
                  f"{(t['layer bridge train'] / t['layer cgru train'] - 1) * 100:+.1f}% | "
                  f"{ms['relayout'] * 1e3:.0f} us | "
                  f"{t['relayout'] / t['bridge train'] * 100:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
