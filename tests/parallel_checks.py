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

from deepae_jax import checkpoint as ckpt  # noqa: E402
from deepae_jax import model, parallel, runner  # noqa: E402
from deepae_jax.config import Config  # noqa: E402
from deepae_jax.data import synthetic  # noqa: E402
from deepae_jax.optim import make_optimizer  # noqa: E402
from deepae_jax.train import create_train_state  # noqa: E402

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
        results[n] = runner.train_and_evaluate(cfg)
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
        out[f"evaluate_rmse_{n}"] = runner.run_evaluate(cfg).rmse
        out[f"infer_lines_{n}"] = runner.run_infer(cfg)
    pred = {n: np.loadtxt(os.path.join(workdir, f"pred{n}.tsv")) for n in (4, 1)}
    out["infer_same_rows"] = bool(np.array_equal(pred[4][:, [0, 1, 3]], pred[1][:, [0, 1, 3]]))
    out["infer_max_abs_diff"] = float(np.max(np.abs(pred[4][:, 2] - pred[1][:, 2])))

    # 3. Dropout: the keys seen by the model are distinct per device and the same on a rerun.
    par = parallel.setup(num_devices=4)
    model_cfg = model.ModelConfig((48, 16, 8), drop_prob=0.5)
    optimizer = make_optimizer("adam", 0.01, 0.0, 10)
    seen: list = []
    real_apply = model.apply

    def spying_apply(params, x, cfg, train=False, rng=None):
        if train:
            jax.debug.callback(lambda k: seen.append(tuple(np.asarray(k).ravel().tolist())),
                               jax.random.key_data(rng) if jax.dtypes.issubdtype(
                                   rng.dtype, jax.dtypes.prng_key) else rng)
        return real_apply(params, x, cfg, train=train, rng=rng)

    model.apply = spying_apply
    try:
        finals = []
        for _ in range(2):
            state = par.replicate(create_train_state(jax.random.PRNGKey(7), model_cfg, optimizer))
            step = par.train_step(model_cfg, optimizer)
            rng = np.random.default_rng(0)
            x = np.where(rng.random((8, 48)) < 0.3, rng.integers(1, 6, (8, 48)), 0)
            state, _ = step(state, parallel.global_batch(x.astype(np.float32), par.mesh, 8))
            finals.append(parallel.to_host(state.params))
            jax.effects_barrier()
    finally:
        model.apply = real_apply
    out["dropout_keys_first_run"] = len(set(seen[:4]))
    out["dropout_keys_rerun_equal"] = sorted(seen[:4]) == sorted(seen[4:8])
    out["dropout_rerun_same_params"] = all(
        np.array_equal(a, b) for a, b in zip(*(jax.tree_util.tree_leaves(f) for f in finals)))

    # 4. The sparse fast path's padded batches ({"cols", "vals"} pytrees) on 4 devices give the
    #    updates of the dense single-device step (when make_train_step has ``sparse_input``).
    import inspect

    from deepae_jax.data.batching import dense_batches
    from deepae_jax.train import jit_train_step, make_train_step, train_epoch
    if "sparse_input" in inspect.signature(make_train_step).parameters:
        data = runner.load_data(Config(**base))
        model_cfg = Config(**base).model_config(data.train.shape[1])
        optimizer = make_optimizer("momentum", 0.02, 0.0, 10)
        init = create_train_state(jax.random.PRNGKey(5), model_cfg, optimizer)
        init_replicated = par.replicate(init)  # before the dense step donates ``init``
        n = data.train.shape[0] // 16
        dense_state, _ = train_epoch(init, jit_train_step(make_train_step(model_cfg, optimizer, 1)),
                                     dense_batches(data.train.csr, 16, 5, 0), n, 0)
        sparse_state, _ = train_epoch(
            init_replicated, par.train_step(model_cfg, optimizer, 1, sparse_input=True),
            par.batches(data.train.csr, 16, 5, 0, builder="padded"), n, 0)
        out["padded_param_max_abs_diff"] = max(
            float(np.max(np.abs(a - b))) for a, b in zip(
                jax.tree_util.tree_leaves(parallel.to_host(dense_state.params)),
                jax.tree_util.tree_leaves(parallel.to_host(sparse_state.params))))

    # 5. Clear errors.
    out["error_batch"] = error_of(lambda: parallel.setup(num_devices=4, batch_size=18))
    out["error_devices"] = error_of(lambda: parallel.setup(num_devices=5))
    out["error_runner_batch"] = error_of(lambda: runner.train_and_evaluate(
        Config(**{**base, "batch_size": 18}, num_devices=4,
               logdir=os.path.join(workdir, "bad"))))
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])), flush=True)
