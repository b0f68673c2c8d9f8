#!/usr/bin/env bash
# Every optimisation level computes the same bits: the kernel fuses exactly the multiply-adds it
# writes (CGRU_FMA, pyx/include/cgru_vec.h) and builds with -ffp-contract=off, so a build at -O1
# (as tests/sanitize.sh builds) gives what the shipped -O3 build gives. This builds a copy of
# the tracked tree at each level given (default: -O1 -O3) and compares the outputs of
# tests/opt_levels_driver.py, bit for bit, for every kernel build this CPU runs. Opt-in (about
# 1 min per level on 2 cores); exit status 1 when any output differs.
#
#   tests/check_opt_levels.sh [-O1 -O2 -O3]       (uses the python on PATH: numpy, scipy, Cython)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -eq 0 ]; then levels=(-O1 -O3); else levels=("$@"); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for level in "${levels[@]}"; do
    dir="$work/build$level"
    mkdir -p "$dir"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -c) |
        tar -x -C "$dir"
    sed -i "s/\"-O3\", \"-ffp-contract=off\"/\"$level\", \"-ffp-contract=off\"/" "$dir/setup.py"
    grep -q "\"$level\", \"-ffp-contract=off\"" "$dir/setup.py"
    (cd "$dir" && python setup.py -q build_ext --inplace >"$work/build$level.log" 2>&1) ||
        { tail -n 30 "$work/build$level.log"; exit 2; }
done
first=${levels[0]}
isas=$(cd "$work" && PYTHONPATH="$work/build$first" python -c \
    "from cgru import _engine; print(' '.join(_engine.available_isas()))")
for isa in $isas; do
    (cd "$work" && CGRU_ISA=$isa PYTHONPATH="$work/build$first" \
        python "$repo/tests/opt_levels_driver.py" save "$work/$isa.npz" >/dev/null)
    for level in "${levels[@]:1}"; do
        echo -n "$isa $first vs $level: "
        (cd "$work" && CGRU_ISA=$isa PYTHONPATH="$work/build$level" \
            python "$repo/tests/opt_levels_driver.py" cmp "$work/$isa.npz") || status=1
    done
done
exit $status
