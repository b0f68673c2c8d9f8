#!/usr/bin/env bash
# Build cgru with AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer) and run the
# test suite under them. Nothing is shared with the normal build: the source tree is copied into
# a temporary directory (so no object file in build/ and no .so is reused) and installed into a
# virtual environment of its own.
#
#   bash tests/sanitize.sh            # the whole suite (tens of minutes on 2 cores)
#   bash tests/sanitize.sh --quick    # a short selection (CI): every kernel path, every ISA build
#   bash tests/sanitize.sh -- -k cell # any other pytest selection
#
# The sanitizer venv is the project's [test] extra without torch, keras, onnx and onnxruntime
# (their tests compare against the framework live and skip; the golden fixtures they wrote still
# run): those big prebuilt libraries are not what is being checked, and under ASan they are slow
# and noisy. Every report of any process of the run (pytest and the subprocesses some tests
# start: the other ISA builds, the command line, dask and fuzz workers) goes to a log file;
# the run fails if pytest fails or if any log holds an ASan, UBSan or LeakSanitizer report.
#
# Environment: CGRU_SANITIZE_VENV=DIR keeps the venv there (reused when it exists: quicker
# reruns); CGRU_SANITIZE_OPT=-O1 the optimisation level of the sanitized build (default -O1:
# -O3, as shipped, builds 5x slower); CGRU_SANITIZE_KEEP=1 keeps the temporary directory;
# PYTHON the interpreter for the venv (default python3). OpenMP regions run on every core the
# process may use (OMP_NUM_THREADS=2 where that is one; or whatever OMP_NUM_THREADS says).
# Options: --venv DIR (as CGRU_SANITIZE_VENV), --keep, --untracked (copy new files git does
# not ignore, too: by default the copy is the tracked files, as they are on disk).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

quick=0
untracked=0
pytest_args=()
while (($#)); do
    case $1 in
        --quick) quick=1 ;;
        --venv) venv_dir=$2; shift ;;
        --keep) CGRU_SANITIZE_KEEP=1 ;;
        --untracked) untracked=1 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "sanitize.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
