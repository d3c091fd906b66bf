"""What a notebook calls: fit a model on DataFrames or files, evaluate, predict, recommend,
save and load it, with the same settings as the command line (:class:`deepae_jax.config.Config`).

    import pandas as pd
    from deepae_jax import api
    model = api.fit(train_df, valid_df, test_df, logdir="runs/own", recipe="rating_prediction")
    model.evaluate(test_df, metrics="rmse,mae,ndcg@10")      # {"rmse": ..., "ndcg@10": ...}
    model.predict(["u17", "u17"], [50, 172])                 # predicted ratings
    model.recommend(["u17"], k=10).to_frame()                # user, item, score, rank
    model.save("models/own"); api.load("models/own")

Data is a ratings file or folder (any format the trainer reads), a pandas DataFrame (its user,
item and rating columns: ``columns=`` or the first of userId/movieId/rating, user/item/rating,
or the first three columns; ``pip install 'deepae_jax[pandas]'``) or
:class:`~deepae_jax.data.ratings.Triples`. DataFrames and Triples
are written as ``.npz`` under ``LOGDIR/data/`` so that the run stays usable by every tool.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil
from typing import Any, Sequence

import numpy as np

from deepae_jax.run import files
from deepae_jax import config as config_lib
from deepae_jax import recipes, settings
from deepae_jax.extras import require
from deepae_jax import settings as settings_lib  # ``settings`` is also fit's keyword dict
from deepae_jax.config import Config
from deepae_jax.data import ratings

COLUMN_GUESSES = (("userId", "movieId", "rating"), ("user", "item", "rating"),
                  ("user_id", "item_id", "rating"))
DATA_FOLDER = "data"


def settings_of_flagfile(path: str) -> dict[str, Any]:
    """The settings a flagfile (e.g. ``recipes.path("rating_prediction")``) sets, as
    Config field values; errors name the flag."""
    return settings.read_flagfile(Config, path)


def check_keywords(given: dict[str, Any], allowed: Sequence[str], what: str) -> None:
    """Refuses a keyword that is not a setting, naming it and its closest setting (the command
    line refuses an unknown flag alike)."""
    for name in given:
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; see {what}"
            raise settings.ConfigError(f"{name}={given[name]!r}: unknown setting{hint}")


def check_ids(ids, name: str) -> np.ndarray:
    """``ids`` as a 1-D array of integer or string ids; ConfigError naming ``name`` for floats
    (NaN included), booleans or anything else, which would silently match no id."""
    arr = np.asarray(ids)
    if arr.dtype.kind == "O" and all(isinstance(v, (str, int, np.integer))
                                     and not isinstance(v, bool) for v in arr.ravel()):
        arr = arr.astype(str)
    if arr.dtype.kind not in "iuU":
        bad = next((v for v in arr.ravel() if not isinstance(v, (str, int, np.integer))
                    or isinstance(v, (bool, np.bool_))), arr.ravel()[0] if arr.size else None)
        raise settings.ConfigError(f"{name}: ids must be integers or strings, got {bad!r} "
                                   f"({arr.dtype})")
    return arr


def check_count(value, name: str) -> int:
    """A positive integer (not a bool or a float such as 2.5); ConfigError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise settings.ConfigError(f"{name}={value!r}: expected a positive integer")
    return int(value)


def _columns(df, columns: Sequence[str] | None) -> tuple[str, str, str]:
    if columns is not None:
        return tuple(columns)  # type: ignore[return-value]
    for guess in COLUMN_GUESSES:
        if all(c in df.columns for c in guess):
            return guess
    if len(df.columns) < 3:
        raise ratings.RatingsFormatError(f"DataFrame: expected user, item and rating columns, "
                                         f"got {list(df.columns)}")
    return tuple(df.columns[:3])  # type: ignore[return-value]


def _planned_path(data, folder: str, name: str) -> str:
    """The path :func:`as_path` will give ``data``, without writing anything."""
    if data is None:
        return ""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    return os.path.join(folder, f"{name}.npz")


