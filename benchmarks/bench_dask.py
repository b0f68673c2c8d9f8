"""cgru.dask.forward on a LocalCluster of single-threaded worker processes against one process
with as many threads, on one large batch of S4's shape (L=100, H_in=64, H=128, float32), and
what a task costs beyond its own work (chunks of 256 .. 16384 sequences).

    python benchmarks/bench_dask.py [--batch 65536] [--chunk 4096] [--workers 2]
                                    [--overhead-chunks 256,1024,4096,16384]
                                    [--overhead-batch 16384] [--repeats 2] [--json out.json]

The input (65536 x 100 x 64 float32 = 1.7 GB) never travels: every chunk is drawn where it is
used (da.random on the workers; the very same chunks, block by block, in the single process,
so the two checksums must agree), and the output is reduced where it is made (a float64 sum
of output and h_n per chunk): the figures are the GRU's and the scheduler's, not the network's.
Drawing the input costs time of its own (numpy's float32 standard_normal, single-threaded):
it is timed alone on each side (draw + sum, no GRU) and subtracted for the "GRU only" column.
Cluster and single-process measurements alternate, best of --repeats each, so that drift and
other work on the machine hit both alike.

Needs dask[array] and distributed (pip install "cgru[dask]"). About 5 minutes with the
defaults on 2 idle cores.
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

L, I, H = 100, 64, 128          # S4's shape; only the batch grows
SEED = 0


def _inputs(batch, chunk):
    """The input as a dask array drawn chunk by chunk wherever a chunk is computed."""
    import dask.array as da
    return da.random.default_rng(SEED).standard_normal((L, batch, I), chunks=(L, chunk, I),
                                                       dtype=np.float32)


class Cluster:
    """cgru.dask.forward on a LocalCluster; each measurement also reads the workers' task
    stream, to split the wall time into the tasks' own compute time and the rest."""

    def __init__(self, workers, gru):
        import distributed
        self.distributed, self.workers, self.gru = distributed, workers, gru
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                                    processes=True, dashboard_address=None)
        self.client = distributed.Client(self.cluster)
        self.client.wait_for_workers(workers)

    def close(self):
        self.client.close()
        self.cluster.close()

    def task_threads(self):
        import cgru
        return sorted(set(self.client.gather(
            [self.client.submit(cgru.get_num_threads, pure=False) for _ in range(8)])))

    def run(self, batch, chunk, gru=True):
        """(wall s, compute s summed over tasks, checksum): the GRU over the batch and the
        sums, or (gru=False) only drawing the input and its sum."""
        import dask
        import cgru.dask
        x = _inputs(batch, chunk)
        if gru:
            output, h_n = cgru.dask.forward(self.gru, x)
            sums = [output.sum(dtype=np.float64), h_n.sum(dtype=np.float64)]
        else:
            sums = [x.sum(dtype=np.float64)]
        with self.distributed.get_task_stream(self.client) as stream:
            start = time.perf_counter()
            checksum = sum(dask.compute(*sums))
            wall = time.perf_counter() - start
        compute = sum(part["stop"] - part["start"] for task in stream.data
                      for part in task["startstops"] if part["action"] == "compute")
        return wall, compute, float(checksum)


def _in_process(gru, batch, chunk, threads, blocks=None, with_gru=True):
    """(wall s, checksum) of the same chunks in this process, one after another, with
    `threads` cgru threads; only the first `blocks` chunks when given."""
    import cgru
    x = _inputs(batch, chunk)
    count = x.numblocks[1] if blocks is None else min(blocks, x.numblocks[1])
    start = time.perf_counter()
    acc = 0.0
    with cgru.use_threads(threads):
        for i in range(count):
            block = x.blocks[0, i, 0].compute(scheduler="sync")
            if with_gru:
                output, h_n = gru(block)
                acc += output.sum(dtype=np.float64) + h_n.sum(dtype=np.float64)
            else:
                acc += block.sum(dtype=np.float64)
    return time.perf_counter() - start, float(acc)


