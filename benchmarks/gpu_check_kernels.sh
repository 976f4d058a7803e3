#!/usr/bin/env bash
# The Triton kernels' GPU check (issue 21), about 3 minutes on an H100/H200; logs land in $OUT.
#   1. tests/kernels natively on CUDA (the kernels against their references, the wiring, the
#      sm_90 compile check);
#   2. benchmarks/gpu_kernels.py: the kernels against the framework path at 2N = 2048 and 8192
#      (d = 128, fp32): equal selections (Triton, and CUDA C for CuPy), the row pass's error,
#      and their times ($OUT/kernels.json);
#   3. `weince bench` (PyTorch and CuPy, CUDA, fp32) with the kernels and without
#      (WEINCE_KERNELS=0): $OUT/bench_kernels_1.json and _0.json.
#
#     OUT=gpu-logs bash benchmarks/gpu_check_kernels.sh      # from the repository root
#
# Run alone or from benchmarks/gpu_check.sh (which sets up PYTHONPATH and the wheels the same way).
set -uo pipefail
OUT=${OUT:-gpu-logs}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_INTERPRET WEINCE_KERNELS

kstep() {  # kstep SECONDS COMMAND...: time-limited, appended to $OUT/kernels.log
  local seconds=$1
  shift
  echo "=== $* (limit ${seconds}s)" | tee -a "$OUT/kernels.log"
  timeout "$seconds" "$@" 2>&1 | tee -a "$OUT/kernels.log"
  echo "=== exit ${PIPESTATUS[0]}" | tee -a "$OUT/kernels.log"
}

kstep 20 "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
kstep 150 "$PY" -m pytest -q -rs -p no:cacheprovider --durations=5 tests/kernels
kstep 60 "$PY" benchmarks/gpu_kernels.py --json "$OUT/kernels.json"
backends=torch
"$PY" -c "import cupy" 2>/dev/null && backends="torch cupy"
for setting in 1 0; do
  kstep 90 env WEINCE_KERNELS=$setting "$PY" -m weince bench --backends $backends --devices cuda \
    --dtypes float32 --sizes 2048 8192 --repeats 10 --json "$OUT/bench_kernels_$setting.json"
done
