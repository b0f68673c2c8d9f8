"""Build the cgru extensions, with OpenMP where the compiler has it.

Environment switches:
    CGRU_NO_OPENMP=1       build serially even if the compiler supports OpenMP.
    CGRU_REQUIRE_OPENMP=1  fail the build instead of falling back to a serial build.
    CGRU_CYTHON_CHECKS=1   turn Cython's bounds and wraparound checks back on (debugging).
"""
import glob
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Each is pyx/<name>.pyx -> cgru.<name>. The GRU kernel (pyx/_gru.pxi) is compiled once per
# instruction set, with the flags below, and cgru/_engine.py loads the best one the CPU runs:
# the gate pass and the register-blocked recurrent product are written with GCC/Clang vector
# types, and AVX-512 makes small-batch steps 2.5x faster than the x86-64 baseline (SSE2) on the
# development machine. Other processors get the baseline build only. The kernel needs GCC or
# Clang (clang-cl on Windows), for those vector types.
KERNEL_ISA_FLAGS = {
    "_gru_avx2": ["-mavx2", "-mfma"],
    "_gru_avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
}
EXTENSIONS = ["_cpu", "_rows", "_pool", "_gru_baseline", *KERNEL_ISA_FLAGS]

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
    """
)


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler_type):
    """(compile, link) flags for OpenMP, by compiler family."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _compiles_with(compiler, compile_flags, link_flags):
    """Test-compile and link a tiny `#pragma omp parallel` program."""
    tmp = tempfile.mkdtemp(prefix="cgru-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags)
        compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=link_flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExtWithOpenMP(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        use_openmp = False
        if _flag("CGRU_NO_OPENMP"):
            print("cgru: CGRU_NO_OPENMP set, building serially")
        else:
            cflags, lflags = _openmp_flags(ctype)
            use_openmp = _compiles_with(self.compiler, cflags, lflags)
            if not use_openmp:
                msg = ("cgru: the compiler cannot build OpenMP code; building a serial "
                       "(single-threaded) cgru")
                if _flag("CGRU_REQUIRE_OPENMP"):
                    raise RuntimeError(msg + " (CGRU_REQUIRE_OPENMP is set)")
                warnings.warn(msg)
        # -ffp-contract=off: no a * b + c is fused unless the code says so (CGRU_FMA in
        # pyx/include/cgru_vec.h), so that every optimisation level, the sanitizer build's -O1
        # included, computes the same bits (GCC fused by its own choice at -O2 and -O3 only)
        optimise = ["/O2"] if ctype == "msvc" else ["-O3", "-ffp-contract=off"]
        isa_builds = ctype in ("unix", "mingw32") and platform.machine().lower() in (
            "x86_64", "amd64", "i686", "i386")
        kept = []
        for ext in self.extensions:
            isa = KERNEL_ISA_FLAGS.get(ext.name.split(".")[-1])
            if isa is not None and not isa_builds:
                continue
            ext.extra_compile_args = optimise + (cflags if use_openmp else []) + (isa or [])
            ext.extra_link_args = lflags if use_openmp else []
            kept.append(ext)
        self.extensions = kept
        super().build_extensions()


def _extensions():
    from Cython.Build import cythonize

    checks = _flag("CGRU_CYTHON_CHECKS")
    # The C of the kernels lives in real headers (pyx/include/*.h), so that the compiler, an
    # editor and C tools see it; a change to one rebuilds the extensions.
    headers = sorted(glob.glob(os.path.join("pyx", "include", "*.h")))
    modules = [
        Extension(f"cgru.{name}", [os.path.join("pyx", f"{name}.pyx")],
                  include_dirs=[os.path.join("pyx", "include")], depends=headers)
        for name in EXTENSIONS
    ]
    return cythonize(
        modules,
        include_path=["pyx"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": checks,
            "wraparound": checks,
            "initializedcheck": checks,
            "cdivision": True,
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExtWithOpenMP})
