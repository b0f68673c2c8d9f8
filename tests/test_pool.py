"""Sharing the machine: OpenBLAS on cgru's OpenMP pool (share_blas_threads) and the
load-adaptive thread count (set_load_adaptive); both opt-ins."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import cgru
from cgru._engine import kernel, policy, pool

needs_pool = pytest.mark.skipif(not (kernel.OPENMP_ENABLED and sys.platform == "linux"),
                                reason="needs OpenMP and Linux")


@pytest.fixture
def shared():
    try:
        libraries = cgru.share_blas_threads()
    except RuntimeError as error:
        pytest.skip(str(error))
    try:
        yield libraries
    finally:
        cgru.share_blas_threads(False)


def test_options_are_off_by_default_and_check_their_type():
    assert cgru.load_adaptive() is False
    assert pool.shared_blas_libraries() == []
    for setter in (cgru.set_load_adaptive, cgru.share_blas_threads):
        with pytest.raises(TypeError, match="must be a bool"):
            setter(1)


@needs_pool
def test_shared_numpy_products_are_unchanged(shared, rng):
    assert any("numpy" in path for path in shared)
    assert pool.shared_blas_libraries() == shared
    a = rng.standard_normal((700, 300)).astype(np.float32)
    b = rng.standard_normal((300, 500)).astype(np.float32)
    cgru.share_blas_threads(False)
    want = a @ b
    cgru.share_blas_threads()
    # the same jobs, run by other threads: the same bits
    np.testing.assert_array_equal(a @ b, want)


@needs_pool
def test_shared_pool_from_many_python_threads(shared, rng):
    # the callback serializes OpenBLAS's jobs (they use its per-job buffers)
    a = rng.standard_normal((400, 256))
    gru = cgru.GRU(256, 64, dtype=np.float64, seed=0)
    x = rng.standard_normal((3, 200, 256))
    want_mm, want_gru = a @ a.T, gru(x)[0]
    failures = []

    def work():
        for _ in range(10):
            if not np.array_equal(a @ a.T, want_mm):
                failures.append("matmul")
            with cgru.use_threads(2):
                if not np.allclose(gru(x)[0], want_gru, rtol=0, atol=1e-13):
                    failures.append("gru")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@needs_pool
def test_shared_pool_without_a_full_openmp_team():
    # OpenBLAS's jobs must run at once; with a team limited to one thread they run on pthreads
    code = textwrap.dedent("""
        import numpy as np, cgru
        rng = np.random.default_rng(0)
        a = rng.standard_normal((600, 600))
        want = a @ a
        cgru.share_blas_threads()
        assert np.array_equal(a @ a, want)
        print("ok")
    """)
    env = dict(os.environ, OMP_THREAD_LIMIT="1", OPENBLAS_NUM_THREADS="2")
    # started in tests/: a checkout's uncompiled ./cgru must not shadow the cgru under test
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_load_adaptive_is_honoured(monkeypatch):
    shape = policy.stack_shape(256, 256, 1, 1, np.dtype(np.float32))
    batch_sizes = np.array([500], np.int64)
    monkeypatch.setattr(policy, "free_threads", lambda n: 1)
    with cgru.use_threads(2):
        assert policy.plan(shape, 500, batch_sizes).n_threads == 2
        try:
            cgru.set_load_adaptive(True)
            assert cgru.load_adaptive() is True
            assert policy.plan(shape, 500, batch_sizes).n_threads == 1
            assert policy.plan(shape, 500, batch_sizes, task="backward").n_threads == 1
        finally:
            cgru.set_load_adaptive(False)


@needs_pool
@pytest.mark.parametrize("others,want", [(-1, 4), (0, 4), (1, 3), (3, 1), (9, 1)])
def test_free_threads_counts_the_other_runnable_tasks(monkeypatch, others, want):
    monkeypatch.setattr(pool, "usable_cores", lambda: 4)
    monkeypatch.setattr(pool, "_machine_cores", lambda: 4)
    monkeypatch.setattr(pool._pool, "others_runnable", lambda own: others)
    assert pool.free_threads(4) == want


@needs_pool
def test_free_threads_trusts_the_set_count_on_part_of_a_machine(monkeypatch):
    monkeypatch.setattr(pool, "usable_cores", lambda: 2)
    monkeypatch.setattr(pool, "_machine_cores", lambda: 8)
    monkeypatch.setattr(pool._pool, "others_runnable", lambda own: 7)
    assert pool.free_threads(2) == 2


@needs_pool
def test_own_workers_are_not_counted_as_load():
    ids = pool._own_workers(2)
    assert len(ids) <= 1 and all(i > 0 for i in ids)
    # right after a 2-thread region our worker may spin: it is runnable but ours
    gru = cgru.GRU(64, 64, seed=0)
    x = np.ones((5, 64, 64), np.float32)
    with cgru.use_threads(2):
        gru(x)
    others = pool._pool.others_runnable(ids)
    assert 0 <= others <= pool._pool.runnable_tasks()


def test_numpy_blas_single_threaded_holds_and_restores():
    from cgru._engine import blas_threads, find_openblas
    blas = find_openblas("numpy")
    if blas is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS cgru can find")
    before = blas.get()
    with blas_threads.numpy_blas_single_threaded():
        assert blas.get() == 1
        with blas_threads.numpy_blas_single_threaded():      # re-entrant
            assert blas.get() == 1
        assert blas.get() == 1
    assert blas.get() == before
    with pytest.raises(ZeroDivisionError):
        with blas_threads.numpy_blas_single_threaded():
            1 / 0
    assert blas.get() == before


def test_estimator_heads_run_with_numpy_blas_at_one_thread(monkeypatch, rng):
    # The estimators' NumPy heads run between GRU calls: threaded, OpenBLAS's workers would be
    # left spinning and take the cores from the next call (predict 109 ms against 47 ms on
    # 2 cores). Each head product is made inside numpy_blas_single_threaded.
    sklearn = pytest.importorskip("cgru.sklearn")
    import contextlib
    entered = []

    @contextlib.contextmanager
    def recording():
        entered.append(True)
        yield

    monkeypatch.setattr(sklearn, "numpy_blas_single_threaded", recording)
    X = rng.standard_normal((20, 5, 3)).astype(np.float32)
    y = np.arange(20) % 2
    clf = sklearn.GRUClassifier(hidden_size=4, max_iter=2, batch_size=10, random_state=0)
    with pytest.warns(Warning):
        clf.fit(X, y)
    assert len(entered) == 4            # 2 epochs x 2 batches
    clf.predict(X)
    assert len(entered) == 5
    reg = sklearn.GRURegressor(hidden_size=4, max_iter=1, batch_size=20, random_state=0)
    with pytest.warns(Warning):
        reg.fit(X, y.astype(float))
    reg.predict(X)
    assert len(entered) == 7
