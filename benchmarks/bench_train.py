"""A GRU training step, cgru against PyTorch's autograd, on cases S3-S6 and S8; prints tables.

    python benchmarks/bench_train.py --threads 1,2 [--cases S3,S4,S5,S6,S8] [--repeats 9]
                                     [--no-optimizer] [--keep-freed-memory]
                                     [--json out.json]
    python benchmarks/bench_train.py --memory-case 1000,64,256,256 [--threads 1]

Step = forward + backward (+ Adam step): cgru's vjp and backward against torch.nn.GRU's
loss.backward() from the same weights, gradients checked first; plus the share of the GEMM
limit of cgru's backward and each step's peak RSS growth in a fresh process. Needs
torch==2.13.0. The logic lives in benchmarks/harness/train.py (cases and timing helpers from
cgru.bench).
"""
import sys

from harness.train import main

if __name__ == "__main__":
    sys.exit(main())