def as_path(data, folder: str, name: str, columns: Sequence[str] | None = None,
            keep_existing: bool = False) -> str:
    """A path the trainer reads for ``data``: a path is returned as it is; a DataFrame or
    Triples is written to ``folder/name.npz`` (atomically) first. ``keep_existing`` (a
    resume): an existing file is kept, and other ratings than it holds are refused."""
    if data is None:
        return ""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, ratings.Triples):
        triples = data
    elif hasattr(data, "columns"):
        require("pandas", "pandas", f"{name}: a DataFrame as data")
        from deepae_jax.data.readers.arrow import triples_from_dataframe
        triples = triples_from_dataframe(data, *_columns(data, columns), source=f"{name} DataFrame")
    else:
        raise TypeError(f"{name}: expected a path, a pandas DataFrame or Triples, got "
                        f"{type(data).__name__}")
    path = os.path.join(folder, f"{name}.npz")
    matrix = ratings.build_matrix(triples, source=name)
    if keep_existing and os.path.isfile(path):  # a resumed run's data: never replaced
        if ratings.RatingMatrix.load(path).fingerprint() != matrix.fingerprint():
            raise settings.ConfigError(f"{name}: other ratings than the run's {path}; resume "
                                       "with the run's data, or train into another logdir")
        return path
    matrix.save(path)
    return path


def fit(train, valid=None, test=None, *, config: Config | None = None, flagfile: str = "",
        recipe: str = "", columns: Sequence[str] | None = None, **settings) -> "Model":
    """Trains a model as ``python -m deepae_jax.main`` does and returns it.

    ``train``, ``valid`` (model selection, early stopping) and ``test`` (scored once at the end)
    are data (see the module docstring). Settings: ``config`` (a Config), then those of
    ``recipe`` (a recipe shipped with the package, e.g. ``"rating_prediction"``), then those of
    ``flagfile``, then ``settings`` (Config field names, e.g. ``hidden_layers=(500,)``,
    ``logdir="runs/x"``, ``overwrite=True``), each overriding the one before.
    """
    check_keywords(settings, [f.name for f in dataclasses.fields(Config)], "deepae_jax.config")
    if config is not None and not isinstance(config, Config):
        raise settings_lib.ConfigError(f"config={config!r}: expected a deepae_jax.config.Config")
    values = config.to_dict() if config is not None else vars(config_lib.defaults()).copy()
    if recipe:
        values.update(settings_of_flagfile(recipes.path(recipe)))
    if flagfile:
        values.update(settings_of_flagfile(flagfile))
    values.update(settings)
    logdir = values.get("logdir") or config_lib.defaults().logdir
    folder = os.path.join(logdir, DATA_FOLDER)
    data = {"path_to_train_data": ("train", train), "path_to_eval_data": ("valid", valid),
            "path_to_test_data": ("test", test)}
    planned = {flag: _planned_path(d, folder, name) for flag, (name, d) in data.items()}
    Config.from_dict(values, mode="train", **planned)  # every setting checked before any write
    from deepae_jax.run.logdir import check_logdir
    check_logdir(logdir, bool(values.get("resume")), bool(values.get("overwrite")))
    values.update(mode="train", **{flag: as_path(d, folder, name, columns,
                                                 keep_existing=bool(values.get("resume")))
                                   for flag, (name, d) in data.items()})
    cfg = Config.from_dict(values)
    from deepae_jax.training import search
    search.train(cfg)
    return Model(cfg.logdir)


def load(logdir: str) -> "Model":
    """The model trained into (or saved to) ``logdir``."""
    return Model(logdir)


