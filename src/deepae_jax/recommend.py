"""Top-N recommendations from a trained model, for training users and for new users.

A user's input vector is either the user's TRAINING ratings (a known user) or any ratings given at
run time (a new user: one forward pass, no retraining; matrix factorisation would have to refit).
The model's output f(x) scores every item; items the user rated in ``x`` are excluded and the
``k`` best of the rest are returned with their ORIGINAL ids and predicted ratings.

Rows are scored in batches of a fixed shape (``batch_size`` rows, padded with empty rows), so a
user gets bit-for-bit the same recommendations whether scored alone or with all others, and
whether the vector came from the training data or from a ratings file. Ties are broken by the
smaller item index.

Item-based models (``--major=items``: rows are items, columns users) recommend to their TRAINING
users: a user's scores over all items are the user's column of the reconstructed item matrix
(:mod:`deepae_jax.evaluation.scoring`; computed once, n_users x n_items float32 kept in memory). They cannot
score new users (a new user is a new input column the model does not have).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from deepae_jax import baseline as baseline_lib
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.core import model
from deepae_jax.evaluation import scoring
from deepae_jax.extras import require
from deepae_jax.data import ratings
from deepae_jax.data.batching import bucket_length, dense_rows
from deepae_jax.training.run_data import reindex
from deepae_jax.evaluation.ranking import top_k_masked

log = logging.getLogger("deepae_jax")


class RecommendError(ValueError):
    """A request the recommender cannot serve (the message says why)."""


class UnknownIdError(RecommendError):
    """User or item ids that the model does not know; ``ids`` lists them."""

    def __init__(self, kind: str, ids: Sequence[int | str], hint: str = ""):
        self.kind, self.ids = kind, [i.item() if isinstance(i, np.generic) else i for i in ids]
        shown = ", ".join(map(str, self.ids[:10])) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"{len(self.ids)} unknown {kind} id(s): {shown}{hint}")


@dataclasses.dataclass(frozen=True)
class TopK:
    """Recommendations of several users, ORIGINAL ids.

    ``items[u, j]`` is user ``users[u]``'s (j+1)-th recommendation and ``scores[u, j]`` its
    predicted rating; ``items`` is -1 (or "" for string ids) and ``scores`` -inf where the user
    had fewer than k unrated items.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def for_user(self, u: int) -> list[tuple[int | str, float]]:
        keep = np.isfinite(self.scores[u])
        return [(i.item(), float(s)) for i, s in zip(self.items[u][keep], self.scores[u][keep])]

    def to_frame(self):
        """A pandas DataFrame with columns user, item, score, rank (rank 1 = best), one row per
        recommendation (users with fewer unrated items have fewer rows); needs the pandas
        extra (MissingExtraError naming it otherwise)."""
        pd = require("pandas", "pandas", "TopK.to_frame")
        rows = [(np.asarray(user).item(), item, score, rank) for u, user in enumerate(self.users)
                for rank, (item, score) in enumerate(self.for_user(u), start=1)]
        return pd.DataFrame(rows, columns=["user", "item", "score", "rank"])

    def tsv(self) -> str:
        """``user<TAB>item<TAB>predicted rating<TAB>rank`` per recommendation (rank 1 = best);
        the first three columns read as a ratings file."""
        out = []
        for u, user in enumerate(self.users):
            for rank, (item, score) in enumerate(self.for_user(u), start=1):
                out.append(f"{user}\t{item}\t{score:.6f}\t{rank}\n")
        return "".join(out)


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense indices, known mask) of ``ids`` in the sorted id map (ints or strings)."""
    ids = np.asarray(ids)
    if ids.size == 0:
        ids = ids.astype(sorted_ids.dtype)
    return ratings.lookup_ids(sorted_ids, ids)


@dataclasses.dataclass
class NewUsers:
    """Rating vectors built from ratings given at run time (not the training data)."""

    user_ids: np.ndarray  # (m,) sorted ORIGINAL ids of the file
    csr: sp.csr_matrix  # (m, n_items) on the model's item layout
    unknown_items: np.ndarray  # sorted ORIGINAL ids of items the model does not know
    ignored_ratings: int  # ratings dropped because of unknown items


class Recommender:
    """A trained model with its id maps, and (optionally) the training ratings.

    ``major="items"`` (an item-based model) needs ``train``: its rows are the item vectors."""

    def __init__(self, params: model.Params, model_cfg: model.ModelConfig, item_ids: np.ndarray,
                 train: ratings.RatingMatrix | None = None, batch_size: int = 256,
                 checkpoint: str = "", major: str = "users",
                 rating_range: tuple[float, float] | None = None,
                 base: baseline_lib.Baseline | None = None, clip: bool = False):
        n_inputs = len(item_ids) if major == "users" else (
            len(train.col_ids) if train is not None else -1)
        if major == "items" and (train is None or train.major != "items"):
            raise RecommendError("an item-based model (--major=items) recommends from its "
                                 "training matrix (items x users): give the training data")
        if model_cfg.layer_sizes[0] != n_inputs:
            raise ValueError(f"the model has {model_cfg.layer_sizes[0]} inputs but there are "
                             f"{n_inputs} {'item' if major == 'users' else 'user'} ids")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.params = jax.device_put(params)
        self.model_cfg = model_cfg
        self.item_ids = np.asarray(item_ids)
        self.train = train
        self.batch_size = int(batch_size)
        self.checkpoint = checkpoint
        self.major = major
        self._item_major_scores = None  # (n_users, n_items) on the device, computed once
        self.rating_range = rating_range  # (min, max) of the training ratings, when recorded
        self.clip_range = rating_range if clip else None  # the run's --clip_predictions
        self.base = base if base is not None and base.kind != "none" else None
        # the model's input for the training users (residuals of the baseline, if any)
        self.inputs = (None if train is None else train.csr if self.base is None
                       else baseline_lib.model_input(self.base, train.csr))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_logdir(cls, logdir: str, path_to_train_data: str | None = None, save_path: str = "",
                    delimiter: str | None = None, column_order: str | None = None,
                    batch_size: int = 256, load_train: bool = True) -> "Recommender":
        """Loads the best (``best.msgpack``) else the latest checkpoint of ``logdir`` (or
        ``save_path``), its ``vocab.npz`` and, unless ``load_train`` is False, the training
        data (default: as ``logdir/config.json`` says, as --clip_predictions)."""
        restored = ckpt.restore(logdir, save_path)
        path, row_ids, col_ids = restored.path, restored.row_ids, restored.col_ids
        major = restored.major
        saved = restored.run_config or {}
        delimiter = delimiter if delimiter is not None else saved.get("delimiter", "\t")
        column_order = column_order or saved.get("column_order", "user,item,rating")
        train = None
        data_path = path_to_train_data or saved.get("path_to_train_data") or ""
        if major == "items" and not data_path:
            raise RecommendError(f"{path}: an item-based model (--major=items) recommends from "
                                 "its training matrix: give --path_to_train_data")
        if (load_train or major == "items") and data_path:
            read_as_trained = {k: saved[k] for k in ("header", "columns") if k in saved}
            train = load_training_matrix(data_path, row_ids, col_ids, delimiter, column_order,
                                         major, **read_as_trained)
        elif load_train:
            log.warning("%s: no training data given (--path_to_train_data) nor recorded in "
                        "config.json: only new users (given ratings) can be scored", logdir)
        item_ids = col_ids if major == "users" else row_ids
        base = baseline_lib.load(os.path.dirname(os.path.abspath(path)))
        return cls(restored.params, restored.model_cfg, item_ids, train, batch_size, path, major,
                   restored.spec.rating_range, base, bool(saved.get("clip_predictions")))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def user_ids(self) -> np.ndarray:
        if self.train is None:
            return np.zeros(0, np.int64)
        return self.train.row_ids if self.major == "users" else self.train.col_ids

    # ---- id maps ------------------------------------------------------------------------
    def user_rows(self, user_ids: Sequence[int]) -> np.ndarray:
        """Dense rows of training users; UnknownIdError lists ids not in the training data."""
        if self.train is None:
            raise RecommendError("no training data loaded: known users cannot be scored (give "
                                 "--path_to_train_data, or score the users from their ratings: "
                                 "--ratings_file, or \"ratings\" in a service request)")
        rows, known = _lookup(self.user_ids, np.asarray(user_ids))
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
        values = np.asarray(values, np.float64)
        if not np.all(np.isfinite(values)) or np.any(values == 0):
            raise RecommendError("ratings must be finite and non-zero (0 means 'unrated')")
        if self.rating_range is not None:
            low, high = self.rating_range
            bad = values[(values < low) | (values > high)]
            if bad.size:
                raise RecommendError(f"rating {bad[0]:g} is outside the model's rating scale "
                                     f"{low:g}..{high:g} (the training ratings' range)")
        x = np.zeros((1, self.n_items), np.float32)
        x[0, cols] = values
        return x

    def new_users(self, triples: ratings.Triples, source: str = "ratings") -> NewUsers:
        """Vectors of the users in ``triples`` (any ids; not looked up in the training data);
        ratings of items the model does not know are dropped and reported."""
        self._user_based_only(f"{source}: scoring new users")
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

    def _scores(self, x: np.ndarray, row_index: np.ndarray) -> jax.Array:
        """Predicted ratings of one padded batch of raw rating vectors (the baseline's, if any,
        added back); ``row_index``: training rows (-1: users unknown to training)."""
        x_in = baseline_lib.encode_dense(self.base, x, row_index)
        return scoring.rating_scores(self.params, x_in, self.model_cfg, self.base, row_index)

    def top_k_dense(self, x: np.ndarray, k: int, row_index: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores), each (rows, k), for dense raw rating vectors x (rows,
        n_items); ``row_index``: their training rows (default: users unknown to training)."""
        self._user_based_only("scoring a rating vector")
        if not 1 <= k <= self.n_items:
            raise RecommendError(f"k={k}: must be in 1..{self.n_items} (the number of items)")
        static_k = min(self.n_items, bucket_length(k))  # few compiled shapes for many k
        row_index = np.full(len(x), -1) if row_index is None else np.asarray(row_index)
        idx, scores = [], []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            padded = self._padded(chunk)
            rows = np.resize(row_index[start:start + self.batch_size], len(padded))
            s, i = top_k_masked(self._scores(padded, rows), jnp.asarray(padded != 0), static_k)
            idx.append(np.asarray(i)[:len(chunk), :k])
            scores.append(np.asarray(s)[:len(chunk), :k])
        if not idx:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(idx), scoring.clip_finite(np.concatenate(scores), self.clip_range)

    def _top_k_csr(self, csr: sp.csr_matrix, rows: np.ndarray, users: np.ndarray, k: int,
                   known: bool) -> TopK:
        """Top k of the raw rating rows ``rows`` of ``csr``: training rows when ``known``."""
        parts = [self.top_k_dense(dense_rows(csr, rows[s:s + self.batch_size]), k,
                                  rows[s:s + self.batch_size] if known else None)
                 for s in range(0, len(rows), self.batch_size)]
        idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k), np.int64)
        scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k), np.float32)
        missing = "" if self.item_ids.dtype.kind == "U" else -1
        items = np.where(np.isfinite(scores), self.item_ids[idx], missing)
        return TopK(np.asarray(users), items, scores)

    def _user_based_only(self, what: str) -> None:
        if self.major != "users":
            raise RecommendError(f"{what}: an item-based model (--major=items) scores only its "
                                 "training users (a new user would be an input column the model "
                                 "does not have); ask for training users by id")

    def _full_scores(self) -> jax.Array:
        """Item-based model: every training user's scores (n_users, n_items), computed once."""
        if self._item_major_scores is None:  # batches of >= 256 items: this runs once
            self._item_major_scores = scoring.item_major_scores(
                self.params, self.model_cfg, self.inputs, max(self.batch_size, 256), self.base)
        return self._item_major_scores

    def user_scores(self, user_ids: Sequence[int]) -> np.ndarray:
        """Predicted ratings (len(user_ids), n_items) of TRAINING users over all items, for
        user- and item-based models alike (what a service calls for a known user)."""
        rows = self.user_rows(user_ids)
        full = self._full_scores() if self.major == "items" else None
        return scoring.clip_finite(scoring.user_scores(
            self.params, self.model_cfg, self.inputs, self.major, rows, self.batch_size, full,
            self.base), self.clip_range)

    def _top_k_item_major(self, rows: np.ndarray, users: np.ndarray, k: int) -> TopK:
        """Top k of training users of an item-based model (columns of the reconstruction)."""
        if not 1 <= k <= self.n_items:
            raise RecommendError(f"k={k}: must be in 1..{self.n_items} (the number of items)")
        idx, scores = scoring.top_k_unrated(self.params, self.model_cfg, self.inputs, "items",
                                            rows, k, self.batch_size, self._full_scores(),
                                            self.base)
        missing = "" if self.item_ids.dtype.kind == "U" else -1
        items = np.where(np.isfinite(scores), self.item_ids[idx], missing)
        return TopK(np.asarray(users), items, scoring.clip_finite(scores, self.clip_range))

    def recommend_users(self, user_ids: Sequence[int] | None, k: int) -> TopK:
        """Top k unrated items of training users (all of them when ``user_ids`` is None), for
        user- and item-based models alike."""
        if self.train is None:
            self.user_rows([])  # raises: no training data
        if user_ids is None:
            user_ids = self.user_ids
        rows = self.user_rows(user_ids)
        if self.major == "items":
            return self._top_k_item_major(rows, np.asarray(user_ids), k)
        return self._top_k_csr(self.train.csr, rows, np.asarray(user_ids), k, known=True)

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
        return self._top_k_csr(new.csr, rows, new.user_ids[rows], k, known=False)

    def recommend_vector(self, x: np.ndarray, k: int) -> list[tuple[int, float]]:
        """One user's top k [(item id, predicted rating)] from a dense vector (1, n_items)."""
        idx, scores = self.top_k_dense(x, k)
        keep = np.isfinite(scores[0])
        return [(i.item(), float(s)) for i, s in zip(self.item_ids[idx[0][keep]], scores[0][keep])]

    def training_vector(self, user_id: int) -> np.ndarray:
        """A training user's input vector (1, n_items)."""
        self._user_based_only("a user's input vector")
        return dense_rows(self.train.csr, self.user_rows([user_id]))

    def predict_dense(self, x: np.ndarray) -> np.ndarray:
        """Predicted ratings (rows, n_items) of dense raw rating vectors x of users unknown to
        training (the baseline's prediction added back, if any), in fixed-size batches."""
        self._user_based_only("scoring a rating vector")
        unknown = np.full(self.batch_size, -1)
        out = [np.asarray(self._scores(self._padded(x[s:s + self.batch_size]), unknown)
                          )[:len(x[s:s + self.batch_size])]
               for s in range(0, x.shape[0], self.batch_size)]
        return scoring.clip_finite(np.concatenate(out), self.clip_range) if out else np.zeros(
            (0, self.n_items), np.float32)

    def warm_up(self, ks: Sequence[int] = (10,)) -> None:
        """Compiles the scoring functions (first requests are then fast)."""
        if self.major == "items":
            for k in ks:
                self.recommend_users(self.user_ids[:1], min(k, self.n_items))
            return
        x = np.zeros((1, self.n_items), np.float32)
        self.predict_dense(x)
        for k in ks:
            self.top_k_dense(x, min(k, self.n_items))


def load_training_matrix(path: str, row_ids: np.ndarray, col_ids: np.ndarray,
                         delimiter: str = "auto", column_order: str = "user,item,rating",
                         major: str = "users", **options) -> ratings.RatingMatrix:
    """The training ratings on the trained model's id maps (as evaluate/infer lay them out);
    ``options``: header, columns, timestamp_column of :class:`ratings.TableFormat`."""
    train = ratings.load_matrix(path, major, delimiter, column_order, **options)
    if not (np.array_equal(train.row_ids, row_ids) and np.array_equal(train.col_ids, col_ids)):
        log.warning("%s: the users or items differ from the model's id maps (vocab.npz); is this "
                    "the data the model was trained on?", path)
    return reindex(train, row_ids, col_ids)
