"""The README's main job: build a GRU, run it, print shapes, timing and the build configuration."""
import time

import numpy as np

from ._engine import show_config
from .gru import GRU
from .packing import pack_padded_sequence


def _median_ms(fn, repeats=7):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def run_demo():
    rng = np.random.default_rng(0)
    gru = GRU(64, 128, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    x = rng.standard_normal((32, 100, 64)).astype(np.float32)      # (N, L, H_in)
    output, h_n = gru(x)
    print(f"{gru}")
    print(f"  input  {x.shape} -> output {output.shape}, h_n {h_n.shape}, {output.dtype}")
    print(f"  dense batch:  {_median_ms(lambda: gru(x)):8.2f} ms per call (median of 7)")
    lengths = rng.integers(10, 101, size=32)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_out, _ = gru(packed)
    print(f"  packed batch: {_median_ms(lambda: gru(packed)):8.2f} ms per call "
          f"(lengths 10..100, {packed_out.data.shape[0]} rows)")
    show_config()
