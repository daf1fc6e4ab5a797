#!/usr/bin/env bash
# Run the decomposition benchmark in its own virtual environment.
#
# Creates benchmarks/.venv on first use, installs photocomp (editable) and the
# public peers (the `interferometer` package, Strawberry Fields 0.23's
# decompositions module), then runs benchmarks/decompositions.py with the
# arguments given here, e.g.
#
#     bash benchmarks/run.sh --sizes 16 32 64 128 256 512 1024 \
#         --whole-model 4096 --whole-devices 1 2 --plot benchmarks/decompositions.png
#
# A peer that fails to install is reported and left out of the table.
# Set PYTHON to choose the interpreter the environment is built from
# (default: python3, which must be >= 3.11). Set BENCH_REINSTALL=1 to force
# the installation step to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"
stamp="$venv/.photocomp-bench-installed"

warn() { printf 'run.sh: warning: %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
    echo "run.sh: creating $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"

if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "${BENCH_REINSTALL:-0}" = 1 ]; then
    "$py" -m pip install --quiet --upgrade pip || warn "could not upgrade pip; continuing"

    # The project itself. If its metadata cannot be built yet, fall back to
    # the source tree plus the packages the benchmark needs.
    if ! "$py" -m pip install --quiet -e "$root"; then
        warn "pip install -e . failed; installing with --no-deps plus jax numpy scipy"
        "$py" -m pip install --quiet -e "$root" --no-deps
        "$py" -m pip install --quiet jax numpy scipy
    fi
    "$py" -m pip install --quiet matplotlib || warn "matplotlib not installed; --plot will be unavailable"

    # Peers: failures are tolerated, the benchmark skips what it cannot import.
    "$py" -m pip install --quiet interferometer scipy \
        || warn "could not install the interferometer package; it will be skipped"
    if "$py" -m pip install --quiet --no-deps strawberryfields==0.23.0 thewalrus; then
        "$py" -m pip install --quiet dask numba sympy \
            || warn "could not install dask/numba/sympy; Strawberry Fields may be skipped"
    else
        warn "could not install strawberryfields==0.23.0 / thewalrus; they will be skipped"
    fi
    touch "$stamp"
fi

cd "$root"
exec "$py" benchmarks/decompositions.py "$@"
