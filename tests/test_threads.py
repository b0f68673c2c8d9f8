"""Threading: OpenMP compiled in, thread-count control, 1 vs 2 threads, concurrent callers."""
import os
import threading

import numpy as np
import pytest

import cgru
from cgru._engine import blas_controller, kernel


def test_openmp_compiled_in():
    # The build machine's compiler has OpenMP: a serial build here would be a packaging bug.
    if os.environ.get("CGRU_NO_OPENMP"):
        pytest.skip("serial build requested")
    assert kernel.OPENMP_ENABLED is True


def test_set_num_threads_and_context_manager():
    default = cgru.get_num_threads()
    try:
        cgru.set_num_threads(1)
        assert cgru.get_num_threads() == 1
        with cgru.use_threads(3) as n:
            assert n == 3 and cgru.get_num_threads() == 3
        assert cgru.get_num_threads() == 1
        cgru.set_num_threads(-1)
        assert cgru.get_num_threads() == len(os.sched_getaffinity(0))
    finally:
        cgru.set_num_threads(None)
    assert cgru.get_num_threads() == default


def test_context_manager_is_per_python_thread():
    seen = {}
    with cgru.use_threads(1):
        worker = threading.Thread(target=lambda: seen.setdefault("n", cgru.get_num_threads()))
        worker.start()
        worker.join()
    assert seen["n"] == cgru.get_num_threads()


@pytest.mark.parametrize("bad,error", [(0, ValueError), (1.5, TypeError), ("2", TypeError),
                                       (True, TypeError)])
def test_bad_thread_counts(bad, error):
    with pytest.raises(error):
        cgru.set_num_threads(bad)
    with pytest.raises(error):
        with cgru.use_threads(bad):
            pass


def test_omp_num_threads_is_the_default(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cgru.get_num_threads() == 3


# batch 1 splits hidden units, batch 64 splits rows; bidirectional runs directions on teams
@pytest.mark.parametrize("batch,hidden,bidirectional", [(1, 130, False), (1, 64, True),
                                                        (64, 40, False), (37, 33, True),
                                                        (5, 200, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_agree(batch, hidden, bidirectional, dtype, rng):
    gru = cgru.GRU(16, hidden, 2, bidirectional=bidirectional, dtype=dtype, seed=0)
    x = rng.standard_normal((12, batch, 16)).astype(dtype)
    lengths = np.sort(rng.integers(1, 13, size=batch))[::-1]
    packed = cgru.pack_padded_sequence(x, lengths)
    with cgru.use_threads(1):
        dense_1, packed_1 = gru(x), gru(packed)
    with cgru.use_threads(2):
        dense_2, packed_2 = gru(x), gru(packed)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(dense_1[0], dense_2[0], atol=tol)
    np.testing.assert_allclose(dense_1[1], dense_2[1], atol=tol)
    np.testing.assert_allclose(packed_1[0].data, packed_2[0].data, atol=tol)
    np.testing.assert_allclose(packed_1[1], packed_2[1], atol=tol)


def test_many_python_threads_on_one_module(rng):
    gru = cgru.GRU(8, 32, 2, bidirectional=True, seed=0)
    inputs = [rng.standard_normal((20, int(n), 8)).astype(np.float32)
              for n in rng.integers(1, 20, size=16)]
    expected = [gru(x) for x in inputs]
    results = [None] * len(inputs)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                results[i] = gru(inputs[i])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_blas_thread_count_restored_after_call(rng):
    blas = blas_controller()
    if blas is None:
        pytest.skip("BLAS is not a scipy OpenBLAS")
    before = blas.get()
    blas.set(2)
    try:
        cgru.GRU(4, 8)(rng.standard_normal((3, 2, 4)))
        assert blas.get() == 2
    finally:
        blas.set(before)


@pytest.mark.parametrize("threads", [3, 5])
@pytest.mark.parametrize("batch", [1, 3, 40])
def test_uneven_thread_teams(threads, batch, rng):
    # Odd counts give the two directions teams of different sizes: every thread must still
    # meet the same barriers (a mismatch would hang), and results must not change.
    gru = cgru.GRU(6, 40, 2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((9, batch, 6))
    packed = cgru.pack_sequence([x[: int(n), 0] for n in sorted(rng.integers(1, 10, batch))[::-1]])
    with cgru.use_threads(1):
        dense_1, packed_1 = gru(x), gru(packed)
    with cgru.use_threads(threads):
        dense_n, packed_n = gru(x), gru(packed)
    np.testing.assert_allclose(dense_n[0], dense_1[0], atol=1e-13)
    np.testing.assert_allclose(packed_n[0].data, packed_1[0].data, atol=1e-13)
    np.testing.assert_allclose(packed_n[1], packed_1[1], atol=1e-13)
