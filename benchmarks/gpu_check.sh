#!/usr/bin/env bash
# The GPU check of issue 22 in one run (for a session lent a GPU machine), under 7 minutes:
#   1. the GPU-sensitive tests (pytest; skipped with a message where pytest is missing);
#   2. training throughput on Netflix-shaped data (120,000 users x 17,768 items, ~23M ratings,
#      the paper's model, batch 128) at each --matmul_precision, aug_step 0 and 1: users/s and
#      the seconds a Netflix Full epoch (477,412 users) takes at that rate; the float32 run also
#      prints the compiled call's cost_analysis() and kernel count (--profile);
#   3. the command line side by side with the PyTorch reference on S1 (20,000 users), the same
#      flags, a few epochs each: seconds per epoch and eval RMSE;
#   4. where the step's time goes: more steps per jitted call, XLA command buffers off / with
#      while loops (XLA_FLAGS).
# Each part runs under its own timeout (and within a total budget); a failure does not stop the
# rest. Everything printed also goes to $OUT/gpu_check.log.
#
#   PYTHONPATH=src:. bash benchmarks/gpu_check.sh        # from the repository root
#
# Needs: jax (GPU), numpy, scipy, absl, pyarrow, tqdm; torch and the reference copied into
# .gpu/reference (cp -r ../shared/reference .gpu/) for part 3. Settings (environment):
#   OUT               where the log goes (default ./gpu_check_out)
#   GPU_CHECK_SCALE   full (default) or tiny (minutes on a CPU: to try the script anywhere)
#   GPU_CHECK_BUDGET  seconds for everything (default 410)
#   GPU_CHECK_WORK    scratch folder for data and runs (default /tmp/gpu_check)
#   PYTHON, REF_PYTHON  the interpreters of deepae_jax and of the reference (default python3)
set -uo pipefail
root=$(pwd)
out="${OUT:-$root/gpu_check_out}"
export PYTHONPATH="$root/src:$root:$root/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # test workers share the GPU
py="${PYTHON:-python3}"
ref_py="${REF_PYTHON:-$py}"
work="${GPU_CHECK_WORK:-/tmp/gpu_check}"
export DEEPAE_BENCH_DATA="$work/data"
mkdir -p "$work"
start=$(date +%s)
deadline=$((start + ${GPU_CHECK_BUDGET:-410}))

if [ "${GPU_CHECK_SCALE:-full}" = tiny ]; then
  big=(--users 400 --items 300 --mean-ratings 20 --eval-users 60 --hidden 32,32 --steps 8)
  s1=(300 200 20.0 60); model=(--hidden_layers=32,32 --batch_size=32); epochs=2
  tests=(tests/test_model.py -k "precision")
else
  big=(--users 120000 --items 17768 --mean-ratings 200 --eval-users 7000 --steps 600)
  s1=(20000 17768 200.0 7000); model=(--hidden_layers=512,512,1024 --batch_size=128); epochs=3
  tests=(tests/test_fastpath.py tests/test_model.py tests/test_losses.py tests/test_protocol.py
         tests/test_optim.py tests/test_step.py tests/test_kernels.py)
fi

# part NAME SECONDS CMD...: runs CMD (a function of this script: run by a fresh copy of it)
# under a timeout cut to the budget left, and reports how it ended
part() {
  local name=$1 limit=$2 left t0 rc
  shift 2
  left=$((deadline - $(date +%s)))
  if [ "$left" -lt 20 ]; then echo "== $name: SKIPPED (budget spent)"; return 0; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most ${limit} s)"
  t0=$(date +%s)
  timeout -k 5 "$limit" bash "$self" --run "$@"
  rc=$?
  echo "== $name: exit $rc$([ $rc = 124 ] && echo ' (timed out)') in $(($(date +%s) - t0)) s"
}

run_tests() {
  if ! "$py" -c "import pytest" 2>/dev/null; then
    echo "pytest is not installed: the tests are skipped"; return 0
  fi
  local workers=()
  "$py" -c "import xdist" 2>/dev/null && workers=(-n 4)
  # its own timeout, so that the summary is printed even when the tests run out of time
  timeout -k 5 "${GPU_CHECK_TEST_SECONDS:-110}" "$py" -m pytest -q -p no:cacheprovider -rfE \
    "${workers[@]}" "${tests[@]}" > "$work/tests.log" 2>&1
  echo "pytest: exit $?"
  grep -v "^bringing up" "$work/tests.log" | tail -40
}

throughput() {  # throughput NAME [flags...]
  local name=$1
  shift
  echo "-- throughput $name: $*"
  "$py" benchmarks/throughput.py "${big[@]}" --skip-text --device-report "$@" 2>&1 \
    | grep --line-buffered -E "^\| (eval|peak)|^data|^jax|^training step|^aug_step|^profile|Error"
}

