"""The harness behind benchmarks/bench_train.py and benchmarks/bench_sklearn.py: benchmark code
that cgru's users do not need, so it lives here and not in the package.

    train          a training step, cgru's vjp against PyTorch's autograd (bench_train.py)
    memory_child   one training step's peak memory, run by train as `python -m
                   harness.memory_child` in a fresh process
    estimators     cgru's GRUClassifier against skorch on scikit-learn's and aeon's data sets
                   (bench_sklearn.py)

Importable when a script in benchmarks/ runs (its folder is first on sys.path), or with
benchmarks/ on PYTHONPATH. It uses only cgru's public names: the cases and timing helpers of the
inference benchmark come from cgru.bench.
"""
