"""Every kernel build this CPU can run passes the parity, gradient and reference tests (the main run
covers the default one; here the others run in subprocesses with CGRU_ISA set)."""
import os
import subprocess
import sys

import pytest

from cgru import _cpu, _engine

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = _engine.kernel.__name__.rsplit("_", 1)[-1]


def _pytest(isa, *files):
    env = dict(os.environ, CGRU_ISA=isa)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *[os.path.join(HERE, f) for f in files]],
                          env=env, cwd=HERE, capture_output=True, text=True)


@pytest.mark.parametrize("isa", [i for i in _engine.available_isas() if i != DEFAULT])
def test_other_builds_match_torch_and_reference(isa):
    result = _pytest(isa, "test_parity_fixtures.py", "test_parity_live.py", "test_reference.py",
                     "test_threads.py", "test_kernel_paths.py", "test_grad_parity.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_x86_builds_present():
    if _cpu.supports("avx2"):
        assert "avx2" in _engine.available_isas()


def test_unknown_isa_is_refused():
    result = subprocess.run([sys.executable, "-c", "import cgru"], capture_output=True,
                            text=True, env=dict(os.environ, CGRU_ISA="sse9"), cwd=HERE)
    assert result.returncode != 0 and "CGRU_ISA must be one of" in result.stderr
