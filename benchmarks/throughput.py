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
    python benchmarks/throughput.py --precision tf32 --profile --steps-per-call 32  # GPU knobs

Training figures are steady state (the first call, which compiles, is timed separately) over
``--steps`` iterations (default: one epoch) with the runner's fast path (sparse input, matrix
resident on the device, several steps per dispatch). Not a test.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
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
from deepae_jax import devices, kernels  # noqa: E402
from deepae_jax.core import model  # noqa: E402
from deepae_jax.core import step as core_step  # noqa: E402
from deepae_jax.core.ops import XLA  # noqa: E402
from deepae_jax.training import resident  # noqa: E402
from deepae_jax.devices import make_mesh  # noqa: E402
from deepae_jax.training.backend import resolve_train_path  # noqa: E402
from deepae_jax.data import ratings  # noqa: E402
from deepae_jax.evaluation.protocol import evaluate  # noqa: E402
from deepae_jax.core.optim import make_optimizer, plain_momentum  # noqa: E402

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


NETFLIX_FULL_USERS = 477_412  # training users of Netflix Full: the epoch the figures scale to


def make_step(args, cfg, aug_step: int, n_batches: int):
    """The training step of ``--train-path`` and ``--precision`` (the CPU kernels' ops in the
    CPU branch for cpu_kernels)."""
    updates = n_batches * (1 + aug_step)
    opt = make_optimizer("momentum", args.lr, 0.0, updates)
    ops = XLA
    if args.path == "cpu_kernels":
        ops = kernels.cpu_ops(*plain_momentum("momentum", args.lr, 0.0, updates)) or XLA
    step = core_step.make_train_step(cfg, opt, aug_step, path="sparse", layers=args.layers,
                                     precision=args.precision, ops=ops)
    return opt, step


def kernel_count(hlo: str) -> dict[str, int]:
    """Operations that launch work of their own (fusions, library calls, copies, collectives,
    loops) in the non-fused computations of a compiled module's HLO text: about the kernels
    one call launches (loop bodies counted once). An estimate, not a trace."""
    counts: dict[str, int] = {}
    inside = False
    for line in hlo.splitlines():
        head = line.strip()
        if head.endswith("{") and not head.startswith("ROOT") and "=" not in head.split("(")[0]:
            name = head.split()[0].lstrip("%") if not head.startswith("ENTRY") else "ENTRY"
            inside = not name.startswith(("fused", "region", "horizontally_fused", "wrapped"))
            continue
        if not inside or " = " not in head:
            continue
        found = re.search(r"(?:^|[\s})])([a-z][\w-]*)\(", head.split(" = ", 1)[1])
        op = found.group(1) if found else ""
        if op in ("fusion", "custom-call", "copy", "while", "all-reduce", "scatter", "gather",
                  "dynamic-update-slice", "sort", "conditional", "dot", "convolution",
                  "reduce"):
            counts[op] = counts.get(op, 0) + 1
    return counts


def profile(runner, state, item) -> None:
    """Prints the compiled call's cost_analysis() and kernel count (``--profile``)."""
    rows, n, width = item
    compiled = runner._multi.lower(state, runner.data, rows, n, width).compile()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    steps = rows.shape[0]
    counts = kernel_count(compiled.as_text())
    print(f"profile: one call of {steps} steps: {cost.get('flops', 0) / 1e9 / steps:.1f} GFLOP "
          f"and {cost.get('bytes accessed', 0) / 1e9 / steps:.2f} GB accessed per step "
          f"(cost_analysis; loop bodies may count once); launching ops in the compiled "
          f"program: {sum(counts.values())} {dict(sorted(counts.items()))}", flush=True)


def bench_training(csr, args, aug_step):
    cfg = model.ModelConfig((csr.shape[1], *args.hidden), "selu", args.drop_prob)
    n_batches = csr.shape[0] // args.batch_size
    opt, step = make_step(args, cfg, aug_step, n_batches)
    state = core_step.create_train_state(jax.random.PRNGKey(0), cfg, opt)
    spc = max(1, min(args.steps_per_call, n_batches))
    calls_per_epoch = -(-n_batches // spc)
    n_calls = max(1, calls_per_epoch - 1 if args.steps is None else -(-args.steps // spc))
    runner = resident.ResidentEpochs(step, csr, args.batch_size, seed=0,
                                     steps_per_call=args.steps_per_call,
                                     mesh=make_mesh(args.num_devices),
                                     epochs=range(2 + n_calls // calls_per_epoch))

    def chunks():
        epoch = 0
        while True:
            yield from ((item, epoch) for item in runner.batches(epoch))
            epoch += 1
    items = chunks()
    compile_s, done, calls, last = 0.0, 0, 0, None
    first, _ = next(items)  # compiles (one program for every call): timed apart
    t0 = time.perf_counter()
    state, last = runner.step_fn(state, first)
    jax.block_until_ready(last)
    compile_s = time.perf_counter() - t0
    if args.profile:
        profile(runner, state, first)
    t_start = time.perf_counter()
    while calls < n_calls:
        item, _ = next(items)
        state, last = runner.step_fn(state, item)
        done += item[1]
        calls += 1
    jax.block_until_ready(last)
    elapsed = time.perf_counter() - t_start
    loss = float(np.mean(np.asarray(last["loss"])[:last["steps"]]))
    real, processed = runner.real_slots(0)
    users_s = done * args.batch_size / max(elapsed, 1e-9)
    print(f"aug_step {aug_step}: {runner.groups} device(s), {real:,} real slots per step "
          f"(ratings), {processed:,} processed ({processed / max(real, 1):.2f}x; per device "
          f"{args.batch_size // runner.groups} rows x width {runner.width}); "
          f"{elapsed / max(done, 1) * 1e3:.3f} ms/step over {done} steps, "
          f"{users_s:,.0f} users/s: this data's epoch {runner.n_batches * elapsed / max(done, 1):.2f}"
          f" s, a Netflix Full epoch ({NETFLIX_FULL_USERS:,} users) "
          f"{NETFLIX_FULL_USERS / max(users_s, 1e-9):.2f} s at this rate; precision "
          f"{args.precision}, {runner.steps_per_call} steps per call", flush=True)
    return users_s, compile_s, loss, state.params, cfg


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
    p.add_argument("--precision", default="float32", choices=model.PRECISIONS,
                   help="matmul precision (as --matmul_precision)")
    p.add_argument("--skip-eval", action="store_true", help="time training only")
    p.add_argument("--profile", action="store_true",
                   help="print the compiled call's cost_analysis() and its launching ops")
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
                   help="leave glibc's malloc settings alone (see devices.keep_host_memory_mapped)")
    args = p.parse_args(argv)
    args.hidden = tuple(int(s) for s in args.hidden.split(","))
    args.path = resolve_train_path(args.train_path, args.num_devices)
    print(f"training step: {args.path} path on {args.num_devices} {jax.default_backend()} "
          f"device(s); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    if jax.default_backend() == "cpu" and not args.no_host_memory_tweak:
        devices.keep_host_memory_mapped()

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
    if args.skip_eval:
        return
    t0 = time.perf_counter()
    ev = functools.partial(evaluate, precision=args.precision,
                           ops=(kernels.cpu_ops() or XLA) if args.path == "cpu_kernels" else XLA)
    first = ev(params, cfg, csr, split.csr, split.rows, args.eval_batch_size)
    eval_first = time.perf_counter() - t0
    eval_s, res = timed(ev, params, cfg, csr, split.csr, split.rows, args.eval_batch_size,
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
          f"dp({args.drop_prob}),...; batch {args.batch_size}; precision {args.precision}; "
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
