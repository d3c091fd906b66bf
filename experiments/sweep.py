"""The documented, seeded hyper-parameter sweep of the comparison experiment (small scale).

Stage 0: the best setting of the calibration done before the suite (CALIBRATED, scored on the
u1 VALID set only). Stage 1: for each of four cells (rows = users or items) x (no re-feeding or one re-feeding step
per iteration) it draws ``k`` distinct settings from GRID with ``numpy.random.default_rng([seed,
cell])``. Stage 2 (local search): starting from the stage-0/1 setting with the lowest VALID RMSE,
``refine`` times change one grid coordinate at random (``default_rng([seed, 99])``) to a
neighbouring grid value, train, and move to the new setting when its VALID RMSE is lower. Every
setting is trained on TRAIN with its best epoch picked on VALID; the setting with the lowest
VALID RMSE of all is "best of sweep". TEST is only read to report the chosen checkpoints'
scores.

The grid is AutoRec-like (one or two wide layers, linear output, Adam with L2 weight decay);
its ranges were set before the suite from a handful of calibration runs scored on the u1 VALID
set only (SELU/ELU item-based models and lr 1e-4 did clearly worse there).
"""
from __future__ import annotations

import itertools

import numpy as np

from experiments.protocol import RunSpec

GRID = {
    "hidden_layers": [(500,), (1000,), (500, 500)],
    "non_linearity_type": ["sigmoid", "selu"],
    "drop_prob": [0.0, 0.5, 0.65, 0.8],
    "lr": [3e-4, 1e-3],
    "weight_decay": [1e-3, 2e-3, 4e-3],
}
FIXED = {"optimizer": "adam", "skip_last_layer_nl": True, "summary_frequency": 20}
PER_MAJOR = {"users": {"batch_size": 16, "num_epochs": 30},
             "items": {"batch_size": 32, "num_epochs": 80}}
CELLS = [("users", 0), ("users", 1), ("items", 0), ("items", 1)]
# the calibration's best (u1 VALID 0.897 at epoch 63 of 80, before the suite; TEST never read)
CALIBRATED = {"major": "items", "aug_step": 0, "hidden_layers": (500,),
              "non_linearity_type": "sigmoid", "drop_prob": 0.5, "lr": 3e-4,
              "weight_decay": 2e-3}


def calibrated(overrides: dict | None = None) -> RunSpec:
    """Stage 0: the calibration's best setting, as a sweep setting."""
    s = dict(CALIBRATED, **FIXED, **PER_MAJOR[CALIBRATED["major"]])
    s.update(overrides or {})
    return _spec(s, "sweep_calibrated")


def describe() -> str:
    """The sweep's design, for the results' markdown."""
    grid = "; ".join(f"{k} in {[','.join(map(str, v)) if isinstance(v, tuple) else v for v in vs]}"
                     for k, vs in GRID.items())
    per = "; ".join(f"rows={m}: " + ", ".join(f"{k}={v}" for k, v in s.items())
                    for m, s in PER_MAJOR.items())
    fixed = ", ".join(f"{k}={v}" for k, v in FIXED.items())
    return (f"stage 0: the calibration's best setting; stage 1: cells (major, aug_step) {CELLS}; per cell k settings drawn without replacement "
            f"from the grid {grid}, with numpy.random.default_rng([seed, cell index]); fixed: "
            f"{fixed}; {per}; stage 2: local search from the best so far, one grid coordinate "
            f"moved to a neighbouring value per step, default_rng([seed, 99]).")


def _spec(s: dict, name: str, source: str = "experiments/sweep.py") -> RunSpec:
    h = ",".join(map(str, s["hidden_layers"]))
    label = (f"{s['major'][:-1]}-based{', re-feed' if s['aug_step'] else ''}: {h} "
             f"{s['non_linearity_type']} dp{s['drop_prob']:g} lr{s['lr']:g} "
             f"wd{s['weight_decay']:g}")
    return RunSpec(name, label, s, source)


def neighbour(settings: dict, rng: np.random.Generator, tried: set) -> dict | None:
    """``settings`` with one grid coordinate moved to an adjacent grid value, not in ``tried``
    (a set of ``key(settings)``); None when every neighbour was tried."""
    options = []
    for k, values in GRID.items():
        i = values.index(settings[k])
        for j in (i - 1, i + 1):
            if 0 <= j < len(values):
                cand = dict(settings, **{k: values[j]})
                if key(cand) not in tried:
                    options.append(cand)
    if not options:
        return None
    return options[int(rng.integers(len(options)))]


def key(settings: dict) -> tuple:
    return tuple((k, settings[k]) for k in sorted(GRID)) + (
        ("major", settings["major"]), ("aug_step", settings["aug_step"]))


def sample(k: int, seed: int, overrides: dict | None = None) -> list[RunSpec]:
    """``k`` settings per cell; ``overrides`` (e.g. the smoke scale's) are applied last."""
    keys = list(GRID)
    combos = list(itertools.product(*(range(len(GRID[key])) for key in keys)))
    specs = []
    for c, (major, aug) in enumerate(CELLS):
        rng = np.random.default_rng([int(seed), c])
        for j in rng.choice(len(combos), size=min(k, len(combos)), replace=False):
            s = {key: GRID[key][i] for key, i in zip(keys, combos[j])}
            s.update(FIXED, **PER_MAJOR[major], major=major, aug_step=aug)
            s.update(overrides or {})
            n = len([x for x in specs if x.name.startswith(f"sweep_{major}_aug{aug}_")])
            specs.append(_spec(s, f"sweep_{major}_aug{aug}_{n:02d}"))
    return specs
