#!/usr/bin/env bash
# GPU checks of the JAX adapter (issue 4): the GPU tests, then the speed figures. Logs into $OUT.
#
#   OUT=/some/dir bash benchmarks/gpu_check_jax.sh        # from the repository root, ~5 minutes
#
# Needs a CUDA build of jax; $PYTHON picks the interpreter. Each step has a time limit (about 9
# minutes in all); SPEED_SIZES and SELECTION_SIZE shrink the runs for a dry run on a CPU.
set -u
OUT=${OUT:-gpu-logs-jax}
PY=${PYTHON:-python}
SPEED_SIZES=${SPEED_SIZES:-2048 8192}
SELECTION_SIZE=${SELECTION_SIZE:-8192}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}"
for golden in ../shared/golden shared/golden; do
    if [ -z "${WEINCE_GOLDEN:-}" ] && [ -d "$golden" ]; then export WEINCE_GOLDEN="$PWD/$golden"; fi
done

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "   exit $? ($name)" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.txt"
}

step devices 60 "$PY" -c "import jax, jaxlib; print(jax.__version__, jaxlib.__version__, jax.devices())"
step pytest-gpu 180 "$PY" -m pytest -m gpu tests/jax -q -rs -s -p no:cacheprovider
# shellcheck disable=SC2086  # the sizes are words
step speed 150 "$PY" benchmarks/jax_speed.py --sizes $SPEED_SIZES --repeats 20 \
    --json "$OUT/speed.json"
step selection 90 "$PY" benchmarks/jax_speed.py --selection --sizes "$SELECTION_SIZE" \
    --repeats 10 --json "$OUT/selection.json"
step selection-clustered 90 "$PY" benchmarks/jax_speed.py --selection --sizes "$SELECTION_SIZE" \
    --inputs clustered --repeats 10 --json "$OUT/selection-clustered.json"
