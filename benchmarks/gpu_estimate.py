"""An ESTIMATE (not a measurement) of the training step on an H100 at Netflix Full's size.

Netflix Full: 477,412 users x 17,768 items, ~98M training ratings; the paper's model
n,512,512,1024 (dropout 0.8 on the code), aug_step 1, batch 128, SGD with momentum. The XLA path's
step (``--train_path=sparse``: what runs on a GPU) is compiled here for the shapes of such a batch
(no data needed), once per formulation of the n-wide layers (``layers="sparse"``, gather-sum and
output at the observed items; ``"dense"``, the batch densified and dense matmuls; a GPU runs the
one ``sparse.n_wide_layers`` picks, marked), and its ``cost_analysis()`` (FLOPs, bytes accessed,
as XLA counts them on the backend that compiled it) is set against an H100 SXM's published peaks:
989 TFLOP/s dense bf16 (tensor cores), ~67 TFLOP/s fp32 (non-tensor), 3.35 TB/s HBM3. A step takes at least
max(FLOPs / peak, bytes / bandwidth); real steps are slower (kernel launches, gathers and
scatters at less than peak bandwidth), so read the figures as lower bounds.
"""
from __future__ import annotations

import itertools

import jax
import numpy as np

from deepae_jax.core import model, sparse
from deepae_jax.core import step as core_step
from deepae_jax.data.batching import bucket_fine
from deepae_jax.core.optim import make_optimizer

NETFLIX = dict(users=477_412, items=17_768, ratings=98_074_901)
H100 = dict(bf16_flops=989e12, fp32_flops=67e12, hbm_bytes=3.35e12)


def netflix_width(batch_size: int, seed: int = 0) -> int:
    """The packed width of an epoch's batches for Netflix-shaped counts (log-normal, sigma 1.25,
    as benchmarks/s1data.py): the largest batch's ratings per row, rounded up."""
    rng = np.random.default_rng(seed)
    mean, sigma = NETFLIX["ratings"] / NETFLIX["users"], 1.25
    counts = rng.lognormal(np.log(mean) - sigma ** 2 / 2, sigma, NETFLIX["users"]).astype(int)
    n = len(counts) // batch_size
    return bucket_fine(-(-int(counts[:n * batch_size].reshape(n, -1).sum(1).max()) // batch_size))


def step_cost(hidden, batch_size: int, width: int, dtype: str, layers: str,
              aug_step: int = 1) -> dict:
    """cost_analysis() of one compiled XLA-path step at Netflix's size."""
    return layer_cost(NETFLIX["items"], hidden, batch_size, width, layers, aug_step, dtype)


def layer_cost(items: int, hidden, batch_size: int, width: int, layers: str, aug_step: int = 1,
               dtype: str = "float32") -> dict:
    """cost_analysis() of one compiled XLA-path step for a (1, batch, width) packed batch."""
    cfg = model.ModelConfig((items, *hidden), "selu", 0.8)
    opt = make_optimizer("momentum", 0.001, 0.0, 1000)
    step = core_step.make_train_step(cfg, opt, aug_step, path="sparse", precision=dtype, layers=layers)
    state = jax.eval_shape(lambda: core_step.create_train_state(jax.random.PRNGKey(0), cfg, opt))
    shape = (1, batch_size, width)
    batch = {"cols": jax.ShapeDtypeStruct(shape, np.int32),
             "vals": jax.ShapeDtypeStruct(shape, np.float32),
             "rows": jax.ShapeDtypeStruct(shape, np.int32)}
    cost = jax.jit(step).lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"flops": float(cost.get("flops", 0.0)),
            "bytes": float(cost.get("bytes accessed", 0.0))}


def report(args) -> None:
    """Prints the estimate (labelled as one) for the benchmark's model and batch size."""
    width = netflix_width(args.batch_size)
    steps = NETFLIX["users"] // args.batch_size
    print(f"ESTIMATE (not measured): H100, Netflix Full ({NETFLIX['users']:,} users x "
          f"{NETFLIX['items']:,} items, ~{NETFLIX['ratings'] / 1e6:.0f}M ratings), model "
          f"{NETFLIX['items']},{','.join(map(str, args.hidden))}, aug_step 1, batch "
          f"{args.batch_size}, packed width {width}, {steps:,} steps/epoch; from the XLA "
          f"step's cost_analysis() compiled on {jax.default_backend()}", flush=True)
    picked = sparse.n_wide_layers(args.batch_size, args.batch_size * width, NETFLIX["items"],
                                  args.hidden[0])
    for (dtype, peak_name), layers in itertools.product(
            (("float32", "fp32_flops"), ("bfloat16", "bf16_flops")), ("dense", "sparse")):
        cost = step_cost(args.hidden, args.batch_size, width, dtype, layers)
        t_flops = cost["flops"] / H100[peak_name]
        t_bytes = cost["bytes"] / H100["hbm_bytes"]
        t_step = max(t_flops, t_bytes)
        mark = " (auto's pick)" if layers == picked else ""
        print(f"  {dtype}, layers {layers}{mark}: {cost['flops'] / 1e9:.1f} GFLOP, "
              f"{cost['bytes'] / 1e9:.2f} GB per "
              f"step -> compute {t_flops * 1e3:.3f} ms ({peak_name.split('_')[0]} peak "
              f"{H100[peak_name] / 1e12:.0f} TFLOP/s), memory {t_bytes * 1e3:.3f} ms "
              f"(3.35 TB/s): >= {t_step * 1e3:.3f} ms/step, >= {t_step * steps:.1f} s/epoch, "
              f"<= {args.batch_size / t_step:,.0f} users/s "
              f"({'memory' if t_bytes > t_flops else 'compute'}"
              f"-bound)", flush=True)


# (items, hidden, batch, packed width): Netflix-, MovieLens-shaped and very wide, very sparse data
SHAPES = [(17_768, (512, 512, 1024), 128, 512), (17_768, (512, 512, 1024), 128, 64),
          (17_768, (512, 512, 1024), 128, 16), (200_000, (512, 512, 1024), 128, 16),
          (50_000, (512, 512, 1024), 128, 64), (1_682, (500, 500, 1000), 128, 128),
          (3_706, (256, 256), 128, 256), (17_768, (128,), 128, 128),
          (60_000, (1024, 512), 256, 32)]


def layers_table() -> None:
    """Bytes per step (cost_analysis) of both formulations of the n-wide layers over a range of
    shapes, beside the one ``sparse.n_wide_layers`` picks: how well its rule fits."""
    for (items, hidden, batch, width), aug_step in itertools.product(SHAPES, (0, 1)):
        got = {layers: layer_cost(items, hidden, batch, width, layers, aug_step)["bytes"]
               for layers in ("sparse", "dense")}
        best = min(got, key=got.get)
        picked = sparse.n_wide_layers(batch, batch * width, items, hidden[0])
        print(f"items {items:>7,} hidden {','.join(map(str, hidden)):>12} batch {batch} width "
              f"{width:>3} aug_step {aug_step}: sparse {got['sparse'] / 1e9:6.3f} GB, dense "
              f"{got['dense'] / 1e9:6.3f} GB; fewer: {best:6}, rule picks {picked:6} "
              f"({'same' if best == picked else f'{got[picked] / got[best] - 1:.0%} more'})",
              flush=True)


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", default="512,512,1024")
    p.add_argument("--layers-table", action="store_true",
                   help="instead: both formulations' bytes over a range of shapes, and the rule's "
                        "pick")
    args = p.parse_args()
    args.hidden = tuple(int(s) for s in args.hidden.split(","))
    layers_table() if args.layers_table else report(args)
