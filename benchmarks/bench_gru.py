"""cgru against PyTorch, ONNX Runtime, OpenVINO and NumPy on cases S1-S8; prints tables.

    python benchmarks/bench_gru.py --threads 1,2 [--cases S1,S4] [--json out.json]
                                   [--plot out.png] [--repeats 9] [--peers PyTorch,NumPy]

Peers are used when installed (pip install torch==2.13.0 onnx onnxruntime openvino matplotlib).
The logic lives in cgru/bench.py so that `cgru bench` runs the same thing.
"""
import sys

from cgru.bench import main

if __name__ == "__main__":
    sys.exit(main())
