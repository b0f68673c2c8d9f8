"""The command line end to end: outputs equal to the Python API's, exit codes, one-line errors,
and no partial output file after a failure."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cgru
from cgru import cli


def _cgru(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cgru", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture
def files(tmp_path, rng):
    gru = cgru.GRU(4, 6, 2, bidirectional=True, seed=0)
    gru.save(tmp_path / "model.npz")
    x = rng.standard_normal((7, 10, 4)).astype(np.float32)          # (L, N, I)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x_bf.npy", np.ascontiguousarray(x.transpose(1, 0, 2)))
    lengths = rng.integers(1, 8, size=10)
    np.save(tmp_path / "lengths.npy", lengths)
    return tmp_path, gru, x, lengths


def test_run_matches_python_api(files):
    path, gru, x, _ = files
    result = _cgru("run", "model.npz", "x.npy", "-o", "out.npy", "--hidden-out", "h.npy",
                   cwd=path)
    assert result.returncode == 0, result.stderr
    output, h_n = gru(x)
    np.testing.assert_array_equal(np.load(path / "out.npy"), output)
    np.testing.assert_array_equal(np.load(path / "h.npy"), h_n)
    assert result.stderr == ""                      # no progress bar when not a terminal


def test_run_in_batches_with_lengths_batch_first_and_threads(files):
    path, gru, x, lengths = files
    result = _cgru("run", "model.npz", "x_bf.npy", "-o", "out.npy", "--lengths", "lengths.npy",
                   "--batch-first", "--batch-size", "3", "--threads", "1", "--hidden-out",
                   "h.npy", cwd=path)
    assert result.returncode == 0, result.stderr
    packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    output, h_n = gru(packed)
    padded, _ = cgru.pad_packed_sequence(output, batch_first=True, total_length=7)
    # batches of 3 group rows differently from one batch of 10: equal to rounding
    np.testing.assert_allclose(np.load(path / "out.npy"), padded, atol=1e-6)
    np.testing.assert_allclose(np.load(path / "h.npy"), h_n, atol=1e-6)


@pytest.mark.parametrize("args,message", [
    (["run", "missing.npz", "x.npy", "-o", "out.npy"], "no such file"),
    (["run", "x.npy", "x.npy", "-o", "out.npy"], "not a readable cgru model file"),
    (["run", "model.npz", "missing.npy", "-o", "out.npy"], "no such file"),
    (["run", "model.npz", "model.npz", "-o", "out.npy"], "expected a single .npy array"),
    (["run", "model.npz", "lengths.npy", "-o", "out.npy"], "expected 3 dimensions"),
    (["run", "model.npz", "bad_features.npy", "-o", "out.npy"], "input_size=4"),
    (["run", "model.npz", "x.npy", "-o", "out.npy", "--lengths", "x.npy"], "expected 10 integers"),
    (["run", "model.npz", "x.npy", "-o", "out.npy", "--lengths", "too_long.npy"], "1..7"),
    (["run", "model.npz", "x.npy", "-o", "out.npy", "--batch-size", "0"], "--batch-size"),
    (["run", "cell.npz", "x.npy", "-o", "out.npy"], "GRUCell"),
])
def test_run_errors_are_one_line(files, args, message):
    path = files[0]
    np.save(path / "bad_features.npy", np.zeros((3, 2, 5), np.float32))
    np.save(path / "too_long.npy", np.full(10, 8))
    cgru.GRUCell(4, 6).save(path / "cell.npz")
    result = _cgru(*args, cwd=path)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (path / "out.npy").exists()


def test_usage_errors_exit_2(files):
    result = _cgru("run", "model.npz", cwd=files[0])
    assert result.returncode == 2 and "required: input, -o/--output" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "cgru run --help" in result.stderr


def test_failure_mid_run_leaves_no_file(files, monkeypatch):
    path, _, _, _ = files
    calls = []

    def failing_forward(self, input, hx=None):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("simulated")
        return original(self, input, hx)

    original = cgru.GRU.forward
    monkeypatch.setattr(cgru.GRU, "forward", failing_forward)
    code = cli.main(["run", str(path / "model.npz"), str(path / "x.npy"), "-o",
                     str(path / "out.npy"), "--hidden-out", str(path / "h.npy"),
                     "--batch-size", "4"])
    assert code == 1 and len(calls) == 2
    assert sorted(os.listdir(path)) == ["lengths.npy", "model.npz", "x.npy", "x_bf.npy"]


def test_progress_bar_on_a_terminal(capsys):
    cli._progress(3, 10, quiet=False)
    cli._progress(10, 10, quiet=False)
    err = capsys.readouterr().err
    assert "3/10" in err and err.endswith("10/10 sequences\n")
    cli._progress(5, 10, quiet=True)
    assert capsys.readouterr().err == ""


def test_info_and_default_demo(tmp_path):
    info = _cgru("info", cwd=tmp_path)
    assert info.returncode == 0 and "OpenMP" in info.stdout and cgru.__version__ in info.stdout
    for line in ("features:", "avx512_bf16", "amx_int8", "bfloat16: widen-to-float32",
                 "int8:     pmaddwd", "input projections:"):
        assert line in info.stdout
    demo = _cgru(cwd=tmp_path)
    assert demo.returncode == 0
    assert "(32, 100, 256)" in demo.stdout and "ms per call" in demo.stdout


def test_bench_runs_a_short_grid(tmp_path):
    result = _cgru("bench", "--cases", "S1", "--threads", "1", "--repeats", "1", "--peers",
                   "NumPy", "--json", "bench.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| S1 |" in result.stdout and (tmp_path / "bench.json").exists()


# -- messages that point the right way --------------------------------------------------------

def _main(args, path, monkeypatch, capsys):
    """cli.main in this process (quicker than a subprocess): (exit status, stderr)."""
    monkeypatch.chdir(path)
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def test_a_text_file_is_not_an_array_nor_a_model(files, monkeypatch, capsys):
    path = files[0]
    (path / "notes.txt").write_text("1 2 3\n4 5 6\n")
    code, err = _main(["run", "model.npz", "notes.txt", "-o", "out.npy"], path, monkeypatch,
                      capsys)
    assert code == 1 and "notes.txt is not a .npy array file" in err
    assert "allow_pickle" not in err and len(err.strip().splitlines()) == 1
    code, err = _main(["run", "notes.txt", "x.npy", "-o", "out.npy"], path, monkeypatch, capsys)
    assert code == 1 and "notes.txt is not a readable cgru model file" in err
    assert "not a .npz archive" in err and "allow_pickle" not in err
    with pytest.raises(ValueError, match="not a .npz archive"):
        cgru.load(path / "notes.txt")


def test_a_pytorch_file_as_the_model_says_to_convert_it(files, monkeypatch, capsys):
    import zipfile
    path = files[0]
    # torch.save's zip format: <name>/data.pkl and its tensors (written here without torch)
    with zipfile.ZipFile(path / "model.pt", "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("model/version", b"3\n")
    (path / "legacy.pt").write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.")
    for name in ("model.pt", "legacy.pt"):
        code, err = _main(["run", name, "x.npy", "-o", "out.npy"], path, monkeypatch, capsys)
        assert code == 1 and "GRU.from_torch" in err and "save" in err, err
    with pytest.raises(ValueError, match=r"PyTorch file.*GRU\.from_torch.*gru\.save"):
        cgru.load(path / "model.pt")


def test_a_missing_output_folder_is_named(files, monkeypatch, capsys):
    path = files[0]
    for extra, named in ((["-o", "no/such/out.npy"], "no/such/out.npy"),
                         (["-o", "out.npy", "--hidden-out", "no/h.npy"], "no/h.npy")):
        code, err = _main(["run", "model.npz", "x.npy", *extra], path, monkeypatch, capsys)
        assert code == 1 and "no such folder" in err and named in err, err
        assert ".partial" not in err
    assert not (path / "out.npy").exists()


def test_threads_follow_set_num_threads(files, monkeypatch, capsys):
    path = files[0]
    code, err = _main(["run", "model.npz", "x.npy", "-o", "out.npy", "--threads", "0"], path,
                      monkeypatch, capsys)
    with pytest.raises(ValueError) as python_error:
        cgru.set_num_threads(0)
    assert code == 1 and "--threads" in err and str(python_error.value) in err
    assert not (path / "out.npy").exists()
    code, err = _main(["run", "model.npz", "x.npy", "-o", "out.npy", "--threads", "-1"], path,
                      monkeypatch, capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(path / "out.npy"), files[1](files[2])[0])


@pytest.mark.parametrize("args", [["run", "model.npz"], ["run", "model.npz", "x.npy"],
                                  ["run", "model.npz", "x.npy", "-o", "o.npy", "--threads", "x"],
                                  ["frobnicate"], ["run", "--bogus"]])
def test_usage_errors_are_one_line(files, monkeypatch, capsys, args):
    code, err = _main(args, files[0], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "error:" in err and "--help" in err


def test_bench_help_names_itself_and_defines_the_cases(files, monkeypatch, capsys):
    monkeypatch.chdir(files[0])
    with pytest.raises(SystemExit) as exit:
        cli.main(["bench", "--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0 and out.startswith("usage: cgru bench")
    from cgru.bench import CASES
    for name in CASES:
        assert f"\n  {name}  " in out
    assert "S6  L=50, N=256, H_in=512, H=512" in out and "2 layers, bidirectional" in out


def test_demo_is_a_documented_command(files, monkeypatch, capsys):
    monkeypatch.chdir(files[0])
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "demo" in capsys.readouterr().out
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    assert "cgru demo" in readme
