"""cgru's GRUClassifier against skorch's NeuralNetClassifier (the same GRU + linear head in
PyTorch) on scikit-learn's digits and aeon's bundled UCR/UEA sets; prints fit time, test
accuracy and predict throughput per thread count, and optionally where cgru's fit time goes.

    python benchmarks/bench_sklearn.py --threads 1,2 [--datasets digits,GunPoint]
                                       [--repeats 5] [--epochs 20] [--profile]
                                       [--json out.json]

Needs scikit-learn, torch, skorch and aeon (pip install scikit-learn skorch aeon; aeon's data
sets are read from its package data, without network). The logic lives in
benchmarks/harness/estimators.py (predict's sampling from cgru.bench).
"""
import sys

from harness.estimators import main

if __name__ == "__main__":
    sys.exit(main())
