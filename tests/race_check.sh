#!/usr/bin/env bash
# Data-race check of cgru's OpenMP regions: ThreadSanitizer, with LLVM's OpenMP runtime
# (libomp) and its Archer tool, which tells TSan about OpenMP's synchronisation (fork, join,
# barriers, critical sections).
#
# Needs (Debian 12 package names):
#     apt-get install gcc libomp-dev libtsan2          (clang too, for RACE_CC=clang)
#   gcc         compiles the extensions with -fsanitize=thread
#   libtsan2    GCC's TSan runtime (a dependency of gcc), preloaded into the uninstrumented Python
#   libomp-dev  LLVM's OpenMP runtime, libomp.so, and libarcher.so (the OMPT tool for TSan);
#               the modules link libomp in place of GNU libgomp (libomp implements libgomp's
#               GOMP_* entry points and reports them to Archer)
# Why this combination: GNU libgomp is not instrumented and has no Archer, so TSan cannot see
# its barriers (every barrier-ordered access becomes a false report). Clang with libomp is the
# usual route, but clang 14's TSan (Debian 12) does not instrument 32-byte vector loads and
# stores at all, and the AVX2 kernel's gate pass and panel products are made of them: a barrier
# removed from the AVX2 forward went unreported while the results went wrong. GCC instruments
# every access (vectors as address ranges). RACE_CC=clang still works: the canary below finds
# out whether its TSan sees 32-byte accesses, and if not only the baseline kernel is checked.
#
# What it does, in a temporary directory (the repository is only read):
#   1. copies the source tree (tracked and untracked, not ignored, files; RACE_REV=<commit>
#      takes that commit instead) and replaces pyx/_blas.pxd by plain-loop GEMMs, so that TSan
#      sees the accesses of the kernel's products too (OpenBLAS is not instrumented);
#      RACE_BLAS=openblas keeps the real BLAS; RACE_PATCH=<file> applies a patch (patch -p1)
#      to the copy first (to see the check catch a race you introduce);
#   2. makes a venv (numpy, scipy, Cython, setuptools), builds the extensions in place with
#      -fsanitize=thread, OpenMP required, and checks that they are instrumented and use libomp;
#   3. builds and runs a canary: a prange whose threads all write one variable, and one whose
#      threads all store one 32-byte vector, which must be reported, and barrier-ordered
#      accesses, which must not (Archer at work);
#   4. runs tests/race_driver.py (every OpenMP region of forward, backward and the packing row
#      copies at 2, 3 and 4 threads, results checked against the serial call; forward of GRU,
#      GRUCell, and QuantizedGRU / QuantizedGRUCell in bfloat16 and int8, dense and packed) with
#      the AVX2 kernel where the CPU has it, and with the baseline kernel;
#   5. prints each TSan warning, with the .pyx line of every frame in cgru's generated C.
# Exit status: 0 no race in cgru's code; 1 a race reported in cgru's code, or the driver found a
# mismatch or crashed; 2 a missing tool or a failed setup (the message says which).
# Environment: PYTHON (default python3), RACE_CC (gcc or clang; default gcc), RACE_WORKDIR
# (reuse a directory and its venv; default a new temporary one), RACE_KEEP=1 (keep it),
# RACE_THREADS (default 2,3,4), RACE_ISAS (default: avx2 and baseline, as the CPU allows),
# RACE_TSAN_OPTIONS (added to TSAN_OPTIONS; halt_on_error=1 stops at the first report).
# About 5 minutes on 2 cores: 1.5 to 2 for the build, the rest the driver under TSan.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
CC_NAME=${RACE_CC:-gcc}
THREADS=${RACE_THREADS:-2,3,4}
start_time=$SECONDS

say() { printf '== %s\n' "$*"; }
die() { printf 'race_check: %s\n' "$*" >&2; exit 2; }

# -- tools ------------------------------------------------------------------------------------
need_apt="apt-get install gcc libomp-dev libtsan2"
[ "$CC_NAME" = gcc ] || [ "$CC_NAME" = clang ] || die "RACE_CC must be gcc or clang"
[ "$CC_NAME" = clang ] && need_apt="$need_apt clang"
command -v "$CC_NAME" >/dev/null || die "no '$CC_NAME' compiler (install: $need_apt)"
command -v "$PYTHON" >/dev/null || die "no '$PYTHON'"
# libomp and libarcher.so of one LLVM version, in one directory
omp_dirs=()
if command -v clang >/dev/null; then
    omp_dirs+=("$(cd "$(clang -print-resource-dir)/../.." && pwd)")   # e.g. /usr/lib/llvm-14/lib
