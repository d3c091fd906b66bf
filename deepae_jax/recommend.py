"""Top-N recommendations from a trained model, for training users and for new users.

A user's input vector is either the user's TRAINING ratings (a known user) or any ratings given at
run time (a new user: one forward pass, no retraining; matrix factorisation would have to refit).
The model's output f(x) scores every item; items the user rated in ``x`` are excluded and the
``k`` best of the rest are returned with their ORIGINAL ids and predicted ratings.

Rows are scored in batches of a fixed shape (``batch_size`` rows, padded with empty rows), so a
user gets bit-for-bit the same recommendations whether scored alone or with all others, and
whether the vector came from the training data or from a ratings file. Ties are broken by the
smaller item index.

Only user-based models (``--major=users``) can recommend items to users: an item-based model's
rows are items.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from deepae_jax import checkpoint as ckpt
from deepae_jax import model
from deepae_jax.data import ratings
from deepae_jax.data.batching import bucket_length, dense_rows
from deepae_jax.io_utils import atomic_write
from deepae_jax.run_config import load_run_config

log = logging.getLogger("deepae_jax")


class RecommendError(ValueError):
    """A request the recommender cannot serve (the message says why)."""


class UnknownIdError(RecommendError):
    """User or item ids that the model does not know; ``ids`` lists them."""

    def __init__(self, kind: str, ids: Sequence[int], hint: str = ""):
        self.kind, self.ids = kind, [int(i) for i in ids]
        shown = ", ".join(map(str, self.ids[:10])) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"{len(self.ids)} unknown {kind} id(s): {shown}{hint}")


@functools.partial(jax.jit, static_argnames=("model_cfg", "k"))
def top_k_unrated(params: model.Params, x: jax.Array, model_cfg: model.ModelConfig, k: int
                  ) -> tuple[jax.Array, jax.Array]:
    """(scores, item indices), each (batch, k): the k best predicted items per row, best first,
    among the items the row has not rated (x == 0); -inf scores where fewer remain."""
    out = model.apply(params, x, model_cfg, train=False)
    return jax.lax.top_k(jnp.where(x != 0, -jnp.inf, out), k)


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def predict_dense(params: model.Params, x: jax.Array, model_cfg: model.ModelConfig) -> jax.Array:
    """f(x) in evaluation mode: predicted ratings (batch, n_items)."""
    return model.apply(params, x, model_cfg, train=False)


@dataclasses.dataclass(frozen=True)
class TopK:
    """Recommendations of several users, ORIGINAL ids.

    ``items[u, j]`` is user ``users[u]``'s (j+1)-th recommendation and ``scores[u, j]`` its
    predicted rating; ``items`` is -1 and ``scores`` -inf where the user had fewer than k unrated
    items.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def for_user(self, u: int) -> list[tuple[int, float]]:
        keep = self.items[u] >= 0
        return [(int(i), float(s)) for i, s in zip(self.items[u][keep], self.scores[u][keep])]

    def tsv(self) -> str:
        """``user<TAB>item<TAB>predicted rating<TAB>rank`` per recommendation (rank 1 = best);
        the first three columns read as a ratings file."""
        out = []
        for u, user in enumerate(self.users):
            for rank, (item, score) in enumerate(self.for_user(u), start=1):
                out.append(f"{user}\t{item}\t{score:.6f}\t{rank}\n")
        return "".join(out)