side_by_side() {  # side_by_side AUG_STEP: the reference, then deepae_jax, on S1
  local aug=$1 d="$work/s1" flags
  "$py" - "$d" "${s1[@]}" <<'PY' || return 1
import os, sys
import numpy as np
import s1data
from deepae_jax.data import ratings
d, users, items, mean, ev = sys.argv[1], *map(float, sys.argv[2:])
paths = s1data.ensure(int(users), int(items), mean, int(ev))
for sub in ("train", "eval"):  # one file each, named *.txt: the reference reads only those
    os.makedirs(os.path.join(d, sub), exist_ok=True)
    for name in os.listdir(os.path.join(d, sub)):
        os.remove(os.path.join(d, sub, name))
os.symlink(paths["train"], os.path.join(d, "train", "train.txt"))
train, held = ratings.load_triples(paths["train"]), ratings.load_triples(paths["eval"])
known = np.isin(held.users, train.users) & np.isin(held.items, train.items)  # the reference
ratings.write_ratings_text(os.path.join(d, "eval", "eval.txt"),  # fails on unknown ids
                           ratings.Triples(held.users[known], held.items[known], held.ratings[known]))
PY
  flags=(--path_to_train_data="$d/train" --path_to_eval_data="$d/eval" "${model[@]}"
         --non_linearity_type=selu --drop_prob=0.8 --optimizer=momentum --lr=0.005
         --aug_step="$aug" --num_epochs="$epochs" --save_every=1000 --summary_frequency=100000)
  rm -rf "$work/ref$aug" "$work/ours$aug"
  if [ -f "$root/.gpu/reference/DeepRecommender/run.py" ]; then
    (cd "$root/.gpu/reference/DeepRecommender" &&
      "$ref_py" run.py "${flags[@]}" --logdir="$work/ref$aug" > "$work/ref$aug.log" 2>&1)
  else
    echo "no reference in .gpu/reference (cp -r ../shared/reference .gpu/): ours only"
  fi
  "$py" -m deepae_jax.main "${flags[@]}" --noprogress --logdir="$work/ours$aug" \
    > "$work/ours$aug.log" 2>&1 || tail -5 "$work/ours$aug.log"
  grep -E "^epoch " "$work/ours$aug.log"
  "$py" - "$work/ref$aug.log" "$work/ours$aug/metrics.jsonl" "$aug" <<'PY'
import json, os, re, sys
ref_log, ours_file, aug = sys.argv[1:4]
text = open(ref_log).read() if os.path.exists(ref_log) else ""
ref = [float(s) for s in re.findall(r"Total epoch \d+ finished in ([0-9.]+) seconds", text)]
ref_rmse = re.findall(r"EVALUATION LOSS: ([0-9.]+)", text)
ours = ([json.loads(l) for l in open(ours_file) if '"epoch_time_s"' in l]
        if os.path.exists(ours_file) else [])
if text and not ref:
    print("reference log ends:", *text.splitlines()[-5:], sep="\n  ")
print(f"S1 aug_step {aug}: | epoch | reference s | deepae_jax s | ratio |")
for i in range(max(len(ref), len(ours))):
    r = ref[i] if i < len(ref) else float("nan")
    o = ours[i]["epoch_time_s"] if i < len(ours) else float("nan")
    print(f"| {i + 1} | {r:.3f} | {o:.3f} | {r / o:.1f}x |")
print(f"S1 aug_step {aug}: last eval RMSE: reference {ref_rmse[-1] if ref_rmse else '-'}, "
      f"deepae_jax {ours[-1].get('eval_rmse') if ours else '-'}")
PY
}

self="$root/benchmarks/gpu_check.sh"
if [ "${1:-}" = --run ]; then  # a part, run by part()
  shift
  "$@"
  exit $?
fi
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
echo "gpu_check $(date -u) scale=${GPU_CHECK_SCALE:-full} commit=$(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
"$py" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -1
"$ref_py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  2>&1 | tail -1

part "tests (${tests[*]})" 125 run_tests

part "Netflix-shaped data" 90 "$py" -c "import s1data, sys; u, i, m, e = sys.argv[1:5]
s1data.ensure(int(u), int(i), float(m), int(e), text=False)" "${big[1]}" "${big[3]}" "${big[5]}" \
  "${big[7]}"
part "throughput float32" 75 throughput float32 --precision float32 --profile
part "throughput tf32" 55 throughput tf32 --precision tf32 --skip-eval
part "throughput bfloat16" 55 throughput bfloat16 --precision bfloat16 --skip-eval

part "side by side S1, aug_step 1" 100 side_by_side 1
part "throughput tf32, 32 steps per call" 40 throughput tf32_spc32 --precision tf32 \
  --aug-steps 1 --steps-per-call 32 --skip-eval
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=" \
  part "throughput tf32, command buffers off" 40 throughput tf32_nocmdbuf --precision tf32 \
  --aug-steps 1 --skip-eval
part "side by side S1, aug_step 0" 90 side_by_side 0
echo "gpu_check done in $(($(date +%s) - start)) s; log: $out/gpu_check.log"