fi
while IFS= read -r d; do
    omp_dirs+=("$d")
done < <(ls -d /usr/lib/llvm-*/lib 2>/dev/null | sort -rV)
omp_dirs+=(/usr/lib/x86_64-linux-gnu /usr/local/lib /usr/lib)
omp_dir=""
for d in "${omp_dirs[@]}"; do
    if [ -f "$d/libarcher.so" ] && { [ -e "$d/libomp.so.5" ] || [ -e "$d/libomp.so" ]; }; then
        omp_dir=$d; break
    fi
done
[ -n "$omp_dir" ] || die "no libomp.so with libarcher.so (LLVM's OpenMP runtime and its TSan \
tool) in ${omp_dirs[*]} (install: $need_apt)"
archer=$omp_dir/libarcher.so
libomp=$omp_dir/libomp.so.5
[ -e "$libomp" ] || libomp=$omp_dir/libomp.so
# a TSan runtime that starts when preloaded into an uninstrumented Python (clang 14's shared
# runtime does not: its __cxa_atexit interceptor runs before it is initialised, even for
# /bin/true; GCC's works for clang's instrumentation too)
candidates=()
[ "$CC_NAME" = clang ] && candidates+=("$(clang -print-file-name=libclang_rt.tsan-x86_64.so)")
candidates+=("$(gcc -print-file-name=libtsan.so 2>/dev/null || true)"
             /usr/lib/x86_64-linux-gnu/libtsan.so.2 /usr/lib/x86_64-linux-gnu/libtsan.so.0)
tsan_rt=""
for candidate in "${candidates[@]}"; do
    if [ -f "$candidate" ] && sh -c 'LD_PRELOAD=$1 /bin/true' _ "$candidate" 2>/dev/null; then
        tsan_rt=$(readlink -f "$candidate"); break
    fi
done
[ -n "$tsan_rt" ] || die "no TSan runtime that starts when preloaded (GCC's libtsan.so.2; \
install: $need_apt)"

# -- work directory ---------------------------------------------------------------------------
if [ -n "${RACE_WORKDIR:-}" ]; then
    work=$RACE_WORKDIR
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/cgru-race.XXXXXX")
    if [ "${RACE_KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
fi
src=$work/src
logs=$work/logs
rm -rf "$src" "$logs"
mkdir -p "$src" "$logs"
say "work directory $work"
say "$CC_NAME $("$CC_NAME" -dumpversion), TSan runtime $tsan_rt, OpenMP $libomp, Archer $archer"

# -- 1. the source tree -----------------------------------------------------------------------
if [ -n "${RACE_REV:-}" ]; then
    git -C "$repo" archive "$RACE_REV" | tar -x -C "$src"
    say "source: commit $(git -C "$repo" rev-parse --short "$RACE_REV")"
elif git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -x -C "$src"
    say "source: the working tree of $repo ($(git -C "$repo" rev-parse --short HEAD)$(
        git -C "$repo" diff --quiet HEAD -- pyx cgru setup.py || echo ', with local changes'))"
else
    (cd "$repo" && tar --exclude=build --exclude='*.so' --exclude=__pycache__ \
        --exclude='pyx/*.c' -cf - .) | tar -x -C "$src"
    say "source: a copy of $repo"
fi
if [ -n "${RACE_PATCH:-}" ]; then
    patch -d "$src" -p1 < "$RACE_PATCH" >/dev/null || die "RACE_PATCH $RACE_PATCH does not apply"
    say "applied $RACE_PATCH"
fi
if [ "${RACE_BLAS:-loops}" != openblas ]; then
    cat > "$src/pyx/_blas.pxd" <<'EOF'
# Race-check build only (tests/race_check.sh): pyx/_blas.pxd's row-major GEMMs as plain loops,
# compiled with -fsanitize=thread, so that TSan sees every access of the kernel's products
# (OpenBLAS is not instrumented). Same contracts; beta == 0 never reads C.
from cython cimport floating
from libc.stdint cimport int64_t


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      const floating *a, int lda, const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """C (m, n) = op(A) @ op(B) + beta * C: A (m, k), or (k, m) when trans_a; B (k, n), or
    (n, k) when trans_b."""
    cdef int i, j, p
    cdef floating s, x, y
    for i in range(m):
        for j in range(n):
            s = 0
            for p in range(k):
                x = a[<int64_t> p * lda + i] if trans_a else a[<int64_t> i * lda + p]
                y = b[<int64_t> j * ldb + p] if trans_b else b[<int64_t> p * ldb + j]
                s = s + x * y
            c[<int64_t> i * ldc + j] = s if beta == 0 else beta * c[<int64_t> i * ldc + j] + s
