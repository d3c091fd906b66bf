#!/usr/bin/env bash
# The whole small-scale suite on MovieLens-100K, both settings (time70: the reference's per-user
# time split; u1: u1.base/u1.test with VALID carved from u1.base), one process per setting, each
# on one CPU core. Results go to experiments/results/ml100k_<setting>/ (runs and checkpoints to
# runs/experiments/work/, git-ignored). Finished runs are reused, so a repeated command resumes.
#
#   bash experiments/run_small_suite.sh [ML100K_DIR]     (default: ../shared/data/movielens-100k)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/movielens-100k}"
PY="${PYTHON:-python}"
export XLA_FLAGS="${XLA_FLAGS:---xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1}"
pids=()
for split in time70 u1; do
  (
    # the comparison first (it holds the target figure), then the paper's order
    for exp in comparison splits activations overfitting depth dropout refeeding; do
      "$PY" -m experiments.run --experiment "$exp" --scale small --split "$split" --data_dir "$DATA"
    done
  ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
