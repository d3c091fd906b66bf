"""Multi-device checks run in a subprocess with 4 forced CPU devices (see tests/test_parallel.py).

``python tests/parallel_checks.py WORKDIR`` prints one JSON line of results: the same runs on 4
devices and on 1 device (parameters, eval RMSE, evaluate/infer), the per-device dropout keys, and
the error messages of bad device counts and batch sizes. The device count must be forced before
JAX starts, hence the subprocess.
"""
from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from deepae_jax.run import checkpoint as ckpt  # noqa: E402
from deepae_jax import inference  # noqa: E402
from deepae_jax.core import model  # noqa: E402
from deepae_jax.training import parallel, run_data, trainer  # noqa: E402
from deepae_jax.config import Config  # noqa: E402
from deepae_jax.data.datasets import synthetic  # noqa: E402
from deepae_jax.core.optim import make_optimizer  # noqa: E402
from deepae_jax.data.batching import dense_batches, epoch_permutation  # noqa: E402
from deepae_jax import devices  # noqa: E402
from deepae_jax.devices import replicated_on  # noqa: E402
from deepae_jax.training.resident import ResidentEpochs  # noqa: E402
from deepae_jax.core.step import create_train_state, jit_train_step, make_train_step, train_epoch

TINY = synthetic.SyntheticSpec(n_users=160, n_items=48, rank=3, mean_ratings_per_user=10.0,
                               seed=3)


def params_of(logdir: str) -> list[np.ndarray]:
    payload = ckpt.read_checkpoint(ckpt.latest_checkpoint(logdir))
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(payload["state"]["params"])]


def error_of(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return ""


def main(workdir: str) -> dict:
    train, valid = os.path.join(workdir, "train"), os.path.join(workdir, "valid")
    synthetic.ensure_dataset(train, valid, TINY)
    base = dict(path_to_train_data=train, path_to_eval_data=valid, hidden_layers=(16, 8),
                non_linearity_type="selu", drop_prob=0.0, optimizer="momentum", lr=0.02,
                batch_size=16, num_epochs=2, aug_step=1, seed=5, progress=False,
                summary_frequency=4, save_every=1)
    out: dict = {"device_count": jax.device_count()}

    # 1. Training: 4 devices vs 1 device, same global batch, seed and data (dropout 0).
    results, params = {}, {}
    for n in (4, 1):
        cfg = Config(**base, num_devices=n, logdir=os.path.join(workdir, f"run{n}"))
        results[n] = trainer.train_and_evaluate(cfg)
        params[n] = params_of(cfg.logdir)
    out["eval_rmse"] = {str(n): results[n]["eval_rmse"] for n in results}
    out["train_rmse"] = {str(n): results[n]["train_rmse"] for n in results}
    out["param_max_abs_diff"] = max(float(np.max(np.abs(a - b)))
                                    for a, b in zip(params[4], params[1]))
    out["param_max_abs"] = max(float(np.max(np.abs(a))) for a in params[4])

    # 2. Evaluation and inference of the saved model on 4 devices vs 1 (eval batch 10 is rounded
    #    up to 12 on 4 devices: padding rows must not change anything).
    for n in (4, 1):
        cfg = Config(**{**base, "mode": "infer"}, num_devices=n, eval_batch_size=10,
                     logdir=os.path.join(workdir, "run1"),
                     predictions_path=os.path.join(workdir, f"pred{n}.tsv"))
        out[f"evaluate_rmse_{n}"] = inference.run_evaluate(cfg).rmse
        out[f"infer_lines_{n}"] = inference.run_infer(cfg)
    pred = {n: np.loadtxt(os.path.join(workdir, f"pred{n}.tsv")) for n in (4, 1)}
    out["infer_same_rows"] = bool(np.array_equal(pred[4][:, [0, 1, 3]], pred[1][:, [0, 1, 3]]))
    out["infer_max_abs_diff"] = float(np.max(np.abs(pred[4][:, 2] - pred[1][:, 2])))

    # 3. Dropout: one key per iteration for the whole global batch, so 4 devices draw the
    #    same masks as 1 device (and a rerun the same again).
    par = parallel.setup(num_devices=4)
    model_cfg = model.ModelConfig((48, 16, 8), drop_prob=0.5)
    optimizer = make_optimizer("adam", 0.01, 0.0, 10)
    rng = np.random.default_rng(0)
    x = np.where(rng.random((8, 48)) < 0.3, rng.integers(1, 6, (8, 48)), 0).astype(np.float32)
    finals = []
    for _ in range(2):
        state = par.replicate(create_train_state(jax.random.PRNGKey(7), model_cfg, optimizer))
        state, _ = par.train_step(make_train_step(model_cfg, optimizer))(
            state, devices.global_batch(x, par.mesh, 8))
        finals.append(jax.tree_util.tree_leaves(devices.to_host(state.params)))
    one = jit_train_step(make_train_step(model_cfg, optimizer))(
        create_train_state(jax.random.PRNGKey(7), model_cfg, optimizer), x)[0]
    out["dropout_rerun_same_params"] = all(np.array_equal(a, b) for a, b in zip(*finals))
    out["dropout_max_abs_diff_4_vs_1"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(finals[0], jax.tree_util.tree_leaves(
            jax.device_get(one.params))))

    # 4. The sparse XLA path with the ratings resident on the 4 devices (grouped packed
    #    batches gathered on each device) gives the updates of the dense single-device step;
    #    its packed width follows the groups' real ratings; XLA inserted the collectives.
    data = run_data.load_data(Config(**base))
    model_cfg = Config(**base).model_config(data.train.shape[1])
    optimizer = make_optimizer("momentum", 0.02, 0.0, 10)
    init = create_train_state(jax.random.PRNGKey(5), model_cfg, optimizer)
    n = data.train.shape[0] // 16
    dense_state, _ = train_epoch(init, jit_train_step(make_train_step(model_cfg, optimizer, 1)),
                                 dense_batches(data.train.csr, 16, 5, 0), n, 0)
    resident = ResidentEpochs(make_train_step(model_cfg, optimizer, 1, path="sparse"),
                              data.train.csr, 16, 5, steps_per_call=3, mesh=par.mesh)
    init = create_train_state(jax.random.PRNGKey(5), model_cfg, optimizer)
    sparse_state, _ = train_epoch(init, resident.step_fn, resident.batches(0),
                                  resident.num_calls(0), 0)
    out["resident_param_max_abs_diff"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(
            jax.tree_util.tree_leaves(devices.to_host(dense_state.params)),
            jax.tree_util.tree_leaves(devices.to_host(sparse_state.params))))
    counts = np.diff(data.train.csr.indptr)
    out["resident_width"] = resident.width
    out["resident_group_max_ratings"] = int(max(
        counts[r].sum() for r in epoch_permutation(len(counts), 5, 0)[:n * 16].reshape(-1, 4)))
    out["resident_longest_row"] = int(counts.max())
    rows, n, width = next(iter(resident.batches(0)))
    state = replicated_on(init, resident.replicated)
    hlo = resident._multi.lower(state, resident.data, rows, n, width).compile().as_text()
    out["resident_hlo_has_all_reduce"] = "all-reduce" in hlo

    # 5. Clear errors.
    out["error_batch"] = error_of(lambda: parallel.setup(num_devices=4, batch_size=18))
    out["error_devices"] = error_of(lambda: parallel.setup(num_devices=5))
    out["error_runner_batch"] = error_of(lambda: trainer.train_and_evaluate(
        Config(**{**base, "batch_size": 18}, num_devices=4,
               logdir=os.path.join(workdir, "bad"))))
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])), flush=True)
