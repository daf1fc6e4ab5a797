#!/usr/bin/env bash
# Run the decomposition benchmark in its own virtual environment.
#
# Creates benchmarks/.venv on first use, installs photocomp (editable) and the
# public peers (the `interferometer` package, Strawberry Fields 0.23 with its
# dependencies) in one resolver run under the pins below, checks that pip
# reports no broken requirement and that every peer imports, then runs
# benchmarks/decompositions.py with the arguments given here, e.g.
#
#     bash benchmarks/run.sh --sizes 16 32 64 128 256 512 1024 \
#         --whole-model 0 --plot benchmarks/decompositions.png
#
# (the whole-model compile needs no peers: python benchmarks/decompositions.py --only whole-model)
#
# A peer that fails to install or import is reported and left out of the table.
# Set PYTHON to choose the interpreter the environment is built from
# (default: python3, which must be >= 3.11). Set BENCH_REINSTALL=1 to force
# the installation step to run again, BENCH_VENV to build the environment
# elsewhere, and BENCH_INSTALL_ONLY=1 to install and check without running
# the benchmark.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${BENCH_VENV:-$here/.venv}"
stamp="$venv/.photocomp-bench-installed"

# Strawberry Fields 0.23 (its last release) imports scipy.integrate.simps, which SciPy 1.14
# removed, so the environment holds SciPy 1.13; everything else follows from that
# (benchmarks/README.md, "Peer environment", says why each pin is there).
PINS="scipy==1.13.1
numpy==2.2.6
jax==0.9.2
jaxlib==0.9.2
thewalrus==0.21.0
strawberryfields==0.23.0
networkx==3.6.1"

warn() { printf 'run.sh: warning: %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
    echo "run.sh: creating $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "run.sh: error: $venv has Python < 3.11; set PYTHON to a newer interpreter" >&2; exit 2; }

if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "${BENCH_REINSTALL:-0}" = 1 ] \
        || [ "$(cat "$stamp")" != "$PINS" ]; then
    rm -f "$stamp"
    constraints="$venv/bench-constraints.txt"
    printf '%s\n' "$PINS" > "$constraints"
    pip_install() { "$py" -m pip install --quiet --disable-pip-version-check -c "$constraints" "$@"; }

    "$py" -m pip install --quiet --upgrade pip || warn "could not upgrade pip; continuing"

    # One resolver run for the project and every peer, so pip sees all requirements at once.
    if ! pip_install -e "$root" matplotlib interferometer strawberryfields; then
        warn "installing photocomp with the peers failed; installing them one at a time"
        pip_install -e "$root" || { echo "run.sh: error: cannot install photocomp" >&2; exit 1; }
        pip_install matplotlib || warn "matplotlib not installed; --plot will be unavailable"
        pip_install interferometer || warn "could not install the interferometer package; it will be skipped"
        pip_install strawberryfields || warn "could not install strawberryfields; it will be skipped"
    fi
    "$py" -m pip check || warn "pip reports broken requirements (above)"
    printf '%s\n' "$PINS" > "$stamp"
fi

for peer in interferometer strawberryfields thewalrus; do
    "$py" -c "import $peer" 2>/dev/null || warn "$peer does not import; the benchmark will skip what needs it"
done
if [ "${BENCH_INSTALL_ONLY:-0}" = 1 ]; then
    "$py" -c 'import importlib.metadata as m
for name in ("jax", "numpy", "scipy", "networkx", "interferometer", "strawberryfields", "thewalrus"):
    try:
        print(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"{name} (not installed)")'
    exit 0
fi

cd "$root"
exec "$py" benchmarks/decompositions.py "$@"