EOF
    say "BLAS: plain loops (instrumented) in place of OpenBLAS"
else
    say "BLAS: OpenBLAS (not instrumented: accesses inside its GEMMs are invisible to TSan)"
fi

# -- 2. venv and build ------------------------------------------------------------------------
venv=$work/venv
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv" || die "could not create a venv with $PYTHON"
fi
py=$venv/bin/python
"$py" -m pip install -q "numpy>=1.22" "scipy>=1.10" "Cython>=3.0.10" "setuptools>=77" wheel \
    > "$logs/pip.log" 2>&1 || { tail -20 "$logs/pip.log"; die "pip install failed"; }

# distutils puts CC (with its flags) in front of every compile and of the OpenMP probe's link,
# LDSHARED in front of the modules' links. With gcc, -fopenmp links "-lgomp": the -L folder
# answers that with LLVM's libomp (a libgomp.so link to it, as LLVM's own install can make).
mkdir -p "$work/omp"
ln -sf "$libomp" "$work/omp/libgomp.so"
san="-fsanitize=thread -L$work/omp -Wl,-rpath,$omp_dir"
export CC="$CC_NAME $san" LDSHARED="$CC_NAME $san -shared"
export CFLAGS="-g -fno-omit-frame-pointer" CGRU_REQUIRE_OPENMP=1
say "building the extensions with $CC (log: $logs/build.log)"
(cd "$src" && "$py" setup.py build_ext --inplace -j 2) > "$logs/build.log" 2>&1 \
    || { tail -30 "$logs/build.log"; die "the TSan build failed"; }
for so in "$src"/cgru/_gru_*.so "$src"/cgru/_rows*.so; do
    libs=$(ldd "$so")
    symbols=$(nm -D "$so")
    [[ $libs == *libomp.so* ]] || die "$(basename "$so") is not linked to LLVM's libomp"
    [[ $libs != *libgomp* ]] || die "$(basename "$so") uses GNU libgomp"
    [[ $symbols == *__tsan_func_entry* ]] || die "$(basename "$so") is not instrumented"
done

