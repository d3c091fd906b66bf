"""The data of each scale, written as the trainer's text folders (TRAIN / VALID / TEST).

* ``paper``: the Netflix splits of ``python -m deepae_jax.data.datasets.netflix_convert``
  (``DIR/<SPLIT>_TRAIN.npz`` when present, else the text folder ``DIR/<SPLIT>_TRAIN``).
* ``small``: MovieLens-100K in one of two settings, both with a VALID part for model selection
  that never touches TEST:

  - ``time70``: the reference's per-user time split (``movielens.time_split``: per user, the
    first 70% of ratings by time train; the rest of each user goes, as a block, to VALID or TEST
    by a seeded coin): future-rating prediction, the setting closest to the paper's.
  - ``u1``: the predefined ``u1.base`` / ``u1.test`` (the literature's protocol); VALID is a
    seeded random 10% of ``u1.base`` (``movielens.random_split``), TRAIN the other 90%, TEST is
    ``u1.test`` untouched.
* ``smoke``: the same two settings on a tiny corner of MovieLens-100K (users and items with
  small ids), or, where MovieLens-100K is absent, on a tiny synthetic set.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from deepae_jax.data.datasets import movielens, synthetic
from deepae_jax.data.ratings import Triples, write_ratings_text

SMALL_SPLITS = ("time70", "u1")
PAPER_SPLITS = ("NF", "N3M", "N6M", "N1Y")
SMOKE_USERS, SMOKE_ITEMS = 150, 250


@dataclasses.dataclass(frozen=True)
class Split:
    """Paths of one split's parts (``test`` may be empty) and a description."""

    name: str
    train: str
    valid: str
    test: str
    description: str
    stats: dict = dataclasses.field(default_factory=dict)


def _part_stats(t: Triples) -> dict:
    s = movielens.stats(t)
    return {"users": s["users"], "items": s["items"], "ratings": s["ratings"]}


def _write(folder: str, name: str, parts: dict[str, Triples], description: str) -> Split:
    paths = {}
    for part, triples in parts.items():
        path = os.path.join(folder, part)
        fname = os.path.join(path, "ratings.tsv")
        if not os.path.isfile(fname):
            write_ratings_text(fname, triples)
        paths[part] = path
    stats = {part: _part_stats(t) for part, t in parts.items()}
    with open(os.path.join(folder, "split.json"), "w", encoding="utf-8") as fh:
        json.dump({"name": name, "description": description, "stats": stats}, fh, indent=2)
    return Split(name, paths["TRAIN"], paths["VALID"], paths["TEST"], description, stats)


def _corner(t: Triples, keep: np.ndarray | None = None) -> np.ndarray:
    m = (t.users <= SMOKE_USERS) & (t.items <= SMOKE_ITEMS)
    return m if keep is None else m & keep


def movielens_split(data_dir: str, split: str, work_dir: str, seed: int = 0,
                    smoke: bool = False) -> Split:
    """One small-scale setting of MovieLens-100K (``data_dir`` holds u.data, u1.base, u1.test),
    written under ``work_dir``; with ``smoke`` only users <= 150 and items <= 250."""
    if split not in SMALL_SPLITS:
        raise ValueError(f"--split={split!r}: the small scale has {SMALL_SPLITS}")
    folder = os.path.join(work_dir, f"{'smoke_' if smoke else ''}ml100k_{split}_seed{seed}")
    if split == "time70":
        data = movielens.check_duplicates(movielens.read_movielens(
            os.path.join(data_dir, "u.data")))
        if smoke:
            keep = _corner(data.triples)
            data = movielens.MovieLensRatings(movielens.subset(data.triples, keep),
                                              data.timestamps[keep], data.source, data.lines[keep])
        train, valid, test = movielens.time_split(data, seed)
        desc = (f"MovieLens-100K u.data, the reference's per-user time split (first 70% of each "
                f"user's ratings by time train; the rest of the user to VALID or TEST by a fair "
                f"coin, seed {seed}; items unseen in TRAIN removed from VALID and TEST)")
    else:
        base = movielens.read_movielens(os.path.join(data_dir, "u1.base"))
        test = movielens.read_movielens(os.path.join(data_dir, "u1.test")).triples
        if smoke:
            keep = _corner(base.triples)
            base = movielens.MovieLensRatings(movielens.subset(base.triples, keep),
                                              base.timestamps[keep], base.source, base.lines[keep])
            test = movielens.subset(test, _corner(test))
        train, valid = movielens.random_split(base, seed, 0.1)
        desc = (f"MovieLens-100K predefined u1.base / u1.test; VALID = a random 10% of u1.base "
                f"(seed {seed}), TRAIN = the other 90%; TEST = u1.test, used only to score the "
                f"model selected on VALID")
    if smoke:
        desc = f"SMOKE (users <= {SMOKE_USERS}, items <= {SMOKE_ITEMS}) of: " + desc
    os.makedirs(folder, exist_ok=True)
    return _write(folder, f"ml100k_{split}", {"TRAIN": train, "VALID": valid, "TEST": test}, desc)


def synthetic_split(split: str, work_dir: str, seed: int = 0) -> Split:
    """A tiny synthetic stand-in for the smoke scale when MovieLens-100K is absent."""
    spec = synthetic.SyntheticSpec(n_users=200, n_items=120, mean_ratings_per_user=25,
                                   seed=seed)
    train, held = synthetic.generate(spec)
    rng = np.random.default_rng(seed)
    is_valid = rng.random(len(held)) < 0.5
    folder = os.path.join(work_dir, f"smoke_synthetic_{split}_seed{seed}")
    os.makedirs(folder, exist_ok=True)
    desc = "SMOKE: tiny synthetic set (deepae_jax.data.datasets.synthetic); MovieLens-100K not found"
    return _write(folder, f"synthetic_{split}", {
        "TRAIN": train, "VALID": movielens.subset(held, is_valid),
        "TEST": movielens.subset(held, ~is_valid)}, desc)


def paper_split(data_dir: str, name: str) -> Split:
    """A Netflix split written by ``deepae_jax.data.datasets.netflix_convert`` in ``data_dir``."""
    if name not in PAPER_SPLITS:
        raise ValueError(f"--split={name!r}: the paper scale has {PAPER_SPLITS}")
    paths = {}
    for part in ("TRAIN", "VALID", "TEST"):
        npz = os.path.join(data_dir, f"{name}_{part}.npz")
        folder = os.path.join(data_dir, f"{name}_{part}")
        if os.path.isfile(npz):
            paths[part] = npz
        elif os.path.isdir(folder):
            paths[part] = folder
        else:
            raise FileNotFoundError(
                f"{folder}(.npz) not found: convert the Netflix Prize data first with "
                f"python -m deepae_jax.data.datasets.netflix_convert TRAINING_SET_DIR {data_dir}")
    return Split(name, paths["TRAIN"], paths["VALID"], paths["TEST"],
                 f"Netflix Prize, split {name} (PAPER.md), converted in {data_dir}")
