#!/usr/bin/env bash
# The GPU measurements of the performance issue, in one run (for a session lent a GPU machine).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # from the repository root, no install needed
#
# Netflix Full's size (477,412 users, 17,768 items, ~92M ratings; generated once, seeded, no
# text file), one epoch per setting:
#   1. float32, the n-wide layers as --layers=auto picks them (dense matmuls at this shape), with
#      the H100 estimate from the compiled step's cost_analysis() printed beside it (--gpu-estimate)
#   2. float32, gather-sum first layer and output at the observed items only (--layers sparse)
#   3. bfloat16 matmuls (float32 accumulation and master weights), --layers auto
# Each prints training users/s for aug_step 0 and 1 (epoch time = 477,412 / users/s), evaluation
# time for 173,482 users and peak device memory. Logs go to OUT_DIR (default: $OUT or .).
set -uo pipefail
out="${1:-${OUT:-.}}"
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
export DEEPAE_BENCH_DATA="${DEEPAE_BENCH_DATA:-/tmp/deepae_bench}"
py="${PYTHON:-python3}"
# GPU_CHECK_SIZE overrides the size (e.g. a tiny one to try the script on a CPU)
read -r -a size <<< "${GPU_CHECK_SIZE:---users 477412 --eval-users 173482}"
size+=(--skip-text --device-report)
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"
} > "$out/gpu_env.txt" 2>&1
cat "$out/gpu_env.txt"
for setting in "f32_auto:--layers auto --gpu-estimate" "f32_sparse:--layers sparse" \
               "bf16_auto:--layers auto --dtype bfloat16"; do
  name="${setting%%:*}"
  # shellcheck disable=SC2086
  /usr/bin/time -v "$py" benchmarks/throughput.py "${size[@]}" ${setting#*:} \
    > "$out/throughput_$name.txt" 2>&1
  echo "== $name (exit $?)"
  grep -E "^\||^data|^jax|generation|^training step|^aug_step|ESTIMATE|^  (float32|bfloat16)" \
    "$out/throughput_$name.txt"
done