# The environment of every instrumented run.
run_tsan() {   # run_tsan <log prefix> <command...>
    local prefix=$1; shift
    env LD_PRELOAD="$tsan_rt" OMP_TOOL_LIBRARIES="$archer" ARCHER_OPTIONS="verbose=1" \
        TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=0 report_signal_unsafe=0 \
history_size=4 exitcode=0 log_path=$prefix ${RACE_TSAN_OPTIONS:-}" \
        OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=1 PYTHONPATH="$src" "$@"
}
# TSan writes its reports to <log prefix>.<pid>
reports_in() { cat "$1".[0-9]* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer' || true; }

# -- 3. the canary ----------------------------------------------------------------------------
canary=$work/canary
mkdir -p "$canary"
cat > "$canary/_race_canary.pyx" <<'EOF'
# cython: language_level=3, boundscheck=False, wraparound=False
from cython.parallel cimport parallel, prange
from _openmp cimport cgru_barrier, omp_get_num_threads, omp_get_thread_num


cdef extern from *:
    """
    typedef float canary_v8 __attribute__((vector_size(32), aligned(4)));
    static inline void canary_store8(float *p, float x) {   /* one 32-byte store */
        canary_v8 v = {x, x, x, x, x, x, x, x};
        *(canary_v8 *)p = v;
    }
    """
    void canary_store8(float *p, float x) noexcept nogil


def racy(double[::1] out, int n_threads):
    """Every iteration writes out[0]: a data race (a reduction would be out[0] += ...)."""
    cdef double *p = &out[0]
    cdef int i
    with nogil:
        for i in prange(1000, num_threads=n_threads, schedule="static", chunksize=1):
            p[0] = p[0] + i


def racy_vector(double[::1] out, int n_threads):
    """Every iteration stores 8 floats at one address, as the AVX2 kernel's vectors do."""
    cdef float *p = <float *> &out[0]
    cdef int i
    with nogil:
        for i in prange(1000, num_threads=n_threads, schedule="static", chunksize=1):
            canary_store8(p, i)


def clean(double[::1] out, int n_threads):
    """Each thread writes its slot, then after a barrier reads its neighbour's: no race."""
    cdef double *p = &out[0]
    cdef int t, n
    with nogil, parallel(num_threads=n_threads):
        t = omp_get_thread_num()
        n = omp_get_num_threads()
        p[t] = t + 1
        cgru_barrier()
        p[n + t] = p[(t + 1) % n]
EOF
cat > "$canary/setup.py" <<'EOF'
from setuptools import Extension, setup
from Cython.Build import cythonize
setup(ext_modules=cythonize([Extension("_race_canary", ["_race_canary.pyx"],
                                       extra_compile_args=["-fopenmp", "-O1"],
                                       extra_link_args=["-fopenmp"])],
                            include_path=[__import__("os").environ["CANARY_INCLUDE"]]))
EOF
(cd "$canary" && CANARY_INCLUDE="$src/pyx" "$py" setup.py build_ext --inplace) \
    > "$logs/canary_build.log" 2>&1 \
    || { tail -20 "$logs/canary_build.log"; die "the canary did not build"; }
unset CC LDSHARED CFLAGS CGRU_REQUIRE_OPENMP
canary_run() {   # canary_run <racy|racy_vector|clean>
    (cd "$canary" && run_tsan "$logs/canary_$1" "$py" -c \
        "import numpy as np, _race_canary as c; c.$1(np.zeros(64), 4)") \
        > "$logs/canary_$1.out" 2>&1 \
        || die "the canary $1 crashed: $(tail -5 "$logs/canary_$1.out")"
}
canary_run clean
canary_run racy
canary_run racy_vector
grep -q "Archer detected OpenMP application with TSan" "$logs/canary_clean.out" \
    || die "Archer did not start (OMP_TOOL_LIBRARIES=$archer): $(head -3 "$logs/canary_clean.out")"
racy_reports=$(reports_in "$logs/canary_racy")
if [ "$racy_reports" -eq 0 ] || ! grep -q '_race_canary' "$logs"/canary_racy.[0-9]*; then
    die "TSan did not report the canary's deliberate race: the detector is not working"
fi
if [ "$(reports_in "$logs/canary_clean")" -ne 0 ]; then
    cat "$logs"/canary_clean.[0-9]* >&2
    die "TSan reported barrier-ordered accesses as races: OpenMP's synchronisation is not seen"
fi
sees_vectors=1
[ "$(reports_in "$logs/canary_racy_vector")" -gt 0 ] || sees_vectors=0
say "canary: deliberate race reported, 32-byte vector race $(
    [ $sees_vectors = 1 ] && echo reported || echo 'NOT reported'), barrier-ordered accesses clean"

