#!/usr/bin/env bash
# The JAX adapter's GPU checks (issue 4): the `gpu` tests of tests/jax_adapter (reference vectors,
# CPU equality, placement), then `weince bench --backends jax --devices cuda`: forward + backward
# against a minimal jitted InfoNCE at 2N = 2048 and 8192 (the goal: paper <= 2.0x at 8192), and
# the paper preset at 8192 on clustered inputs (the hard case for the tail selections; the
# selection primitives alone: benchmarks/gpu_primitives.py). Logs and JSON land in $OUT (default
# ./weince-out/jax). About 5 minutes; each stage has its own limit, together 490 s at most.
#
# From the repository root on a machine with a CUDA build of jax:
#     bash benchmarks/gpu_check_jax.sh
# With a proposed core in .device/core_jax/weince_core, the speed benchmark runs once more with
# it. Packages the machine lacks (array-api-compat) may come as wheels in .whl/. SPEED_SIZES
# shrinks the runs (a dry run on a CPU: add DEVICES=cpu).
set -uo pipefail
OUT=${OUT:-weince-out/jax}
PY=${PYTHON:-python3}
SPEED_SIZES=${SPEED_SIZES:-2048 8192}
DEVICES=${DEVICES:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # tests/conftest.py may probe torch's GPU as well

if ! "$PY" -c "import array_api_compat" 2>/dev/null && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}

status=0
stage() {  # stage SECONDS NAME COMMAND...: run it with a time limit, its log in $OUT/NAME.log
  local seconds=$1 name=$2
  shift 2
  timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log" || status=1
}
stage 30 devices "$PY" -c "import jax, jaxlib; print(jax.__version__, jaxlib.__version__, jax.devices())"
stage 150 pytest_gpu "$PY" -m pytest tests/jax_adapter -m gpu -q -rs -s -p no:cacheprovider --durations=5
BENCH=("$PY" -m weince bench --backends jax --devices "$DEVICES" --dtypes float32)
# shellcheck disable=SC2086  # the sizes are separate words
stage 110 jax_speed "${BENCH[@]}" --sizes $SPEED_SIZES --json "$OUT/jax_speed.json"
stage 60 jax_speed_clustered "${BENCH[@]}" --sizes "${SPEED_SIZES##* }" --presets paper \
  --inputs clustered --repeats 10 --json "$OUT/jax_speed_clustered.json"
if [ -d .device/core_jax/weince_core ]; then  # a proposed core, measured on the same machine
  # shellcheck disable=SC2086
  PYTHONPATH=$PWD/.device/core_jax:$PYTHONPATH stage 90 jax_speed_core_jax "${BENCH[@]}" \
    --sizes $SPEED_SIZES --json "$OUT/jax_speed_core_jax.json"
  PYTHONPATH=$PWD/.device/core_jax:$PYTHONPATH stage 50 jax_speed_core_jax_clustered \
    "${BENCH[@]}" --sizes "${SPEED_SIZES##* }" --presets paper --inputs clustered
fi
exit $status