def model_config_from_meta(path: str, meta: dict) -> model.ModelConfig:
    """The architecture a checkpoint records (run_meta), so no architecture flags are needed."""
    try:
        return model.ModelConfig(layer_sizes=tuple(int(s) for s in meta["layer_sizes"]),
                                 activation=meta["activation"],
                                 drop_prob=float(meta.get("drop_prob", 0.0)),
                                 constrained=bool(meta["constrained"]),
                                 last_layer_linear=bool(meta["last_layer_linear"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ckpt.CheckpointError(f"{path}: the checkpoint does not record its architecture "
                                   f"({e})") from None


def parse_ids(text: str, flag: str = "users") -> np.ndarray | None:
    """``"3,17,42"`` -> array([3, 17, 42]); "" -> None (all)."""
    text = str(text).strip()
    if not text:
        return None
    try:
        return np.asarray([int(t) for t in text.split(",") if t.strip()], np.int64)
    except ValueError:
        raise RecommendError(f"--{flag}={text!r}: expected comma-separated integer ids") from None


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense indices, known mask) of ``ids`` in the sorted id map."""
    ids = np.asarray(ids, np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
    pos = np.searchsorted(sorted_ids, ids)
    known = (pos < len(sorted_ids)) & (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == ids)
    return pos, known


@dataclasses.dataclass
class NewUsers:
    """Rating vectors built from ratings given at run time (not the training data)."""

    user_ids: np.ndarray  # (m,) sorted ORIGINAL ids of the file
    csr: sp.csr_matrix  # (m, n_items) on the model's item layout
    unknown_items: np.ndarray  # sorted ORIGINAL ids of items the model does not know
    ignored_ratings: int  # ratings dropped because of unknown items


class Recommender:
    """A trained user-based model with its id maps, and (optionally) the training ratings."""

    def __init__(self, params: model.Params, model_cfg: model.ModelConfig, item_ids: np.ndarray,
                 train: ratings.RatingMatrix | None = None, batch_size: int = 256,
                 checkpoint: str = ""):
        if model_cfg.layer_sizes[0] != len(item_ids):
            raise ValueError(f"the model has {model_cfg.layer_sizes[0]} inputs but there are "
                             f"{len(item_ids)} item ids")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.params = jax.device_put(params)
        self.model_cfg = model_cfg
        self.item_ids = np.asarray(item_ids, np.int64)
        self.train = train
        self.batch_size = int(batch_size)
        self.checkpoint = checkpoint

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_logdir(cls, logdir: str, path_to_train_data: str | None = None, save_path: str = "",
                    delimiter: str | None = None, column_order: str | None = None,
                    batch_size: int = 256, load_train: bool = True) -> "Recommender":
        """Loads the best (``best.msgpack``) else the latest checkpoint of ``logdir`` (or
        ``save_path``), its ``vocab.npz`` and,
        unless ``load_train`` is False, the training data: ``path_to_train_data``, else the
        one recorded in ``logdir/config.json``. Without training data only new users (rating
        vectors given at run time) can be scored."""
        from deepae_jax import baseline as baseline_lib, selection
        path = save_path or selection.best_checkpoint(logdir) or ckpt.latest_checkpoint(logdir)
        if not path:
            raise ckpt.CheckpointError(f"no checkpoint in {logdir!r}; train first or name one "
                                       "with --save_path")
        folder = os.path.dirname(os.path.abspath(path))
        base = baseline_lib.load(folder)
        if base is not None and base.kind != "none":
            raise RecommendError(f"{path}: the model was trained with --baseline={base.kind}; "
                                 "recommend does not add a baseline back yet (use --mode=infer)")
        row_ids, col_ids, major = ckpt.load_vocab(folder)
        if major != "users":
            raise RecommendError(f"{path}: recommend needs a user-based model (trained with "
                                 f"--major=users); this one was trained with --major={major}, "
                                 "so its rows are items")
        meta = ckpt.read_checkpoint(path)["meta"]
        model_cfg = model_config_from_meta(path, meta)
        target = model.init(jax.random.PRNGKey(0), model_cfg.layer_sizes, model_cfg.constrained)
        params, _ = ckpt.restore_params(path, target)
        saved = load_run_config(folder) or {}
        delimiter = delimiter if delimiter is not None else saved.get("delimiter", "\t")
        column_order = column_order or saved.get("column_order", "user,item,rating")
        train = None
        data_path = path_to_train_data or saved.get("path_to_train_data") or ""
        if load_train and data_path:
            train = load_training_matrix(data_path, row_ids, col_ids, delimiter, column_order)
        elif load_train:
            log.warning("%s: no training data given (--path_to_train_data) nor recorded in "
                        "config.json: only new users (given ratings) can be scored", logdir)
        return cls(params, model_cfg, col_ids, train, batch_size, path)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def user_ids(self) -> np.ndarray:
        return self.train.row_ids if self.train is not None else np.zeros(0, np.int64)

    # ---- id maps ------------------------------------------------------------------------
    def user_rows(self, user_ids: Sequence[int]) -> np.ndarray:
        """Dense rows of training users; UnknownIdError lists ids not in the training data."""
        if self.train is None:
            raise RecommendError("no training data loaded: known users cannot be scored (give "
                                 "--path_to_train_data, or score the users from their ratings: "
                                 "--ratings_file, or \"ratings\" in a service request)")
        rows, known = _lookup(self.train.row_ids, np.asarray(user_ids))
        if not known.all():
            raise UnknownIdError("user", np.asarray(user_ids)[~known],
                                 " (not in the training data; send their ratings instead)")
        return rows

    def item_columns(self, item_ids: Sequence[int]) -> np.ndarray:
        """Dense columns of items; UnknownIdError lists ids the model does not know."""
        cols, known = _lookup(self.item_ids, np.asarray(item_ids))
        if not known.all():
            raise UnknownIdError("item", np.asarray(item_ids)[~known])
        return cols

    def vector(self, items: Sequence[int], values: Sequence[float]) -> np.ndarray:
        """A new user's dense rating vector (1, n_items); items must be known and distinct."""
        cols = self.item_columns(items)
        if len(np.unique(cols)) != len(cols):
            raise RecommendError("an item is rated more than once")
        values = np.asarray(values, np.float32)
        if not np.all(np.isfinite(values)) or np.any(values == 0):
            raise RecommendError("ratings must be finite and non-zero (0 means 'unrated')")
        x = np.zeros((1, self.n_items), np.float32)
        x[0, cols] = values
        return x

    def new_users(self, triples: ratings.Triples, source: str = "ratings") -> NewUsers:
        """Vectors of the users in ``triples`` (any ids; not looked up in the training data);
        ratings of items the model does not know are dropped and reported."""
        _, known = _lookup(self.item_ids, triples.items)
        unknown = np.unique(triples.items[~known])
        user_ids = np.unique(triples.users)
        template = ratings.RatingMatrix(sp.csr_matrix((len(user_ids), self.n_items),
                                                      dtype=np.float32),
                                        user_ids, self.item_ids, "users")
        split = ratings.align_eval(template, triples, source=source)
        return NewUsers(user_ids, split.csr, unknown, int((~known).sum()))

    # ---- scoring ------------------------------------------------------------------------
    def _padded(self, x: np.ndarray) -> np.ndarray:
        real = x.shape[0]
        if real == self.batch_size:
            return x
        return np.concatenate([x, np.zeros((self.batch_size - real, x.shape[1]), np.float32)])

    def top_k_dense(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores), each (rows, k), for dense rating vectors x (rows, n_items)."""
        if not 1 <= k <= self.n_items:
            raise RecommendError(f"k={k}: must be in 1..{self.n_items} (the number of items)")
        static_k = min(self.n_items, bucket_length(k))  # few compiled shapes for many k
        idx, scores = [], []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            s, i = top_k_unrated(self.params, self._padded(chunk), self.model_cfg, static_k)
            idx.append(np.asarray(i)[:len(chunk), :k])
            scores.append(np.asarray(s)[:len(chunk), :k])
        if not idx:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(idx), np.concatenate(scores)

    def _top_k_csr(self, csr: sp.csr_matrix, rows: np.ndarray, users: np.ndarray, k: int) -> TopK:
        parts = [self.top_k_dense(dense_rows(csr, rows[s:s + self.batch_size]), k)
                 for s in range(0, len(rows), self.batch_size)]
        idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k), np.int64)
        scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k), np.float32)
        items = np.where(np.isfinite(scores), self.item_ids[idx], -1)
        return TopK(np.asarray(users, np.int64), items, scores)

    def recommend_users(self, user_ids: Sequence[int] | None, k: int) -> TopK:
        """Top k unrated items of training users (all of them when ``user_ids`` is None)."""
        if self.train is None:
            self.user_rows([])  # raises: no training data
        if user_ids is None:
            user_ids = self.train.row_ids
        rows = self.user_rows(user_ids)
        return self._top_k_csr(self.train.csr, rows, np.asarray(user_ids), k)

    def recommend_new_users(self, new: NewUsers, k: int, user_ids: Sequence[int] | None = None
                            ) -> TopK:
        """Top k unrated items of users given by their ratings (see :meth:`new_users`)."""
        if user_ids is None:
            rows = np.arange(len(new.user_ids))
        else:
            rows, known = _lookup(new.user_ids, np.asarray(user_ids))
            if not known.all():
                raise UnknownIdError("user", np.asarray(user_ids)[~known],
                                     " (no ratings of them in the ratings file)")
        return self._top_k_csr(new.csr, rows, new.user_ids[rows], k)

    def recommend_vector(self, x: np.ndarray, k: int) -> list[tuple[int, float]]:
        """One user's top k [(item id, predicted rating)] from a dense vector (1, n_items)."""
        idx, scores = self.top_k_dense(x, k)
        keep = np.isfinite(scores[0])
        return [(int(i), float(s)) for i, s in zip(self.item_ids[idx[0][keep]], scores[0][keep])]

    def training_vector(self, user_id: int) -> np.ndarray:
        """A training user's input vector (1, n_items)."""
        return dense_rows(self.train.csr, self.user_rows([user_id]))

    def predict_dense(self, x: np.ndarray) -> np.ndarray:
        """Predicted ratings (rows, n_items) of dense vectors x, in fixed-size batches."""
        out = [np.asarray(predict_dense(self.params, self._padded(x[s:s + self.batch_size]),
                                        self.model_cfg))[:len(x[s:s + self.batch_size])]
               for s in range(0, x.shape[0], self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.n_items), np.float32)

    def warm_up(self, ks: Sequence[int] = (10,)) -> None:
        """Compiles the scoring functions (first requests are then fast)."""
        x = np.zeros((1, self.n_items), np.float32)
        self.predict_dense(x)
        for k in ks:
            self.top_k_dense(x, min(k, self.n_items))


def load_training_matrix(path: str, row_ids: np.ndarray, col_ids: np.ndarray,
                         delimiter: str = "\t", column_order: str = "user,item,rating"
                         ) -> ratings.RatingMatrix:
    """The training ratings on the trained model's id maps (as evaluate/infer lay them out)."""
    from deepae_jax.runner import reindex  # the same re-indexing as restore_for_inference
    train = ratings.load_matrix(path, "users", delimiter, column_order)
    if not (np.array_equal(train.row_ids, row_ids) and np.array_equal(train.col_ids, col_ids)):
        log.warning("%s: the users or items differ from the model's id maps (vocab.npz); is this "
                    "the data the model was trained on?", path)
    return reindex(train, row_ids, col_ids)


def run_recommend(cfg) -> int:
    """``--mode=recommend``: the ``--top_k`` best unrated items of ``--users`` (default: all
    training users), or of the users in ``--ratings_file`` (new users, scored from those ratings
    alone), written as ``user<TAB>item<TAB>prediction<TAB>rank`` to ``--recommendations_path``
    (default: standard output). Returns the number of lines."""
    users = parse_ids(cfg.users)
    rec = Recommender.from_logdir(cfg.logdir, cfg.path_to_train_data or None, cfg.save_path,
                                  cfg.delimiter, cfg.column_order, cfg.eval_batch_size,
                                  load_train=not cfg.ratings_file)
    if cfg.ratings_file:
        triples = ratings.read_ratings_text(cfg.ratings_file, cfg.delimiter, cfg.column_order)
        new = rec.new_users(triples, source=cfg.ratings_file)
        if new.ignored_ratings:
            shown = ", ".join(map(str, new.unknown_items[:20]))
            more = " ..." if len(new.unknown_items) > 20 else ""
            print(f"{cfg.ratings_file}: ignored {new.ignored_ratings} rating(s) of "
                  f"{len(new.unknown_items)} item(s) unknown to the model: {shown}{more}",
                  file=sys.stderr, flush=True)
        empty = new.user_ids[np.diff(new.csr.indptr) == 0]
        if len(empty):
            print(f"{cfg.ratings_file}: {len(empty)} user(s) have no rating of a known item "
                  f"(scored from an empty vector): {', '.join(map(str, empty[:20]))}",
                  file=sys.stderr, flush=True)
        result = rec.recommend_new_users(new, cfg.top_k, users)
    else:
        result = rec.recommend_users(users, cfg.top_k)
    text = result.tsv()
    lines = text.count("\n")
    if cfg.recommendations_path:
        atomic_write(cfg.recommendations_path, lambda fh: fh.write(text.encode()))
        print(f"wrote {lines} recommendations for {len(result)} users to "
              f"{cfg.recommendations_path}", flush=True)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return lines
