"""cgru.keep_freed_memory(): glibc keeps freed memory for reuse, so a loop that allocates and
frees the same temporaries stops faulting them in; off again, it faults as before."""
import os
import subprocess
import sys

import pytest

import cgru
from cgru._engine.malloc import _mallopt

GLIBC = _mallopt() is not None
HERE = os.path.dirname(os.path.abspath(__file__))

# A step's worth of temporaries, allocated, written and freed ten times over: three arrays of
# 6 MB, freed together, leave more free at the top of the heap than glibc's adaptive trim
# threshold (twice the largest block freed), so by default it goes back to the system.
CHILD = """
import resource, sys
import numpy as np
import cgru
if sys.argv[1] in ("keep", "keep then off"):
    assert cgru.keep_freed_memory() is True
if sys.argv[1] == "keep then off":
    assert cgru.keep_freed_memory(False) is False

def step():
    arrays = [np.ones(3 << 18) for _ in range(3)]
    del arrays

for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_step(mode):
    # run from tests/: from the source tree, `import cgru` would find the uncompiled sources
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True,
                            text=True, cwd=HERE)
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


def test_refuses_what_is_not_a_bool():
    with pytest.raises(TypeError, match="enabled must be a bool, got int"):
        cgru.keep_freed_memory(1)


@pytest.mark.skipif(GLIBC, reason="glibc has the settings")
def test_refused_without_glibc():
    with pytest.raises(RuntimeError, match="only glibc"):
        cgru.keep_freed_memory()


@pytest.mark.skipif(not GLIBC, reason="needs glibc's malloc")
def test_a_loop_of_temporaries_stops_faulting():
    default = faults_per_step("default")      # 1000-1500 of the 4608 pages, measured
    if default < 100:
        pytest.skip(f"this glibc keeps the memory by itself ({default:.0f} faults a step)")
    assert faults_per_step("keep") < default / 10
    assert faults_per_step("keep then off") > default / 2
