"""The benchmarks' boundary with the package: cgru.bench is public and stays out of `import cgru`,
and the scripts in benchmarks/ (with their harness/) use only cgru's public names."""
import os
import re
import subprocess
import sys

import pytest

from cgru import bench
from cgru._engine import cpu_features

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
                                    "bench_quantized.py", "bench_vjp.py"])
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


def _bench_quantized(tmp_path, block=()):
    """benchmarks/bench_quantized.py on S1 (one step), once, with these modules unimportable."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({list(block)!r})); "
            f"sys.path.insert(0, {BENCHMARKS!r}); import bench_quantized; "
            "sys.exit(bench_quantized.main(['--cases', 'S1', '--threads', '1', "
            "'--repeats', '1']))")
    result = _python("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CPU: " in result.stdout and "cgru's kernels: " in result.stdout
    assert "| S1 |" in result.stdout
    return result.stdout


@needs_benchmarks
def test_bench_quantized_runs_without_its_peers(tmp_path):
    out = _bench_quantized(tmp_path, block=["torch", "openvino"])
    assert "OpenVINO bf16 ms" not in out and "PyTorch int8 ms" not in out
    assert "OpenVINO bf16: skipped (openvino not installed)" in out
    assert "PyTorch int8: skipped (torch not installed)" in out


@needs_benchmarks
def test_bench_quantized_says_what_openvino_ran(tmp_path):
    """OpenVINO asked for bf16 runs float32 on a CPU without bfloat16 instructions, and the
    table says so."""
    for name in ("openvino", "onnx", "torch"):
        pytest.importorskip(name)
    out = _bench_quantized(tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("| S1 |"))
    assert "(qint8, " in row
    features = cpu_features()
    if not (features["avx512_bf16"] or features["amx_bf16"]):
        assert "(f32)" in row
    else:
        assert "(bf16)" in row or "(f32)" in row


@needs_benchmarks
def test_pipeline_benchmark_quick_run():
    result = _python(os.path.join(BENCHMARKS, "bench_pipeline.py"), "--quick")
    assert result.returncode == 0, result.stderr
    for title in ("after a NumPy", "greedy decoder", "busy-loop process"):
        assert title in result.stdout
