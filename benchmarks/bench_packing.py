"""pack_sequence / unpack_sequence against torch.nn.utils.rnn's, on a grapheme-to-phoneme
client's batch: 2000 words of 1 to 35 steps of 256 features (float32).

    python benchmarks/bench_packing.py [--words 2000] [--features 256] [--repeats 9]

cgru packs straight from the list (one copy); torch pads the batch first, then packs.
"""
import argparse
import time

import numpy as np

import cgru


def _median_ms(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=35)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    words = [rng.random((int(n), args.features), dtype=np.float32)
             for n in rng.integers(1, args.max_len + 1, size=args.words)]
    packed = cgru.pack_sequence(words, enforce_sorted=False)
    rows = [("pack_sequence", lambda: cgru.pack_sequence(words, enforce_sorted=False)),
            ("unpack_sequence", lambda: cgru.unpack_sequence(packed))]
    peers = {}
    try:
        import torch
        from torch.nn.utils import rnn
        tensors = [torch.from_numpy(w) for w in words]
        torch_packed = rnn.pack_sequence(tensors, enforce_sorted=False)
        peers = {"pack_sequence": lambda: rnn.pack_sequence(tensors, enforce_sorted=False),
                 "unpack_sequence": lambda: rnn.unpack_sequence(torch_packed)}
    except ImportError:
        pass
    print(f"{args.words} sequences of 1..{args.max_len} x {args.features} float32, "
          f"{packed.data.nbytes / 2**20:.1f} MB packed; cgru threads {cgru.get_num_threads()}")
    print("\n| call | cgru ms | PyTorch ms | speed-up |\n|---|---|---|---|")
    for name, function in rows:
        ours = _median_ms(function, args.repeats)
        if name in peers:
            theirs = _median_ms(peers[name], args.repeats)
            print(f"| {name} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.1f}x |")
        else:
            print(f"| {name} | {ours:.2f} | n/a | |")


if __name__ == "__main__":
    main()
