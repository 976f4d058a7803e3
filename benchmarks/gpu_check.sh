#!/usr/bin/env bash
# Every GPU check of the project in one run (about 8 minutes on an H100): the GPU tests of the
# core and the adapters, the cross-backend check, and the speed figures. Logs land in $OUT.
#
#     OUT=gpu-logs bash benchmarks/gpu_check.sh      # from the repository root
#
# The reference vectors are the repository's (tests/data); missing pure-Python packages
# (array-api-compat, -strict, -extra) may come as wheels in .whl/.
set -uo pipefail
OUT=${OUT:-gpu-logs}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if ! "$PY" -c "import array_api_compat" 2>/dev/null && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}

step() {  # step LOG SECONDS COMMAND...: time-limited, appended to $OUT/LOG.log
  local log=$1 seconds=$2
  shift 2
  echo "=== $* (limit ${seconds}s)" | tee -a "$OUT/$log.log"
  timeout "$seconds" "$@" 2>&1 | tee -a "$OUT/$log.log"
  echo "=== exit ${PIPESTATUS[0]}" | tee -a "$OUT/$log.log"
}

step tests 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step tests 240 "$PY" -m pytest -q -rs -p no:cacheprovider --durations=8 \
  tests/core/test_golden.py -k "cuda or gpu or cupy" \
  tests/cupy_adapter tests/torch_adapter/test_torch_cuda.py tests/jax_adapter/test_jax_gpu.py
step crosscheck 240 "$PY" -m weince crosscheck --sizes 256 --preset all --steps 2 --json "$OUT/crosscheck.json"
step speed 240 "$PY" -m weince bench --devices cuda --repeats 10 --json "$OUT/bench.json" \
  --plot "$OUT/bench.png"
step primitives 90 "$PY" benchmarks/gpu_primitives.py
# The Triton kernels (about 3 minutes): their tests natively, against the framework path, and
# `weince bench` with and without them; logs in $OUT/kernels.log.
OUT="$OUT" PYTHON="$PY" bash benchmarks/gpu_check_kernels.sh
