#!/usr/bin/env bash
# The PyTorch adapter's GPU checks, in one go: the `gpu` tests of tests/torch_adapter (CUDA equality with
# CPU float64, no host synchronisation, every tensor on the GPU, torch.compile on CUDA, autocast)
# and the speed and memory figures of `weince bench --backends torch --devices cuda` (fp32 and
# bf16, eager and compiled). Its logs (and one JSON file) land in $OUT (default ./weince-out).
# With a proposed core in .device/core_opt/weince_core, the fp32 benchmark runs once more with it.
#
# From the repository root on a machine with a CUDA GPU:
#     bash benchmarks/gpu_check_torch.sh
# Each stage has its own time limit; all together they stay under 10 minutes.
# Python packages the machine lacks (array-api-compat) may come as wheels in .whl/.
set -uo pipefail
OUT=${OUT:-weince-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # tests/conftest.py probes JAX's GPU: leave memory to torch

if ! "$PY" -c "import array_api_compat" 2>/dev/null && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}

status=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" -c "import torch, weince_torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  timeout 240 "$PY" -m pytest tests/torch_adapter -m gpu -q -rs -p no:cacheprovider --durations=5
} 2>&1 | tee "$OUT/pytest_gpu.log" || status=1

bench() {  # bench SECONDS NAME ARGS...: one `weince bench` run, its table in $OUT/NAME.log
  local seconds=$1 name=$2
  shift 2
  timeout "$seconds" "$PY" -m weince bench --backends torch --devices cuda --dim 128 "$@" 2>&1 \
    | tee "$OUT/$name.log" || status=1
}
bench 100 torch_speed_fp32 --dtypes float32 --sizes 512 2048 8192 --json "$OUT/torch_speed_fp32.json"
bench 60 torch_speed_bf16 --dtypes bfloat16 --sizes 2048 8192
bench 110 torch_speed_compiled --dtypes float32 --sizes 8192 --presets paper --compile --repeats 30
# CUDA graphs: small batches are bound by launches (the 2N = 2048 goal against the published figure)
bench 150 torch_speed_cudagraphs --dtypes float32 --sizes 512 2048 --presets infonce paper \
  --compile reduce-overhead --repeats 30
if [ -d .device/core_opt/weince_core ]; then  # a proposed core, measured on the same machine
  PYTHONPATH=$PWD/.device/core_opt:$PYTHONPATH bench 70 torch_speed_fp32_core_opt \
    --dtypes float32 --sizes 2048 8192
fi
exit $status
