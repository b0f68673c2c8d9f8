"""Every path through the kernel gives the reference's results: the input projection fused into
the step or done by block GEMMs, the recurrent product from panels or from BLAS, rows or hidden
units split across threads. The size thresholds in cgru/_engine/policy.py pick one per call; here each
combination is forced on the same inputs."""
import itertools

import numpy as np
import pytest

import cgru
from cgru._engine import policy
from cgru._engine.weights import gate_column_order, pack_layer
from conftest import assert_close
from reference import gru_reference
from reference_grad import assert_grads_close, gru_reference_vjp

PATHS = {  # name: (FUSE_MAX_ROWS, PANEL_MAX_ROWS, MIN_ROWS_PER_THREAD)
    "fused": (10**6, 10**6, 2),
    "gemm+panels": (0, 10**6, 2),
    "gemm+blas": (0, 0, 2),
    "units split": (10**6, 10**6, 10**6),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_paths_match_reference(monkeypatch, rng, path, dtype):
    fuse, panel, min_rows = PATHS[path]
    monkeypatch.setattr(policy, "FUSE_MAX_ROWS", fuse)
    monkeypatch.setattr(policy, "FUSE_MIN_ROWS", 1)
    monkeypatch.setattr(policy, "PANEL_MAX_ROWS", panel)
    monkeypatch.setattr(policy, "PANEL_MAX_ROWS_FLOAT64", panel)
    monkeypatch.setattr(policy, "MIN_ROWS_PER_THREAD", min_rows)
    for (batch, hidden, bidirectional), threads in itertools.product(
            [(1, 20, False), (7, 33, True), (19, 16, False)], [1, 2, 3]):
        gru = cgru.GRU(5, hidden, 2, bidirectional=bidirectional, dtype=dtype, seed=batch)
        d = 2 if bidirectional else 1
        lengths = np.sort(rng.integers(1, 9, size=batch))[::-1]
        x = rng.standard_normal((int(lengths[0]), batch, 5)).astype(dtype)
        hx = rng.standard_normal((2 * d, batch, hidden)).astype(dtype)
        with cgru.use_threads(threads):
            dense = gru(x, hx)
            packed_out, packed_h = gru(cgru.pack_padded_sequence(x, lengths), hx)
        ref_out, ref_h = gru_reference(gru.state_dict(), x, hx, 2, bidirectional)
        assert_close(dense[0], ref_out, dtype)
        assert_close(dense[1], ref_h, dtype)
        ref_out, ref_h = gru_reference(gru.state_dict(), x, hx, 2, bidirectional, lengths)
        assert_close(cgru.pad_packed_sequence(packed_out)[0], ref_out, dtype)
        assert_close(packed_h, ref_h, dtype)


@pytest.mark.parametrize("fuse", [0, 10**6])
def test_many_blocks_with_changing_slices(monkeypatch, rng, fuse):
    # One-step projection blocks with varied lengths re-balance the sequences among threads at
    # every block: a thread must never read a state that another thread has not written yet.
    monkeypatch.setattr(policy, "PROJECTION_WORKSPACE_BYTES", 1)
    monkeypatch.setattr(policy, "FUSE_MAX_ROWS", fuse)
    monkeypatch.setattr(policy, "FUSE_MIN_ROWS", 1)
    monkeypatch.setattr(policy, "MIN_ROWS_PER_THREAD", 1)
    gru = cgru.GRU(3, 64, bidirectional=True, dtype=np.float64, seed=0)
    lengths = np.sort(rng.integers(1, 60, size=48))[::-1]
    x = rng.standard_normal((int(lengths[0]), 48, 3))
    packed = cgru.pack_padded_sequence(x, lengths)
    with cgru.use_threads(1):
        want_out, want_h = gru(packed)
    for threads in (2, 3, 2, 3, 2):
        with cgru.use_threads(threads):
            got_out, got_h = gru(packed)
        np.testing.assert_allclose(got_out.data, want_out.data, atol=1e-13)
        np.testing.assert_allclose(got_h, want_h, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_row_count_of_a_register_block(rng, dtype):
    # Each count of rows left after the blocks of 8 (4 in double) has its own product kernel.
    gru = cgru.GRU(6, 17, dtype=dtype, seed=0)
    for batch in range(1, 18):
        x = rng.standard_normal((3, batch, 6)).astype(dtype)
        hx = rng.standard_normal((1, batch, 17)).astype(dtype)
        out, h_n = gru(x, hx)
        ref_out, ref_h = gru_reference(gru.state_dict(), x, hx, 1, False)
        assert_close(out, ref_out, dtype)
        assert_close(h_n, ref_h, dtype)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_rows_result_does_not_depend_on_its_position(monkeypatch, rng, path, dtype):
    # Bit for bit where the kernel does every product itself: its product kernels for every
    # count of rows in a register block sum in the same order, so shuffling the batch (which
    # moves rows between full and partial blocks and between threads) only shuffles the result.
    # scikit-learn's estimator checks rely on it.
    # Not through BLAS: OpenBLAS 0.3.30's Haswell kernels (the ones it picks on AVX2 CPUs, Zen 2
    # included) sum a row in an order that depends on its place in the call. Measured: sgemm
    # puts the first and last 6 rows of a 12-row micro-tile, and 8-, 4- and 1-3-row edge tiles,
    # in four different classes of bits (in the other dimension too: its 16-wide M tiles),
    # dgemm only the 1-row N edge; no call shape keeps every row in one class short of calling
    # it per row. There a row may differ by an ulp or two, which the steps carry on.
    fuse, panel, min_rows = PATHS[path]
    monkeypatch.setattr(policy, "FUSE_MAX_ROWS", fuse)
    monkeypatch.setattr(policy, "FUSE_MIN_ROWS", 1)
    monkeypatch.setattr(policy, "PANEL_MAX_ROWS", panel)
    monkeypatch.setattr(policy, "PANEL_MAX_ROWS_FLOAT64", panel)
    monkeypatch.setattr(policy, "MIN_ROWS_PER_THREAD", min_rows)
    if path.startswith("gemm"):     # a few ulps of values below 1 in magnitude
        def assert_same(got, want):
            np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.finfo(dtype).eps)
    else:
        assert_same = np.testing.assert_array_equal
    for (batch, hidden, inputs), threads in itertools.product(
            [(13, 64, 8), (37, 20, 3), (23, 128, 40)], [1, 2]):
        gru = cgru.GRU(inputs, hidden, dtype=dtype, seed=batch)
        x = rng.standard_normal((6, batch, inputs)).astype(dtype)
        order = rng.permutation(batch)
        lengths = rng.integers(1, 7, size=batch)
        with cgru.use_threads(threads):
            out, h_n = gru(x)
            shuffled_out, shuffled_h = gru(x[:, order])
            packed_h = gru(cgru.pack_padded_sequence(x, lengths, enforce_sorted=False))[1]
            shuffled_packed_h = gru(cgru.pack_padded_sequence(
                x[:, order], lengths[order], enforce_sorted=False))[1]
        assert_same(shuffled_out, out[:, order])
        assert_same(shuffled_h, h_n[:, order])
        assert_same(shuffled_packed_h, packed_h[:, order])


BACKWARD_PATHS = {  # name: (BACKWARD_PANEL_MAX_ROWS, BACKWARD_WORKSPACE_BYTES)
    "panels, one block": (10**6, 8 << 20),
    "blas, one block": (0, 8 << 20),
    "panels, one-step blocks": (10**6, 1),
    "blas, one-step blocks": (0, 1),
}


@pytest.mark.parametrize("path", BACKWARD_PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_paths_match_reference(monkeypatch, rng, path, dtype):
    # The backward's recurrent product from panels or BLAS, its weight gradients over one block
    # or one block per step (two barriers each), on 1 to 3 threads. The panels are 48 hidden
    # units wide, and a last panel of 16 or fewer units (hidden 16, 49) or of 32 or fewer (20,
    # 80) takes a narrower kernel.
    panel, workspace = BACKWARD_PATHS[path]
    monkeypatch.setattr(policy, "BACKWARD_PANEL_MAX_ROWS", panel)
    monkeypatch.setattr(policy, "PANEL_MAX_ROWS_FLOAT64", panel)
    monkeypatch.setattr(policy, "BACKWARD_WORKSPACE_BYTES", workspace)
    monkeypatch.setattr(policy, "BACKWARD_WORKSPACE_TAPE_SHARE", 10 ** 6)   # bytes decide
    tol = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}[np.dtype(dtype)]
    for (batch, hidden, bidirectional), threads in itertools.product(
            [(1, 20, False), (7, 49, True), (19, 16, False), (5, 80, False)], [1, 2, 3]):
        gru = cgru.GRU(5, hidden, 2, bidirectional=bidirectional, dtype=dtype, seed=batch)
        d = 2 if bidirectional else 1
        lengths = rng.integers(1, 9, size=batch)
        x = rng.standard_normal((int(lengths.max()), batch, 5)).astype(dtype)
        hx = rng.standard_normal((2 * d, batch, hidden)).astype(dtype)
        grad_out = rng.standard_normal((int(lengths.max()), batch, d * hidden))
        grad_h = rng.standard_normal((2 * d, batch, hidden))
        packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
        with cgru.use_threads(threads):
            (out, _), backward = gru.vjp(packed, hx)
            grads = backward(cgru.pack_padded_sequence(grad_out, lengths,
                                                       enforce_sorted=False).data, grad_h)
        _, _, want = gru_reference_vjp(gru.state_dict(), x, hx, 2, bidirectional, lengths,
                                       grad_out, grad_h)
        grads["input"] = cgru.pad_packed_sequence(
            cgru.PackedSequence(grads["input"], out.batch_sizes, out.sorted_indices,
                                out.unsorted_indices), total_length=int(lengths.max()))[0]
        assert_grads_close(grads, want, tol, f"{path}, {threads} threads")


def test_plans_follow_the_thresholds(monkeypatch):
    """plan() remembers its plans; setting a threshold makes them again."""
    shape = policy.stack_shape(8, 32, 1, 1, np.dtype(np.float32))
    sizes = cgru._engine.dense_batch_sizes(5, 12)
    first = policy.plan(shape, 60, sizes)
    assert policy.plan(shape, 60, sizes) is first
    monkeypatch.setattr(policy, "PANEL_MAX_ROWS", 3)
    monkeypatch.setattr(policy, "PANEL_MAX_ROWS_FLOAT64", 3)
    assert policy.plan(shape, 60, sizes).panel_max_rows == 3
    monkeypatch.setattr(policy, "FUSE_MAX_ROWS", 0)
    assert not policy.plan(shape, 60, sizes).fused
    with pytest.raises(TypeError):
        policy.QUANT_PANEL_MAX_ROWS["int8"] = 1     # the tables change only by setting them


@pytest.mark.parametrize("batch", [1, 12, 300])
def test_backward_workspace_is_bounded_by_bytes_and_by_the_tape(monkeypatch, batch):
    # 6H values a row of workspace per direction: at most BACKWARD_WORKSPACE_BYTES, and at most
    # BACKWARD_WORKSPACE_TAPE_SHARE of the 4H saved values a row unless that would leave a
    # block fewer than BACKWARD_MIN_BLOCK_ROWS rows
    monkeypatch.setattr(policy, "BACKWARD_WORKSPACE_BYTES", 1 << 20)
    shape = policy.stack_shape(8, 32, 1, 1, np.dtype(np.float32))
    step_bytes = 6 * 32 * 4 * batch
    min_steps = -(-policy.BACKWARD_MIN_BLOCK_ROWS // batch)
    for n_steps in (1, 5, 40, 400, 4000):
        sizes = cgru._engine.dense_batch_sizes(n_steps, batch)
        spb = policy.plan(shape, batch * n_steps, sizes, task="backward").steps_per_block
        by_tape = int(policy.BACKWARD_WORKSPACE_TAPE_SHARE * batch * n_steps * 4 * 32 * 4)
        assert spb == max(1, min(policy.BACKWARD_WORKSPACE_BYTES // step_bytes,
                                 max(by_tape // step_bytes, min_steps)))


def test_short_backward_blocks_keep_their_rows():
    # S2's shape (200 one-row steps): one block, not four of 50 rows; S3's (100 steps of 8
    # rows, H = 256): blocks cut to half the saved gates' bytes, 224 rows or more each
    s2 = policy.stack_shape(64, 128, 1, 1, np.dtype(np.float32))
    plan = policy.plan(s2, 200, cgru._engine.dense_batch_sizes(200, 1), task="backward")
    assert plan.steps_per_block >= 200
    s3 = policy.stack_shape(40, 256, 1, 1, np.dtype(np.float32))
    plan = policy.plan(s3, 800, cgru._engine.dense_batch_sizes(100, 8), task="backward")
    assert 32 <= plan.steps_per_block < 100


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden", [32, 33])
def test_saved_gates_streamed_or_stored_in_place(rng, dtype, hidden):
    # vjp's forward streams the saved gates and states to memory four rows at a time when
    # their rows are vector-aligned (hidden 32), else stores them in place (hidden 33); every
    # count of rows per step from 9 down to 1 (packed), so groups of four and the rows left
    # over.
    lengths = np.repeat(np.arange(9, 0, -1), 5)[:9] * 5
    batch, steps = len(lengths), int(lengths.max())
    gru = cgru.GRU(6, hidden, 1, dtype=dtype, seed=hidden)
    x = rng.standard_normal((steps, batch, 6)).astype(dtype)
    grad_out = rng.standard_normal((steps, batch, hidden))
    packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    for threads in (1, 2):
        with cgru.use_threads(threads):
            (out, _), backward = gru.vjp(packed)
            grads = backward(cgru.pack_padded_sequence(grad_out, lengths,
                                                       enforce_sorted=False).data)
        save, started = backward._tape[0].save, backward._tape[0].states
        assert save.nbytes >= 16 << 10 and save.ctypes.data % 64 == 0   # the aligned case
        # each row's h(t-1) is saved beside its gates: the output rows of the step before,
        # or h_0 (zeros) for the first step
        offsets = np.concatenate([[0], np.cumsum(out.batch_sizes)])
        want_started = np.zeros_like(started[0])
        for t in range(1, steps):
            rows = out.batch_sizes[t]
            want_started[offsets[t]:offsets[t] + rows] = out.data[offsets[t - 1]:
                                                                 offsets[t - 1] + rows]
        np.testing.assert_array_equal(started[0], want_started)
        _, _, want = gru_reference_vjp(gru.state_dict(), x, None, 1, False, lengths, grad_out,
                                       None)
        grads["input"] = cgru.pad_packed_sequence(
            cgru.PackedSequence(grads["input"], out.batch_sizes, out.sorted_indices,
                                out.unsorted_indices), total_length=steps)[0]
        tol = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}[np.dtype(dtype)]
        assert_grads_close(grads, want, tol, f"hidden {hidden}, {threads} threads")


def test_backward_kernel_input_gradient_and_workspace_arguments(rng):
    # At one thread a bidirectional layer's directions run one after the other, and the
    # second adds its dL/dx to the first's in one array; on more threads they run at once, so
    # the kernel refuses a shared array rather than race on it. On more threads, the layer
    # below reads both arrays (grad_out and grad_out_more) and adds them itself.
    gru = cgru.GRU(5, 16, bidirectional=True, seed=0)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    (out, _), backward = gru.vjp(x)
    stack, record = gru._stack, backward._tape[0]
    rows = out.shape[0] * out.shape[1]
    sizes = cgru._engine.dense_batch_sizes(4, 3)
    grad_rows = rng.standard_normal((rows, 32)).astype(np.float32)

    def run(grad_x, threads, workspace_size=2 * 2 * 12 * 48, grad_rows=grad_rows, more=None):
        # blocks of 4 steps of 3 rows: dG_i and dG_h, 48 values a row, 2 directions
        grads = (np.zeros((2, 48, 5), np.float32), np.zeros((2, 48, 16), np.float32),
                 np.zeros((2, 48), np.float32), np.zeros((2, 48), np.float32))
        dh = np.zeros((2, 3, 16), np.float32)
        workspace = np.empty(workspace_size, np.float32)
        stack._backward_kernel(record.x, record.weights, record.weights.back_panels, sizes,
                               record.save, record.states, grad_rows, dh, grad_x, *grads,
                               workspace, threads, 4, 256, more)
        return grads + (dh,)

    each, shared = np.empty((2, rows, 5), np.float32), np.empty((1, rows, 5), np.float32)
    grads_each, grads_shared = run(each, 1), run(shared, 1)
    np.testing.assert_allclose(shared[0], each[0] + each[1], rtol=1e-5, atol=1e-6)
    for got, want in zip(grads_shared, grads_each):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="1 with one thread"):
        run(np.empty((1, rows, 5), np.float32), 2)
    with pytest.raises(ValueError, match="smaller than blocks of 4 steps need"):
        run(each, 1, workspace_size=2 * 2 * 12 * 48 - 1)

    part = rng.standard_normal(grad_rows.shape).astype(np.float32)
    for threads in (1, 2):
        split = run(np.empty((2, rows, 5), np.float32), threads, grad_rows=grad_rows - part,
                    more=part)
        for got, want in zip(split, grads_each):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"grad_out_more of shape \(11, 32\), grad_out"):
        run(each, 1, more=part[1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden, inputs", [(1, 3), (16, 16), (20, 7), (50, 33), (96, 1)])
def test_weight_layout_follows_its_definition(rng, dtype, hidden, inputs):
    """pack_layer against the layout's definition, element by element: the transposed weights
    in the packed gate order, the 16-unit panels and the backward's 48-unit panels, each zero
    padded, and the combined biases."""
    h, order = hidden, gate_column_order(hidden)
    directions = [(rng.standard_normal((3 * h, inputs)).astype(dtype),
                   rng.standard_normal((3 * h, h)).astype(dtype),
                   rng.standard_normal(3 * h).astype(dtype),
                   rng.standard_normal(3 * h).astype(dtype)) for _ in range(2)]
    packed = pack_layer(directions, h, dtype)
    w_ih, ih_panels, w_hh, hh_panels, bias_gi, bias_hn = (np.asarray(a) for a in packed.arrays)
    back = np.asarray(packed.back_panels)
    for d, (weight_ih, weight_hh, b_ih, b_hh) in enumerate(directions):
        assert np.array_equal(w_ih[d], weight_ih[order].T)
        assert np.array_equal(w_hh[d], weight_hh[order].T)
        for weight, panels in ((weight_ih, ih_panels[d]), (weight_hh, hh_panels[d])):
            expected = np.zeros_like(panels)
            for k in range(panels.shape[0]):
                for g in range(3):
                    for u in range(min(16, h - 16 * k)):
                        expected[k, :, 16 * g + u] = weight[g * h + 16 * k + u]
            assert np.array_equal(panels, expected)
        expected = np.zeros_like(back[d])
        for j in range(back.shape[1]):
            units = min(48, h - 48 * j)
            expected[j, :, :units] = weight_hh[order, 48 * j:48 * j + units]
        assert np.array_equal(back[d], expected)
        combined = np.concatenate([b_ih[:2 * h] + b_hh[:2 * h], b_ih[2 * h:]])
        assert np.array_equal(bias_gi[d], combined[order])
        assert np.array_equal(bias_hn[d], b_hh[2 * h:])
