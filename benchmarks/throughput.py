"""Throughput of deepae_jax on the S1 workload (or any size): loading, training, evaluation.

S1: 20,000 users, 17,768 items, heavy-tailed ratings per user with mean ~200 (Netflix Full's
shape), integer ratings 1..5, a few evaluation ratings for 7,000 users; model
n,512,512,1024,dp(0.8),512,512,n, selu, batch 128, momentum lr 0.005. The data set is generated
once (seeded) and cached outside the repository (``$DEEPAE_BENCH_DATA``, default /work/bench_data
or ~/.cache/deepae_jax_bench).

    python benchmarks/throughput.py                       # S1
    python benchmarks/throughput.py --device-report --users 477412 --eval-users 173482  # NF size
    python benchmarks/throughput.py --users 300 --items 200 --mean-ratings 20 --eval-users 50 \\
        --hidden 32,32 --steps 4                          # tiny (CI smoke test)
    python benchmarks/throughput.py --num_devices 4       # 4 devices (forced on the CPU)
    python benchmarks/throughput.py --gpu-estimate        # + an H100 estimate for Netflix Full

Training figures are steady state (the first call, which compiles, is timed separately) over
``--steps`` iterations (default: one epoch) with the runner's fast path (sparse input, matrix
resident on the device, several steps per dispatch). Not a test.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _force_cpu_devices(argv) -> None:
    """``--num_devices N`` on the CPU: N host devices, forced before JAX starts."""
    for i, a in enumerate(argv):
        n = a.split("=", 1)[1] if a.startswith("--num_devices=") else (
            argv[i + 1] if a == "--num_devices" and i + 1 < len(argv) else None)
        if n and int(n) > 1 and "xla_force_host_platform_device_count" not in os.environ.get(
                "XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + f" --xla_force_host_platform_device_count={n}").strip()


_force_cpu_devices(sys.argv[1:])

import jax  # noqa: E402
import numpy as np  # noqa: E402

import gpu_estimate  # noqa: E402
import s1data  # noqa: E402
from deepae_jax.core import model, sparse
from deepae_jax.core import step as core_step
from deepae_jax.training import resident  # noqa: E402
from deepae_jax.devices import make_mesh  # noqa: E402
from deepae_jax.training.trainer import resolve_train_path  # noqa: E402
from deepae_jax.data import ratings  # noqa: E402
from deepae_jax.evaluation.protocol import evaluate  # noqa: E402
from deepae_jax.core.optim import make_optimizer  # noqa: E402

# The PyTorch reference (torch 2.13 CPU, 2 threads) on S1, on a 2-core machine (issue figures).
REFERENCE = {"text load (s)": "7-10", "binary load (s)": "-",
             "train users/s, aug_step 0": "~920", "train users/s, aug_step 1": "~500",
             "eval users/s": "~360"}


def timed(fn, *args, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_training(csr, args, aug_step):
    cfg = model.ModelConfig((csr.shape[1], *args.hidden), "selu", args.drop_prob)
    n_batches = csr.shape[0] // args.batch_size
    opt = make_optimizer("momentum", args.lr, 0.0, n_batches * (1 + aug_step))
    state = core_step.create_train_state(jax.random.PRNGKey(0), cfg, opt)
    step = core_step.make_train_step(cfg, opt, aug_step, path=args.path, dtype=args.dtype,
                                 layers=args.layers)
    runner = resident.ResidentEpochs(step, csr, args.batch_size, seed=0,
                                  steps_per_call=args.steps_per_call,
                                  mesh=make_mesh(args.num_devices))
    def chunks():
        epoch = 0
        while True:
            yield from runner.batches(epoch)
            epoch += 1
    items = chunks()
    n_calls = max(1, runner.num_calls(0) - 1 if args.steps is None
                  else -(-args.steps // min(runner.steps_per_call, runner.n_batches)))
    seen, compile_s, done, calls, elapsed, last = set(), 0.0, 0, 0, 0.0, None
    t_start = time.perf_counter()
    while calls < n_calls:
        rows, width = next(items)
        key = (rows.shape, width)
        if key not in seen:  # a new shape compiles: timed apart, not steady state
            jax.block_until_ready(last)
            elapsed += time.perf_counter() - t_start
            t0 = time.perf_counter()
            state, last = runner.step_fn(state, (rows, width))
            jax.block_until_ready(last)
            compile_s += time.perf_counter() - t0
            seen.add(key)
            t_start = time.perf_counter()
            continue
        state, last = runner.step_fn(state, (rows, width))
        done += rows.shape[0]
        calls += 1
    jax.block_until_ready(last)
    elapsed += time.perf_counter() - t_start
    loss = float(np.mean(np.asarray(last["loss"])))
    real, processed = runner.real_slots(0)
    print(f"aug_step {aug_step}: {runner.groups} device(s), {real:,} real slots per step "
          f"(ratings), {processed:,} processed ({processed / max(real, 1):.2f}x; per device "
          f"{args.batch_size // runner.groups} rows x width {runner.width}); epoch time "
          f"{runner.n_batches * elapsed / max(done, 1):.1f} s at this rate", flush=True)
    return done * args.batch_size / max(elapsed, 1e-9), compile_s, loss, state.params, cfg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--items", type=int, default=17768)
    p.add_argument("--mean-ratings", type=float, default=200.0)
    p.add_argument("--eval-users", type=int, default=7000)
    p.add_argument("--hidden", default="512,512,1024")
    p.add_argument("--drop-prob", type=float, default=0.8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--aug-steps", default="0,1", help="comma-separated aug_step values to time")
    p.add_argument("--steps", type=int, default=None,
                   help="training iterations to time per aug_step (default: one epoch)")
    p.add_argument("--steps-per-call", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=model.DTYPES)
    p.add_argument("--eval-batch-size", type=int, default=1024)
    p.add_argument("--data-dir", default=None, help="cache folder for the generated data")
    p.add_argument("--skip-text", action="store_true",
                   help="no text file: skip writing step.tsv and the text load measure")
    p.add_argument("--layers", default="auto", choices=core_step.LAYERS,
                   help="the XLA path's n-wide first and output layers: gather-sum and output "
                        "at the observed items (sparse), dense matmuls (dense), or auto: sparse "
                        "on the CPU, else the one that moves fewer bytes (sparse.n_wide_layers)")
    p.add_argument("--device-report", action="store_true")
    p.add_argument("--num_devices", type=int, default=1,
                   help="devices of the 1-D mesh (on the CPU: forced host devices)")
    p.add_argument("--train-path", default="auto", choices=("auto", "sparse", "cpu_kernels"),
                   help="the step's variant (auto: as --train_path=auto)")
    p.add_argument("--gpu-estimate", action="store_true",
                   help="also print an H100 estimate for Netflix Full from the compiled XLA "
                        "step's cost_analysis()")
    p.add_argument("--no-host-memory-tweak", action="store_true",
                   help="leave glibc's malloc settings alone (see sparse.keep_host_memory_mapped)")
    args = p.parse_args(argv)
    args.hidden = tuple(int(s) for s in args.hidden.split(","))
    args.path = resolve_train_path(args.train_path, args.num_devices)
    print(f"training step: {args.path} path on {args.num_devices} {jax.default_backend()} "
          f"device(s)", flush=True)
    if jax.default_backend() == "cpu" and not args.no_host_memory_tweak:
        sparse.keep_host_memory_mapped()

    t0 = time.perf_counter()
    paths = s1data.ensure(args.users, args.items, args.mean_ratings, args.eval_users,
                          root=args.data_dir, text=not args.skip_text)
    prep_s = time.perf_counter() - t0
    bin_s, matrix = timed(ratings.load_matrix, paths["npz"], repeat=3)
    text_s = None
    if not args.skip_text and paths["train"] is not None:
        text_s, matrix_t = timed(ratings.load_matrix, paths["train"], repeat=3)
        assert matrix_t.nnz == matrix.nnz
        del matrix_t
    eval_triples = ratings.load_triples(paths["eval"])
    split = ratings.align_eval(matrix, eval_triples)
    csr = matrix.csr

    rows = {}
    params = cfg = None
    for aug in (int(a) for a in args.aug_steps.split(",") if a != ""):
        ups, compile_s, loss, params, cfg = bench_training(csr, args, aug)
        rows[f"train users/s, aug_step {aug}"] = (f"{ups:,.0f}", f"compile {compile_s:.1f} s, "
                                                  f"last loss {loss:.3f}")
    if params is None:
        cfg = model.ModelConfig((csr.shape[1], *args.hidden), "selu", args.drop_prob)
        params = model.init(jax.random.PRNGKey(0), cfg.layer_sizes)
    if args.gpu_estimate:
        gpu_estimate.report(args)
    t0 = time.perf_counter()
    first = evaluate(params, cfg, csr, split.csr, split.rows, args.eval_batch_size)
    eval_first = time.perf_counter() - t0
    eval_s, res = timed(evaluate, params, cfg, csr, split.csr, split.rows, args.eval_batch_size,
                        repeat=2)
    assert res.count == first.count
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    device_peak = None
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:  # GPUs report it; the CPU does not
        device_peak = stats["peak_bytes_in_use"] / 2 ** 30

    print(f"data: {csr.shape[0]:,} users x {csr.shape[1]:,} items, {csr.nnz:,} training ratings "
          f"(mean {csr.nnz / csr.shape[0]:.0f}/user), {res.count:,} evaluation ratings of "
          f"{len(split.rows):,} users; model {csr.shape[1]},{','.join(map(str, args.hidden))},"
          f"dp({args.drop_prob}),...; batch {args.batch_size}; dtype {args.dtype}; "
          f"layers {args.layers}")
    if args.device_report:
        d = jax.devices()[0]
        print(f"jax {jax.__version__}, backend {jax.default_backend()}, device "
              f"{getattr(d, 'device_kind', d.platform)} x{jax.device_count()}")
    print(f"(data generation/cache check {prep_s:.1f} s)")
    table = [("text load (s)", "-" if text_s is None else f"{text_s:.2f}",
              f"{csr.nnz / 1e6:.1f}M ratings, parse + CSR" if text_s else "skipped"),
             ("binary load (s)", f"{bin_s:.3f}", ".npz cache"),
             *[(k, *v) for k, v in rows.items()],
             ("eval users/s", f"{len(split.rows) / eval_s:,.0f}",
              f"{eval_s:.2f} s for {len(split.rows):,} users (first call {eval_first:.2f} s), "
              f"RMSE {res.rmse:.4f}"),
             ("peak host memory (GiB)", f"{peak_gib:.2f}", "max RSS")]
    if device_peak is not None:
        table.append(("peak device memory (GiB)", f"{device_peak:.2f}", "peak_bytes_in_use"))
    print("| measure | deepae_jax | PyTorch reference | notes |")
    print("|---|---|---|---|")
    for name, ours, note in table:
        print(f"| {name} | {ours} | {REFERENCE.get(name, '-')} | {note} |")


if __name__ == "__main__":
    main()