def _idle_share(seconds=3.0):
    """The machine's idle CPU share over a few seconds (Linux /proc/stat), else None: other
    work on the machine slows the cluster first, which needs every core at once."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)
    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (idle1 - idle0) / max(1, total1 - total0)


def _best(pairs):
    return min(pairs, key=lambda pair: pair[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=65536, help="sequences (default 65536)")
    parser.add_argument("--chunk", type=int, default=4096,
                        help="sequences per chunk for the throughput table (default 4096)")
    parser.add_argument("--workers", type=int, default=2,
                        help="single-threaded workers; the single process gets as many threads")
    parser.add_argument("--overhead-chunks", default="256,1024,4096,16384",
                        help="chunk sizes for the per-chunk table (default 256,1024,4096,16384)")
    parser.add_argument("--overhead-batch", type=int, default=16384,
                        help="sequences per per-chunk measurement, at least workers x chunk "
                             "(default 16384)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many (default 2)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import cgru
    import dask
    import distributed
    W = args.workers
    gru = cgru.GRU(I, H, seed=SEED).eval()
    results = dict(vars(args), loadavg_start=os.getloadavg()[0], idle_start=_idle_share())
    idle = "" if results["idle_start"] is None else f", {results['idle_start']:.0%} idle"
    print(f"cgru {cgru.__version__}, dask {dask.__version__}, distributed "
          f"{distributed.__version__}, {os.cpu_count()} CPUs (at start: load average "
          f"{results['loadavg_start']:.2f}{idle}); S4's shape L={L}, H_in={I}, H={H}, "
          f"float32; best of {args.repeats}\n")

    cluster = Cluster(W, gru)
    try:
        cluster.run(512, 128)                                   # workers import and warm up
        _in_process(gru, 512, 128, W)
        results["task_threads"] = cluster.task_threads()
        print(f"cgru threads inside a task on the workers: {results['task_threads']}\n")

        big = {"cluster": [], "cluster_draw": [], "local": [], "local_draw": []}
        for _ in range(args.repeats):
            big["cluster"].append(cluster.run(args.batch, args.chunk))
            big["local"].append(_in_process(gru, args.batch, args.chunk, W))
            big["cluster_draw"].append(cluster.run(args.batch, args.chunk, gru=False))
            big["local_draw"].append(_in_process(gru, args.batch, args.chunk, W,
                                                 with_gru=False))
        best = {key: _best(values) for key, values in big.items()}
        assert np.isclose(best["cluster"][2], best["local"][1], rtol=1e-6), best

        per_chunk = []
        for chunk in map(int, args.overhead_chunks.split(",")):
            batch = max(args.overhead_batch, W * chunk)
            blocks = max(1, 4096 // chunk)          # about 4096 sequences, at least one chunk
            runs, local = [], []
            for _ in range(args.repeats):
                runs.append(cluster.run(batch, chunk))
                local.append(_in_process(gru, batch, chunk, 1, blocks=blocks))
            wall, compute, _ = _best(runs)
            chunks = batch // chunk
            per_chunk.append(dict(chunk=chunk, chunks=chunks, wall=wall,
                                  cluster=wall * W / chunks, tasks=compute / chunks,
                                  local=_best(local)[0] / blocks))
    finally:
        cluster.close()
    results["loadavg_end"] = os.getloadavg()[0]
    results["idle_end"] = _idle_share()

    print(f"### Throughput: N = {args.batch:,} sequences in chunks of {args.chunk:,}\n")
    print("| run | workers x threads | wall s | sequences/s | drawing the input alone s | "
          "GRU only, sequences/s | vs one process (GRU only) |")
    print("|---|---|---|---|---|---|---|")
    rows = [("cgru.dask.forward on a LocalCluster", f"{W} x 1", best["cluster"][0],
             best["cluster_draw"][0]),
            ("one process, chunk after chunk", f"1 x {W}", best["local"][0],
             best["local_draw"][0])]
    net_local = args.batch / (rows[1][2] - rows[1][3])
    for name, shape, wall, draw in rows:
        net = args.batch / (wall - draw)
        print(f"| {name} | {shape} | {wall:.1f} | {args.batch / wall:,.0f} | {draw:.1f} | "
              f"{net:,.0f} | {net / net_local:.2f}x |")
    results["throughput"] = [dict(run=r[0], shape=r[1], wall=r[2], draw=r[3]) for r in rows]

    print("\n### Per chunk: the cluster's time per chunk (wall x workers / chunks) against the "
          "same chunk in one process on 1 thread (draw, GRU, sums)\n")
    print("| chunk | chunks | cluster wall s | per chunk ms | its tasks' compute ms | "
          "one process ms | tasks / one process | overhead per chunk ms (%) | "
          "idle gap per chunk ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in per_chunk:
        extra = row["cluster"] - row["local"]
        print(f"| {row['chunk']:,} | {row['chunks']} | {row['wall']:.1f} | "
              f"{row['cluster'] * 1e3:,.1f} | {row['tasks'] * 1e3:,.1f} | "
              f"{row['local'] * 1e3:,.1f} | {row['tasks'] / row['local']:.2f}x | "
              f"{extra * 1e3:,.1f} ({100 * extra / row['local']:.0f}%) | "
              f"{(row['cluster'] - row['tasks']) * 1e3:,.1f} |")
    print("\n(tasks / one process: above 1.00x the workers did not each have a core of their "
          "own; idle gap: worker time per chunk not spent in any task: scheduling, transfers, "
          "start and tail of the run)")
    results["per_chunk"] = per_chunk
    idle = "" if results["idle_end"] is None else f", {results['idle_end']:.0%} idle"
    print(f"\nat the end: load average {results['loadavg_end']:.2f}{idle}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