opt=${CGRU_SANITIZE_OPT:--O1}
venv_dir=${venv_dir:-${CGRU_SANITIZE_VENV:-}}
work=$(mktemp -d "${TMPDIR:-/tmp}/cgru-sanitize.XXXXXX")
cleanup() {
    if [ "${CGRU_SANITIZE_KEEP:-0}" = 1 ]; then
        echo "sanitize.sh: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
src=$work/src
logs=$work/logs
mkdir -p "$src" "$logs" "$work/bin"
start=$SECONDS
step() { printf '== sanitize [%4ds] %s\n' "$((SECONDS - start))" "$*"; }

# This workplace keeps a CPU build of torch in /opt/wheels (unused here, but harmless).
if [ -d /opt/wheels ] && [ -z "${PIP_FIND_LINKS:-}" ]; then
    export PIP_FIND_LINKS=/opt/wheels
fi

step "copying the source tree into $src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked files as they are on disk (with --untracked, also new files git does not ignore);
    # never build/, *.so, generated C
    others=()
    if ((untracked)); then others=(--others --exclude-standard); fi
    (cd "$repo" && git ls-files -z --cached "${others[@]}" |
        while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -xf - -C "$src"
else
    (cd "$repo" && tar --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.so' \
        --exclude='*.o' --exclude='*.egg-info' --exclude='./pyx/*.c' --exclude=__pycache__ \
        --exclude=.hypothesis -cf - .) | tar -xf - -C "$src"
fi

if [ -z "$venv_dir" ]; then
    venv_dir=$work/venv
fi
if [ ! -x "$venv_dir/bin/python" ]; then
    step "creating the venv $venv_dir"
    "$python" -m venv "$venv_dir"
fi
vpy=$venv_dir/bin/python

step "installing the build and test requirements (pyproject.toml, [test] without frameworks)"
# Read from pyproject.toml, so that this list follows the project's.
mapfile -t requirements < <("$vpy" - "$src/pyproject.toml" <<'EOF'
import re, sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
skip = {"torch", "keras", "onnx", "onnxruntime"}   # live framework comparisons: they skip
reqs = project["build-system"]["requires"] + project["project"]["dependencies"]
reqs += [r for r in project["project"]["optional-dependencies"]["test"]
         if re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() not in skip]
print("\n".join(reqs))
EOF
)
"$vpy" -m pip install --disable-pip-version-check "${requirements[@]}" >"$logs/pip.log" 2>&1 || {
    tail -n 40 "$logs/pip.log"
    echo "sanitize.sh: installing the requirements failed (log above)" >&2
    exit 1
}

step "building cgru with -fsanitize=address,undefined $opt"
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# The compiler, through a wrapper: setup.py puts its own -O3 last on the command line, which
# the wrapper swaps for $opt; and setuptools links setup.py's OpenMP probe without LDFLAGS,
# so the wrapper adds the sanitizer flags to every compile and link (CFLAGS and LDFLAGS say
# the same for the extensions themselves).
cat >"$work/bin/cc" <<EOF
#!/usr/bin/env bash
args=()
for a in "\$@"; do
    case \$a in -O | -O[0-3s] | -Ofast | -Og | -Oz) a=$opt ;; esac
    args+=("\$a")
done
exec ${CC:-gcc} $sanitize "\${args[@]}"
EOF
chmod +x "$work/bin/cc"
# the extensions compile side by side (this setup.cfg exists in the copy only)
printf '[build_ext]\nparallel = %s\n' "$(nproc)" >"$src/setup.cfg"
(cd "$src" && CC="$work/bin/cc" CFLAGS="-g $sanitize" LDFLAGS="$sanitize" \
    CGRU_REQUIRE_OPENMP=1 "$vpy" -m pip install -q --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall . >"$logs/build.log" 2>&1) || {
    tail -n 60 "$logs/build.log"
    echo "sanitize.sh: the sanitized build failed (log above)" >&2
    exit 1
}
# the build really is instrumented
for so in "$venv_dir"/lib/python3*/site-packages/cgru/_*.so; do
    if ! nm -D "$so" | grep __asan_report >/dev/null; then
        echo "sanitize.sh: $so is not built with ASan" >&2
        exit 1
    fi
done

if ((${#pytest_args[@]} == 0)); then
    if ((quick)); then
        # forward (dense, packed, every kernel path and thread split, the reduced-precision
        # kernels), backward/vjp, the cell, optimizers and clipping, packing and padding, bad
        # input; test_isa_builds runs the parity, reference, thread, kernel-path and gradient
        # tests again on every other ISA build this CPU runs, in subprocesses (which inherit
        # the sanitizers)
        pytest_args=(tests/test_parity_fixtures.py tests/test_reference.py
                     tests/test_kernel_paths.py tests/test_threads.py tests/test_grad_parity.py
                     tests/test_quantized.py tests/test_packing.py tests/test_cell.py
                     tests/test_optim.py tests/test_clip.py tests/test_bad_input.py
                     tests/test_dropout.py tests/test_isa_builds.py)
    else
        # The whole suite but two tests that cannot hold under ASan: the soak's resident-memory
        # trend measures ASan's quarantine and shadow memory, not cgru (LeakSanitizer checks
        # leaks here instead), and the fuzz harness's self-test kills its worker with SIGSEGV,
        # which ASan's signal handler reports (exit status 86) instead of dying of it.
        pytest_args=(tests
                     --deselect tests/test_soak.py::test_soak_memory_descriptors_and_threads_stay_flat
                     --deselect tests/test_fuzz.py::test_a_crash_is_a_failed_case_and_the_run_goes_on)
    fi
fi
# OpenMP regions must run on more than one thread. cgru's default is every core the process
# may use; where that is one, OMP_NUM_THREADS=2 (which a test of dask's nanny, whose workers
# get OMP_NUM_THREADS=1 unless the environment sets it, cannot then hold).
threads=()
if [ -z "${OMP_NUM_THREADS:-}" ] && (($("$vpy" -c 'import os; print(len(os.sched_getaffinity(0)))') < 2)); then
    threads=(OMP_NUM_THREADS=2)
    pytest_args+=(--deselect tests/test_dask.py::test_task_threads_on_single_threaded_workers)
fi

step "running pytest under ASan + UBSan + LSan: ${pytest_args[*]}"
# The interpreter is not instrumented: the runtimes come first, by LD_PRELOAD, in every process.
# ASan writes its reports (LeakSanitizer's too) to log_path. UBSan cannot: with ASan loaded
# both export __sanitizer_set_report_path and ASan's wins, so libubsan prints to stderr only,
# which a test may capture and drop. This little library, preloaded before libubsan, gets its
# __ubsan_on_report hook (called for every report, before the halt) and appends the report to
# $logs/ubsan.<pid>.
cat >"$work/ubsan_log.c" <<'EOF'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void __ubsan_get_current_report_data(const char **kind, const char **message,
                                     const char **file, unsigned *line, unsigned *col,
                                     char **address);

void __ubsan_on_report(void) {
    const char *kind = "", *message = "", *file = "", *dir = getenv("CGRU_SANITIZE_LOGS");
    unsigned line = 0, col = 0;
    char *address = NULL, path[4096];
    int fd;
    if (dir == NULL)
        return;
    __ubsan_get_current_report_data(&kind, &message, &file, &line, &col, &address);
    snprintf(path, sizeof path, "%s/ubsan.%d", dir, (int)getpid());
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dprintf(fd, "%s:%u:%u: runtime error: %s [%s]\n", file, line, col, message, kind);
        close(fd);
    }
}
EOF
"${CC:-gcc}" -shared -fPIC -O1 -o "$work/libubsan_log.so" "$work/ubsan_log.c"
libs="$(gcc -print-file-name=libasan.so) $work/libubsan_log.so $(gcc -print-file-name=libubsan.so)"
# LeakSanitizer runs at each process's exit. Module initialisation in NumPy, SciPy,
# scikit-learn (and the interpreter's own extension modules) leaves objects it never frees:
# numpy's init_string_ufuncs, f2py's PyFortranObject_NewAsAttr in scipy.linalg, the ufuncs of
# scipy.special, ~800-1500 blocks in every process. Their stacks stop in the interpreter (built
# without frame pointers: the fast unwinder ends at its first frame, and the slow one makes the
# suite 6-40x slower), where no suppression could tell them from any other object, cgru's
# included. So every Python process of the run turns leak detection off for its thread
# (__lsan_disable) while it imports a module from the interpreter's or the venv's own files,
# except cgru's; never while cgru is imported, and never for anything a module does after its
# import. The hook is a .pth file in the venv's site-packages, so that it holds in every
# process, whatever PYTHONPATH a test gives its subprocesses (outside the sanitizers it does
# nothing). tests/lsan.supp holds the rest, each entry with its reason.
purelib=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import cgru_sanitize_hook" >"$purelib/cgru_sanitize_hook.pth"
cat >"$purelib/cgru_sanitize_hook.py" <<'EOF'
"""Written by tests/sanitize.sh: LeakSanitizer off while a module that is not cgru is imported
from the interpreter's or the venv's files (their import-time objects are never freed)."""
import ctypes
import os
import sys
import threading

try:
    _runtime = ctypes.CDLL(None)
    _disable, _enable = _runtime.__lsan_disable, _runtime.__lsan_enable
except (OSError, AttributeError):               # not under the sanitizers
    _disable = None

if _disable is not None:
    _PREFIXES = tuple(os.path.join(p, "") for p in
                      {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})
    _depth = threading.local()                  # __lsan_disable counts per thread, so do we

    def _off():
        _disable()
        _depth.n = getattr(_depth, "n", 0) + 1

    def _on():
        _depth.n -= 1
        _enable()

    class _Loader:
        """The module's loader, its create_module and exec_module run quietly (or, for cgru,
        loudly: with every enclosing import's _off undone)."""

        def __init__(self, loader, quiet):
            self._loader, self._quiet = loader, quiet

        def __getattr__(self, name):
            return getattr(self._loader, name)

        def _run(self, method, arg):
            n = getattr(_depth, "n", 0)
            if self._quiet:
                _off()
            else:
                for _ in range(n):
                    _on()
            try:
                return method(arg)
            finally:
                if self._quiet:
                    _on()
                else:
                    for _ in range(n):
                        _off()

        def create_module(self, spec):
            return self._run(self._loader.create_module, spec)

        def exec_module(self, module):
            return self._run(self._loader.exec_module, module)

    class _Finder:
        def find_spec(self, name, path=None, target=None):
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            loader, origin = spec.loader, spec.origin or ""
            if loader is None or not hasattr(loader, "exec_module"):
                return spec
            if name.partition(".")[0] == "cgru":
                spec.loader = _Loader(loader, quiet=False)
            elif origin in ("built-in", "frozen") or origin.startswith(_PREFIXES):
                spec.loader = _Loader(loader, quiet=True)
            return spec

    sys.meta_path.insert(0, _Finder())

    # distributed's event-loop thread (an in-process LocalCluster's): the interpreter leaves
    # a frame object and sys.get_asyncgen_hooks()'s result of it unfreed at exit (LSan, with
    # the slow unwinder: _PyFrame_Clear's take_ownership, sys_get_asyncgen_hooks_impl). Tasks
    # run in executor threads, not there.
    _thread_run = threading.Thread.run

    def _run(self):
        if self.name == "IO loop":
            _off()
        return _thread_run(self)

    threading.Thread.run = _run
EOF
# allocator_may_return_null: a huge request fails as under glibc (MemoryError), not as an ASan
# crash, and max_allocation_size_mb makes one over 3 GB such a request (a test's memory cap by
# RLIMIT_AS cannot work here: ASan's shadow reserves terabytes of address space, hence
# CGRU_FUZZ_MEMORY_MB below). log_path: every process's reports, subprocesses' included, land
# in $logs, whatever the test does with their stderr.
asan="detect_leaks=1:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1"
asan+=":max_allocation_size_mb=3072:strict_string_checks=1:check_initialization_order=1"
asan+=":exitcode=86:log_path=$logs/asan:log_exe_name=1"
# PYTHONMALLOC=malloc: every Python object from malloc, so ASan guards it too and LSan can follow
# pointers through it (pymalloc's arenas are mmap'd memory that LSan does not scan). Dask's
# nanny restarts a worker whose memory passes its limit, and ASan's shadow memory and
# quarantine count in a process's RSS: the run turns that policy off. Dask's statistical
# profiler samples every thread with sys._current_frames(), which in Python 3.11 leaks a frame
# object now and then (LSan: 232 bytes from _PyThread_CurrentFrames, in workers and in the
# process of an in-process cluster), with a stack the fast unwinder cuts before any frame a
# suppression could name: the run turns the profiler off (no test looks at it).
run_pytest() {
    set +e
    (cd "$src" &&
        env LD_PRELOAD="$libs" ASAN_OPTIONS="$asan" \
            LSAN_OPTIONS="suppressions=$repo/tests/lsan.supp:print_suppressions=0" \
            UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=86" CGRU_SANITIZE_LOGS="$logs" \
            PYTHONMALLOC=malloc \
            "${threads[@]}" \
            CGRU_FUZZ_MEMORY_MB=$((1 << 27)) \
            DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE=false \
            DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE=false \
            DASK_DISTRIBUTED__WORKER__MEMORY__SPILL=false \
            DASK_DISTRIBUTED__WORKER__MEMORY__TARGET=false \
            DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=false \
            "$venv_dir/bin/pytest" -q -p no:cacheprovider "${pytest_args[@]}") 2>&1 |
        tee "$logs/pytest.log"
    status=${PIPESTATUS[0]}
    set -e
}

collect_reports() {
    step "pytest exit status $status; checking the sanitizer logs"
    reports=()
    # ASan and the UBSan hook write these files only to report something (an unreadable
    # suppressions file included), but for the warning that a huge request returned NULL
    # (allocator_may_return_null: the MemoryError the tests expect); pytest's own output is
    # searched for what reached a stderr.
    for f in "$logs"/asan* "$logs"/ubsan* "$logs/pytest.log"; do
        [ -e "$f" ] || continue
        if [ "$f" != "$logs/pytest.log" ] && ! grep -q -v -E \
            '^(==[^ ]*==WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes)?$' "$f"; then
            continue
        fi
        if [ "$f" != "$logs/pytest.log" ] || grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|LeakSanitizer|runtime error:|SUMMARY: (Address|Undefined)Sanitizer' "$f"; then
            reports+=("$f")
        fi
    done
}

# Only LeakSanitizer's own tracer failing at a process's exit (the runtime's fault, seen now and
# then on this VM; the process's leaks go unchecked, nothing was found): run once more.
only_tracer_failures() {
    ((${#reports[@]})) || return 1
    local f
    for f in "${reports[@]}"; do
        grep -q "LeakSanitizer has encountered a fatal error" "$f" || return 1
        ! grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|detected memory leaks|runtime error:|SUMMARY: (Address|Undefined|Leak)Sanitizer' "$f" || return 1
    done
}

for attempt in 1 2; do
    rm -f "$logs"/asan* "$logs"/ubsan*
    run_pytest
    collect_reports
    if ((attempt == 1)) && only_tracer_failures; then
        step "LeakSanitizer's tracer failed at a process's exit (the runtime's fault, not a finding): running the suite once more"
        continue
    fi
    break
done
if ((${#reports[@]})); then
    for f in "${reports[@]}"; do
        echo "---- $f"
        if [ "$f" = "$logs/pytest.log" ]; then
            grep -n -E -A 12 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$f" | head -n 120
        else
            head -n 120 "$f"
        fi
    done
    echo "sanitize.sh: ${#reports[@]} sanitizer report(s), above" >&2
    if grep -q -s "LeakSanitizer has encountered a fatal error" "${reports[@]}"; then
        # seen now and then at the exit of a pytest that ran tests/test_fuzz.py last
        echo "sanitize.sh: (LeakSanitizer's own tracer failed at a process's exit, the" \
            "runtime's fault, not a finding: that process's leaks went unchecked; run again)" >&2
    fi
    CGRU_SANITIZE_KEEP=1
    exit 1
fi
if ((status)); then
    echo "sanitize.sh: pytest failed under the sanitizers (exit status $status)" >&2
    exit "$status"
fi
step "clean: no ASan, UBSan or LeakSanitizer report"
