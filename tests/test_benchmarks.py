"""The benchmarks' boundary with the package: cgru.bench is public and stays out of `import cgru`,
and the scripts in benchmarks/ (with their harness/) use only cgru's public names."""
import os
import re
import subprocess
import sys

import pytest

from cgru import bench

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")
needs_benchmarks = pytest.mark.skipif(not os.path.isdir(os.path.join(BENCHMARKS, "harness")),
                                      reason="no benchmarks/ folder next to tests/")


def _python(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd)


def test_import_cgru_leaves_the_benchmark_and_frameworks_out(tmp_path):
    heavy = ("torch", "sklearn", "dask", "keras", "onnx", "matplotlib", "openvino", "cgru.bench")
    result = _python("-c", f"import cgru, sys; print(sorted(m for m in {heavy!r} "
                     f"if m in sys.modules))", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bench_public_names():
    for name in bench.__all__:
        assert not name.startswith("_") and hasattr(bench, name), name
    assert {"S1", "S8"} <= set(bench.CASES) and set(bench.SHORT_GRID) <= set(bench.CASES)
    case = bench.make_case("S8")
    assert case.lengths is not None and case.seq_len == case.lengths.max()
    assert bench.time_once(lambda: None, inner=3) >= 0
    assert bench.format_time(0.0012) == "1.200" and bench.format_time(0.25) == "250.0"


@needs_benchmarks
def test_benchmarks_import_no_private_cgru_names():
    private = re.compile(r"^\s*(from\s+cgru(\.\w+)*\._\w*\s+import|import\s+cgru(\.\w+)*\._"
                         r"|from\s+cgru(\.\w+)*\s+import\s+.*\b_\w+)", re.MULTILINE)
    for folder, _, names in os.walk(BENCHMARKS):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    found = private.findall(f.read())
                assert not found, f"{name} imports cgru's private names: {found}"


@needs_benchmarks
@pytest.mark.parametrize("script", ["bench_gru.py", "bench_train.py", "bench_sklearn.py",
                                    "bench_quantized.py"])
def test_benchmark_scripts_parse_their_options(script):
    result = _python(os.path.join(BENCHMARKS, script), "--help")
    assert result.returncode == 0, result.stderr
    assert "--threads" in result.stdout


@needs_benchmarks
def test_memory_child_runs_as_a_module():
    pytest.importorskip("torch")
    sys.path.insert(0, BENCHMARKS)
    try:
        from harness import train
        case = bench.Case(name="tiny", seq_len=3, batch=2, input_size=4, hidden_size=5)
        result = train.measure_memory("cgru", case, threads=1, optimizer=False)
    finally:
        sys.path.remove(BENCHMARKS)
    assert result["growth_mb"] >= 0 and result["step_s"] > 0