class Model:
    """A trained model in its run folder: what it was trained with, and how to use it."""

    def __init__(self, logdir: str):
        from deepae_jax.run.run_config import load_run_config
        recorded = load_run_config(logdir)
        if recorded is None:
            raise FileNotFoundError(f"{logdir}: no config.json; not the folder of a training run")
        self.logdir = logdir
        self.config = Config.from_dict(recorded, mode="recommend", logdir=logdir,
                                       path_to_eval_data="", path_to_test_data="",
                                       resume=False, metrics="", metrics_path="", save_path="")
        self._restored = None
        self._recommender = None

    def _settings(self, **overrides) -> Config:
        return dataclasses.replace(self.config, **overrides)

    @property
    def refit(self) -> "Model | None":
        """The model refit on the training and validation ratings (``--refit``: its folder
        ``LOGDIR/refit``), or None when the run has none (no ``--refit``, or it kept its
        baseline: then this model is the answer)."""
        from deepae_jax.run import files
        folder = os.path.join(self.logdir, files.REFIT_DIR)
        return Model(folder) if os.path.isfile(os.path.join(folder, files.CONFIG_FILE)) else None

    def evaluate(self, data, metrics: str = "rmse,mae", columns: Sequence[str] | None = None,
                 relevance_threshold: float = 0.0) -> dict[str, Any]:
        """Every metric of ``metrics`` (the ``--metrics`` syntax) on ``data``, with
        eval_ratings (scored) and eval_ratings_dropped (unknown to training)."""
        from deepae_jax import inference
        path = as_path(data, os.path.join(self.logdir, DATA_FOLDER), "evaluate", columns)
        cfg = self._settings(mode="evaluate", path_to_eval_data=path, metrics=metrics,
                             relevance_threshold=relevance_threshold)
        return inference.evaluate_saved(cfg)[1]

    def _inference(self):
        if self._restored is None:
            from deepae_jax import inference
            from deepae_jax.training import run_data
            data, model_cfg, params, base = inference.restore_for_inference(
                self._settings(path_to_eval_data=""))
            if base is None:
                data, base = run_data.centre(self._settings(baseline="none"), data)
            self._restored = data, model_cfg, params, base
        return self._restored

    def predict(self, users: Sequence, items: Sequence) -> np.ndarray:
        """Predicted rating (float64) of each (users[j], items[j]); users or items unknown to
        training get the baseline's prediction (the training mean without a baseline), and
        predictions are clipped to the training range when the run was (--clip_predictions)."""
        from deepae_jax.evaluation import predictions
        users, items = check_ids(users, "users"), check_ids(items, "items")
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(f"users and items must be two 1-D sequences of one length, got "
                             f"shapes {users.shape} and {items.shape}")
        if len(users) == 0:
            return np.zeros(0)
        data, model_cfg, params, base = self._inference()
        pairs = np.stack([users.astype(str), items.astype(str)], axis=1)
        _, first, back = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
        query = ratings.Triples(users[first], items[first], np.ones(len(first), np.float32))
        targets = predictions.align_targets(data.train, query, source="predict")
        inputs = data.inputs if data.inputs is not None else data.train.csr
        pred = predictions.predict_all(params, model_cfg, inputs, base, targets,
                                   self.config.eval_batch_size, self.config.clip_predictions,
                                   unknown="baseline")
        return pred[np.asarray(back).reshape(-1)]

    def recommender(self):
        """The :class:`~deepae_jax.recommend.Recommender` of this model (loaded once)."""
        if self._recommender is None:
            from deepae_jax.recommend import Recommender
            self._recommender = Recommender.from_logdir(self.logdir)
        return self._recommender

    def recommend(self, users: Sequence | None = None, k: int = 10):
        """The k best unrated items of training users (all of them by default), original ids:
        a :class:`~deepae_jax.recommend.TopK` (``.for_user(j)``, ``.to_frame()``); one id
        stands for a list of one."""
        k = check_count(k, "k")
        if users is not None:
            users = check_ids([users] if np.ndim(users) == 0 else users, "users")
        return self.recommender().recommend_users(users, k)

    def save(self, path: str) -> "Model":
        """Copies the model into ``path`` as a self-contained folder (its best or newest
        checkpoint, id maps, baseline, settings and training data); returns it loaded."""
        from deepae_jax.run import checkpoint as ckpt
        from deepae_jax.run.files import atomic_write_text
        restored = ckpt.restore(self.logdir)
        if os.path.exists(path) and os.listdir(path):
            raise FileExistsError(f"{path}: exists and is not empty; save into a new folder")
        os.makedirs(os.path.join(path, DATA_FOLDER), exist_ok=True)
        for name in (os.path.basename(restored.path), files.VOCAB_FILE, files.BASELINE_FILE,
                     files.SUMMARY_FILE, files.BEST_INFO_FILE):
            if os.path.isfile(os.path.join(self.logdir, name)):
                shutil.copy2(os.path.join(self.logdir, name), os.path.join(path, name))
        train_path = os.path.join(path, DATA_FOLDER, "train.npz")
        raw = ratings.load_matrix(self.config.path_to_train_data, self.config.major,
                                  **dataclasses.asdict(ratings.TableFormat.from_config(
                                      self.config)))
        raw.save(train_path)
        recorded = {**self.config.to_dict(), **_recorded(self.logdir),
                    "path_to_train_data": os.path.abspath(train_path), "logdir": path}
        atomic_write_text(os.path.join(path, files.CONFIG_FILE),
                          json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        return Model(path)


def _recorded(logdir: str) -> dict:
    with open(os.path.join(logdir, files.CONFIG_FILE), encoding="utf-8") as fh:
        values = json.load(fh)
    return {k: v for k, v in values.items() if k not in {f.name for f in dataclasses.fields(Config)}}