# -- 4. the driver ----------------------------------------------------------------------------
if [ -n "${RACE_ISAS:-}" ]; then
    isas=${RACE_ISAS//,/ }
else
    isas=$(cd "$work" && run_tsan "$logs/isas" "$py" -c "from cgru import _engine; print(' '.join(
        i for i in ('avx2', 'baseline') if i in _engine.available_isas()))" | grep -v '^Archer')
    if [ $sees_vectors = 0 ] && [[ " $isas " == *" avx2 "* ]]; then
        isas=${isas//avx2/}
        say "WARNING: this TSan ($CC_NAME) ignores 32-byte accesses, of which the avx2 kernel is \
made: checking the baseline kernel only (RACE_CC=gcc checks both)"
    fi
fi
status=0
for isa in $isas; do
    say "driver: $isa kernel, threads $THREADS"
    t0=$SECONDS
    set +e
    (cd "$work" && CGRU_ISA=$isa run_tsan "$logs/driver_$isa" "$py" \
        "$src/tests/race_driver.py" --threads "$THREADS") 2>&1 | tee "$logs/driver_$isa.out" \
        | grep -v '^Archer detected'
    rc=${PIPESTATUS[0]}
    set -e
    say "driver ($isa): exit status $rc, $((SECONDS - t0)) s," \
        "$(reports_in "$logs/driver_$isa") TSan warning(s)"
    [ "$rc" -eq 0 ] || status=1
done

# -- 5. the reports ---------------------------------------------------------------------------
# Frames in Cython's generated C are mapped to the .pyx/.pxi/.pxd line that C came from (the
# nearest /* "file":line comment above it in the same function; none for the C of the
# `cdef extern` blocks, whose function names are their own). Every report goes to
# $logs/reports.txt; the first few are printed, then each pair of racing places, counted.
"$py" - "$logs" "$src" > "$logs/summary.txt" <<'EOF'
import collections, glob, os, re, sys
logs, src = sys.argv[1:]
marker = re.compile(r'/\* "([^"]+)":(\d+)')
frame = re.compile(r"#\d+ (\S+) (\S+\.c):(\d+)")
cache = {}
def origin(c_file, line):
    path = c_file if os.path.isabs(c_file) else os.path.join(src, c_file)
    if path not in cache:
        try:
            with open(path, errors="replace") as f:
                cache[path] = f.read().splitlines()
        except OSError:
            cache[path] = []
    lines = cache[path]
    for i in range(min(line, len(lines)) - 1, -1, -1):
        if lines[i].startswith("}"):          # the end of the function before
            return None
        m = marker.search(lines[i])
        if m:
            return f"{m.group(1)}:{m.group(2)}"
    return None
def place(row):
    m = frame.search(row)
    if not m:
        return None
    where = origin(m.group(2), int(m.group(3)))
    return f"{m.group(1)} ({os.path.basename(m.group(2))}:{m.group(3)}" + \
        (f" = {where})" if where else ")")
reports, sites = [], collections.Counter()
ours = others = 0
for path in sorted(glob.glob(os.path.join(logs, "driver_*.[0-9]*"))):
    text = open(path, errors="replace").read()
    for report in re.split(r"(?m)^(?===================\nWARNING: ThreadSanitizer)", text):
        if "WARNING: ThreadSanitizer" not in report:
            continue
        rows = report.splitlines()
        mapped = []
        for row in rows:
            m = frame.search(row)
            where = origin(m.group(2), int(m.group(3))) if m else None
            mapped.append(row + (f"   [{where}]" if where else ""))
        mine = "/cgru/_" in report or "pyx/_" in report
        ours += mine
        others += not mine
        # each of the two accesses: its first frame, and the first that maps to a .pyx line
        firsts, stack = [], None
        for row in rows + [""]:
            if re.match(r"  (Previous )?(atomic )?(Read|Write|Atomic)", row, re.I):
                stack = []
            elif stack is not None and frame.search(row):
                stack.append(row)
            elif stack is not None:
                if stack:
                    first = place(stack[0])
                    if "=" not in first:
                        pyx = next((place(r) for r in stack[1:] if "=" in place(r)), None)
                        if pyx:
                            first += " in " + pyx
                    firsts.append(first)
                stack = None
        kind = next((r.split(" (pid")[0].replace("WARNING: ThreadSanitizer: ", "")
                     for r in rows if r.startswith("WARNING: ThreadSanitizer")), "?")
        sites[(kind, " <-> ".join(p for p in firsts if p) or "?")] += 1
        reports.append(f"--- {'cgru' if mine else 'outside cgru'}: {os.path.basename(path)}\n"
                       + "\n".join(mapped))
with open(os.path.join(logs, "reports.txt"), "w") as f:
    f.write("\n".join(reports) + "\n")
for r in reports[:3]:
    print(r)
if reports:
    print(f"--- {len(reports)} report(s) in all ({os.path.join(logs, 'reports.txt')}); "
          "by racing places:")
    for (kind, where), n in sites.most_common():
        print(f"  {n:5d}  {kind}: {where}")
print(f"SUMMARY {ours} {others}")
EOF
read -r _ ours others < <(tail -1 "$logs/summary.txt")
if [ "$ours" -gt 0 ] || [ "$others" -gt 0 ]; then
    sed '$d' "$logs/summary.txt"
fi
say "TSan: $ours warning(s) in cgru's code, $others elsewhere; $((SECONDS - start_time)) s in all"
if [ "$ours" -gt 0 ]; then
    say "RACE: ThreadSanitizer reported data races in cgru's OpenMP regions (above)"
    status=1
elif [ "$status" -ne 0 ]; then
    say "FAILED: the driver found threaded results that differ from the serial ones, or crashed"
else
    say "OK: no data race reported in cgru's OpenMP regions"
fi
[ "${RACE_KEEP:-0}" = 1 ] && say "logs kept in $logs"
exit "$status"
