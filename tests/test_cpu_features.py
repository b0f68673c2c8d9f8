"""CPU feature detection (pyx/include/cgru_cpu.h, pyx/_cpu.pyx, cgru/_engine/isa.py) against
Linux's /proc/cpuinfo, the kernel builds it allows, and what `show_config` and `cgru info` say
about the reduced-precision kernels."""
import os
import platform
import shutil
import subprocess
import sys

import pytest

import cgru
from cgru import _cpu, _engine

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join(os.path.dirname(HERE), "pyx", "include")
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
NAMES = ["avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16",
         "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"]
AMX = ("amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo_flags():
    """The flags of the first processor in /proc/cpuinfo, or None without that file."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return None


def test_features_are_the_documented_names():
    features = _engine.cpu_features()
    assert list(features) == NAMES
    assert all(type(v) is bool for v in features.values())
    if not X86:
        assert not any(features.values())


@pytest.mark.skipif(_cpuinfo_flags() is None or not X86, reason="no /proc/cpuinfo flags (x86 "
                    "Linux only)")
def test_features_agree_with_proc_cpuinfo():
    """Linux lists a flag when CPUID has it and the kernel enables its state (it clears the
    AVX-512 flags where it does not save ZMM registers), as cgru_cpu.h checks with XCR0."""
    flags = _cpuinfo_flags()
    features = _engine.cpu_features()
    for name in NAMES:
        if name in AMX and name in flags and not features[name]:
            # the hardware and kernel have it, this process was refused the tile data
            assert not _cpu.amx_permitted(), name
            continue
        listed = sorted(f for f in flags if "avx" in f or "amx" in f or f == "fma")
        assert features[name] == (name in flags), (name, listed)


def test_amx_false_asks_nothing_and_reports_none():
    without = _engine.cpu_features(amx=False)
    assert not any(without[name] for name in AMX)
    assert {k: v for k, v in without.items() if k not in AMX} == \
        {k: v for k, v in _engine.cpu_features().items() if k not in AMX}


def test_amx_request_refused_cleanly_without_amx():
    """The permission request runs (Linux: arch_prctl) and a refusal is False, not an error."""
    permitted = _cpu.amx_permitted()
    assert type(permitted) is bool
    flags = _cpuinfo_flags()
    if flags is not None and "amx_tile" not in flags:
        assert not permitted
        assert not any(_engine.cpu_features()[name] for name in AMX)


def test_builds_follow_the_features():
    features = _engine.cpu_features()
    assert _cpu.supports("baseline")
    assert _cpu.supports("avx2") == (features["avx2"] and features["fma"])
    assert _cpu.supports("avx512") == all(features[n] for n in (
        "avx512f", "avx512dq", "avx512bw", "avx512vl", "fma"))
    assert set(_engine.available_isas()) <= {"baseline"} | {
        isa for isa in ("avx2", "avx512") if _cpu.supports(isa)}


@pytest.mark.skipif(_cpu.supports("avx512"), reason="the CPU has AVX-512")
def test_forcing_a_build_the_cpu_lacks_is_an_error_not_a_crash():
    result = subprocess.run([sys.executable, "-c", "import cgru"], capture_output=True, text=True,
                            env=dict(os.environ, CGRU_ISA="avx512"), cwd=HERE)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "cannot run the avx512 build" in result.stderr


def test_cpu_model():
    model = _engine.cpu_model()
    assert isinstance(model, str) and model and model == model.strip()
    if X86:
        assert _cpu.brand()


def test_reduced_precision_kernels_name_this_build():
    build = _engine.kernel.__name__.rsplit("_", 1)[-1]
    kernels = _engine.reduced_precision_kernels()
    assert list(kernels) == ["bfloat16", "int8"]
    assert kernels["bfloat16"]["kernel"] == "widen-to-float32"
    assert kernels["int8"]["kernel"] == "pmaddwd"
    register = {"avx512": "zmm", "avx2": "ymm", "baseline": "xmm" if X86 else "C"}[build]
    for precision, described in kernels.items():
        assert register in described["instructions"], (precision, described)
        assert described["instructions"] in described["recurrent"]
        assert set(described) == {"kernel", "instructions", "recurrent", "inputs", "unused"}
    assert "float32 sgemm" in kernels["bfloat16"]["inputs"]
    # a CPU's native instructions are named as unused: no kernel of this version uses them
    native = {"bfloat16": {"avx512_bf16", "amx_bf16"},
              "int8": {"avx512_vnni", "avx_vnni", "amx_int8"}}
    every = dict.fromkeys(NAMES, True)
    for precision, described in _engine.reduced_precision_kernels(every).items():
        assert set(described["unused"]) == native[precision]
    features = _engine.cpu_features()
    for precision, described in kernels.items():
        assert described["unused"] == [n for n in described["unused"] if features[n]]


def test_int8_input_projection_is_described_by_the_policy(monkeypatch):
    monkeypatch.setattr(_engine.policy, "INT8_INPUT_PRODUCTS", True)
    assert "int8 products" in _engine.reduced_precision_kernels()["int8"]["inputs"]
    monkeypatch.setattr(_engine.policy, "INT8_INPUT_PRODUCTS", False)
    assert "float32 sgemm" in _engine.reduced_precision_kernels()["int8"]["inputs"]


def test_config_and_show_config_list_the_features(capsys):
    info = _engine.config()
    assert info["cpu_features"] == _engine.cpu_features()
    assert info["reduced_precision"] == _engine.reduced_precision_kernels()
    assert info["cpu"] == _engine.cpu_model()
    cgru.show_config()
    text = capsys.readouterr().out
    features_line = next(line for line in text.splitlines() if "features:" in line)
    for name, present in info["cpu_features"].items():
        assert name in features_line
        if present:     # listed before "(not: ...)"
            assert name in features_line.split("(not:")[0].split()
    assert "bfloat16: widen-to-float32" in text and "int8:     pmaddwd" in text
    assert text.count("input projections:") == 2


@pytest.mark.parametrize("isa", _engine.available_isas())
def test_cgru_isa_forces_the_build_the_reduced_precision_kernels_name(isa):
    code = ("from cgru import _engine; k = _engine.reduced_precision_kernels(); "
            "print(_engine.config()['kernel']); print(k['int8']['recurrent'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, CGRU_ISA=isa), cwd=HERE)
    assert result.returncode == 0, result.stderr[-2000:]
    kernel, int8 = result.stdout.splitlines()
    assert kernel == isa
    assert {"avx512": "zmm (AVX512BW)", "avx2": "ymm (AVX2)",
            "baseline": "xmm (SSE2)" if X86 else "in C"}[isa] in int8


# -- the header on its own: GCC and Clang, x86 and not --------------------------------------

PROGRAM = r"""
#include <stdio.h>
#include "cgru_cpu.h"
int main(void) {
    char brand[49];
    cgru_cpu_brand(brand);
    printf("%d\n%s\n", cgru_cpu_features(0), brand);
    return 0;
}
"""


needs_header = pytest.mark.skipif(not os.path.isdir(INCLUDE), reason="no pyx/include next to "
                                  "tests/ (the sources are not here)")


@needs_header
@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_header_compiles_and_agrees(compiler, tmp_path):
    """cgru_cpu.h built by each compiler, strictly (C99, all warnings as errors), finds the
    features the extension found."""
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler}")
    source = tmp_path / "probe.c"
    source.write_text(PROGRAM)
    exe = tmp_path / "probe"
    build = subprocess.run([compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
                            f"-I{INCLUDE}", str(source), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    bits, brand = subprocess.run([str(exe)], capture_output=True, text=True,
                                 check=True).stdout.split("\n")[:2]
    found = {name for name, bit in _cpu.FEATURES.items() if int(bits) & bit}
    assert found == {name for name, present in _engine.cpu_features(amx=False).items()
                     if present}
    assert brand == _cpu.brand()


@needs_header
@pytest.mark.skipif(shutil.which("clang") is None, reason="no clang (it cross-compiles)")
@pytest.mark.parametrize("target", ["aarch64-linux-gnu", "powerpc64le-linux-gnu"])
def test_header_off_x86_reports_nothing(target, tmp_path):
    """Off x86 the header is the fallback: no CPUID, every feature absent."""
    source = tmp_path / "probe.c"
    source.write_text('#include "cgru_cpu.h"\n'
                      "int f(void) { char b[49]; cgru_cpu_brand(b); "
                      "return cgru_cpu_features(1) | cgru_amx_permitted() | b[0]; }\n")
    common = ["clang", f"--target={target}", "-ffreestanding", "-std=c99", "-Wall", "-Wextra",
              "-Werror", "-O2", f"-I{INCLUDE}", str(source)]
    build = subprocess.run(common + ["-c", "-o", str(tmp_path / "probe.o")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    text = subprocess.run(common + ["-E"], capture_output=True, text=True, check=True).stdout
    assert "cpuid" not in text and "syscall" not in text
    assert "return 0;" in text
