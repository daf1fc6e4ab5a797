#!/usr/bin/env bash
# The speed tables an accelerator changes, on JAX's default backend, into one markdown file.
#
#     bash benchmarks/accelerator.sh [OUT]          (OUT defaults to benchmarks/GPU.md)
#
# Runs, in this order, each under a time limit of its own (seconds, in the table below), so that one
# table that runs long leaves the others their share:
#   end_to_end.py       pc.compile warm at N = 64, 256, 1024, and the cold starts (fresh processes)
#   decompositions.py   photocomp's Clements and Reck kernels, the batched kernel, the 4096² whole model
#   calibration_speed.py  model calibration, first and second chip, in fresh processes
#   simulation.py       tile matrices, gradients and batched forward passes
# Each script writes its own section of OUT between its markers when it finishes; one stopped at its
# limit writes nothing and the others still run. The machine line of every section names the
# accelerator (benchmarks/_report.py). PYTHON chooses the interpreter (default python3, with photocomp
# installed); BENCH_QUICK=1 runs every table at smoke size, to check the script on a CPU.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-benchmarks/GPU.md}"
py="${PYTHON:-python3}"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    e2e=(--sizes 64 --repeats 1 --warmup 0 --budget-s 5 --cold-repeats 1)
    dec=(--sizes 16 32 --repeats 2 --warmup 0 --budget-s 5 --batch 8 --batch-n 16 --whole-model 128)
    cal=(--cases clements-8:1 --steps 20 --repeats 1)
    sim=(--target clements-16 --repeats 3 --steps 20 --no-reference-calibration)
    limits=(300 300 300 300)
else
    e2e=(--sizes 64 256 1024 --repeats 3 --warmup 1 --budget-s 10 --cold-repeats 1)
    dec=(--sizes 64 256 1024 --repeats 5 --warmup 1 --budget-s 15 --whole-model 4096 --whole-timeout-s 110)
    cal=(--cases pace-64:1 pace-64:2 --repeats 2)
    sim=(--target pace-64 --repeats 30 --steps 300 --no-reference-calibration)
    limits=(170 170 110 90)
fi

status=0
step() {
    local limit=$1
    shift
    echo "== $* (limit ${limit} s)" >&2
    local start=$SECONDS
    timeout "$limit" "$py" "$@" --out "$out"
    local rc=$?
    echo "== exit ${rc} after $((SECONDS - start)) s" >&2
    [ "$rc" = 0 ] || status=1
}

step "${limits[0]}" benchmarks/end_to_end.py "${e2e[@]}"
step "${limits[1]}" benchmarks/decompositions.py --only photocomp whole-model --batch-devices 1 --whole-devices 1 \
    "${dec[@]}"
step "${limits[2]}" benchmarks/calibration_speed.py "${cal[@]}"
step "${limits[3]}" benchmarks/simulation.py "${sim[@]}"
exit "$status"
