"""Memory: the workspace stays bounded as the sequence grows (the input projection is computed
in blocks of timesteps, not for all L at once; measured in a fresh process by peak RSS), and the
memory recycled between calls is never shared by two live arrays."""
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import cgru
from cgru._engine import recycle as _recycle
from cgru._engine.recycle import recycled_empty

SCRIPT = """
import json, resource, sys
import numpy as np
import cgru
L, N, I, H = (int(v) for v in sys.argv[1:5])
gru = cgru.GRU(I, H, seed=0)
x = np.ones((L, N, I), dtype=np.float32)
gru(x[:2])                                     # load everything, warm up
out = np.ones((L, N, H), dtype=np.float32)     # touch as much memory as the output will take
del out
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
output, h_n = gru(x)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_mb": (after - before) / 1024, "output_mb": output.nbytes / 2**20}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_long_sequence_workspace_is_bounded(tmp_path):
    # Unblocked, the projections alone would take L * N * 3H * 4 bytes = 188 MiB here.
    seq_len, batch, inputs, hidden = 4000, 32, 8, 128
    # run outside the source tree, whose uncompiled cgru/ folder would shadow the installed one
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(seq_len), str(batch), str(inputs),
                             str(hidden)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    # the output array was already counted in the peak before the call; all else is workspace
    assert measured["extra_mb"] < 100, measured



def test_results_never_share_recycled_memory():
    # Layer outputs (inner layers' and the result) live on blocks recycled from call to call:
    # no result may share one with another, and calls of other shapes in between must leave
    # every earlier result intact.
    rng = np.random.default_rng(0)
    gru = cgru.GRU(60, 200, 3, bidirectional=True, seed=0)
    inputs = [rng.standard_normal((steps, batch, 60)).astype(np.float32)
              for steps, batch in [(90, 4), (300, 7), (30, 2), (300, 7)]]
    results = [gru(x) for x in inputs]
    for x, (output, h_n) in zip(inputs, results):
        # a new module, whose calls start from blocks other than those of the results above
        expected = cgru.GRU(60, 200, 3, bidirectional=True, seed=0)(x)
        np.testing.assert_array_equal(output, expected[0])
        np.testing.assert_array_equal(h_n, expected[1])
    assert not np.shares_memory(results[1][0], results[3][0])


def test_a_block_is_reused_only_when_no_array_uses_it():
    _recycle._FREE.clear()
    shape = (1000, 300)             # 1.2 MB: large enough to be recycled
    first = recycled_empty(shape, np.float32)
    assert first.flags.c_contiguous and first.flags.writeable
    assert first.shape == shape and first.dtype == np.float32
    assert first.ctypes.data % 64 == 0
    view = first[10:]
    address = first.ctypes.data
    del first
    second = recycled_empty(shape, np.float32)      # the view still uses the first block
    assert not np.shares_memory(second, view)
    given_back = {address, second.ctypes.data}
    del view, second
    third = recycled_empty((999, 301), np.float32)  # same size class: a block comes back
    assert third.ctypes.data in given_back and third.shape == (999, 301)


def test_free_list_is_bounded():
    arrays = [recycled_empty((8 << 20,), np.uint8) for _ in range(20)]   # 160 MB
    del arrays
    free = _recycle._FREE
    assert free.nbytes <= free.limit() <= _recycle.FREE_LIST_MAX_BYTES
    assert free.limit() >= _recycle.FREE_LIST_MIN_BYTES
    free.clear()


def test_free_list_keeps_no_more_than_was_leased_at_once(monkeypatch):
    free = _recycle._FreeList()
    monkeypatch.setattr(_recycle, "_FREE", free)
    monkeypatch.setattr(_recycle, "FREE_LIST_MIN_BYTES", 4 << 20)
    one = recycled_empty((3 << 20,), np.uint8)       # one 3 MB block: the limit stays 4 MB
    del one
    assert free.leased == 0 and free.limit() == 4 << 20 and free.nbytes == 3 << 20
    many = [recycled_empty((3 << 20,), np.uint8) for _ in range(4)]    # 12 MB at once
    assert free.leased == 12 << 20 and free.nbytes == 0
    del many
    # all four kept: the process had them leased together, so keeping them costs no new peak
    assert free.limit() == 12 << 20 and free.nbytes == 12 << 20
    big = recycled_empty((12 << 20,), np.uint8)      # the 3 MB blocks do not fit a 12 MB lease
    del big                                           # so it is released, not kept beside them
    assert free.peak_leased == 12 << 20 and free.nbytes == 12 << 20


def test_large_blocks_are_kept_up_to_the_peak_then_reused():
    # S6's 105 MB of saved gates exceeded a fixed 64 MB list and faulted in on every vjp
    array = recycled_empty((100 << 20,), np.uint8)
    address = array.ctypes.data
    del array
    again = recycled_empty((100 << 20,), np.uint8)
    assert again.ctypes.data == address
    del again
    _recycle._FREE.clear()


def test_recycled_results_from_many_python_threads():
    # Results of 1 MB and more come from the shared free list: threads taking and giving back
    # blocks at once must each get their own (compared with the same calls made one by one).
    rng = np.random.default_rng(1)
    gru = cgru.GRU(16, 128, bidirectional=True, seed=0)
    inputs = [rng.standard_normal((300 + 10 * i, 5, 16)).astype(np.float32) for i in range(6)]
    expected = [gru(x)[0] for x in inputs]
    assert all(e.nbytes >= _recycle.RECYCLE_MIN_BYTES for e in expected)
    results, errors = [None] * len(inputs), []

    def work(i):
        try:
            for _ in range(4):
                results[i] = gru(inputs[i])[0]
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_blocks_of_an_earlier_workload_make_room_for_new_ones(monkeypatch):
    free = _recycle._FreeList()
    monkeypatch.setattr(_recycle, "_FREE", free)
    monkeypatch.setattr(_recycle, "FREE_LIST_MIN_BYTES", 8 << 20)
    old = [recycled_empty((2 << 20,), np.uint8) for _ in range(4)]     # 8 MB of 2 MB blocks
    del old
    assert free.nbytes == 8 << 20
    new = recycled_empty((5 << 20,), np.uint8)     # another size: the oldest class goes
    address = new.ctypes.data
    del new
    assert free.nbytes == 5 << 20
    again = recycled_empty((5 << 20,), np.uint8)
    assert again.ctypes.data == address            # and the new block is reused
    del again
    monkeypatch.setattr(_recycle, "FREE_LIST_MAX_BYTES", 8 << 20)
    too_big = recycled_empty((9 << 20,), np.uint8)
    del too_big                                    # larger than the limit: released, evicts none
    assert free.limit() == 8 << 20 and free.nbytes == 5 << 20


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("offset", [0, 4, 16])
@pytest.mark.parametrize("size", [0, 1, 63, 64, 1000, (1 << 20) + 12])
def test_stream_copy_copies_every_byte(rng, offset, size, threads):
    # non-temporal stores from a 16-byte aligned destination, whole lines then the tail;
    # plain memcpy elsewhere; each thread a run of whole lines
    source = rng.integers(0, 256, size + offset, dtype=np.uint8)[offset:]
    block = np.zeros(size + 64, dtype=np.uint8)
    start = (-block.ctypes.data) % 64 + offset          # 64-byte aligned, then offset
    destination = block[start:start + size]
    cgru._rows.stream_copy(source, destination, threads)
    np.testing.assert_array_equal(destination, source)
    assert not block[:start].any() and not block[start + size:].any()   # nothing else


def test_recycled_copy_of_large_rows_is_private_and_equal(rng):
    rows = rng.standard_normal((3000, 100)).astype(np.float32)[:, 1:]   # 1.2 MB, strided
    copy = _recycle.recycled_copy(rows)
    assert copy.flags.c_contiguous and not np.shares_memory(copy, rows)
    np.testing.assert_array_equal(copy, rows)


def test_vjp_keeps_its_own_copy_of_large_input_rows(rng):
    # over RECYCLE_MIN_BYTES the tape's copy is streamed, and the kernel reads the caller's
    # rows: an edit after vjp must still not reach the backward pass
    gru = cgru.GRU(64, 16, seed=0)
    x = rng.standard_normal((100, 50, 64)).astype(np.float32)          # 1.3 MB
    (out, h_n), backward = gru.vjp(x)
    g_out, g_h = np.ones_like(out), np.ones_like(h_n)
    want = backward(g_out, g_h)
    assert backward._tape[0].x.nbytes >= _recycle.RECYCLE_MIN_BYTES
    assert not np.shares_memory(backward._tape[0].x, x)
    x[...] = 7.0
    got = backward(g_out, g_h)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
