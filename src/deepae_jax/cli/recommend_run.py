"""``--mode=recommend``: top-N recommendations from a training run's logdir, as a TSV file.

The users come from ``--users`` (default: every training user) or, as new users scored from
their ratings alone, from ``--ratings_file``; the work is :class:`recommend.Recommender`'s.
"""
from __future__ import annotations

import sys

import numpy as np

from deepae_jax.config import defaults
from deepae_jax.data import ratings
from deepae_jax.run.files import atomic_write
from deepae_jax.recommend import Recommender, RecommendError


def parse_ids(text: str, flag: str = "users") -> np.ndarray | None:
    """``"3,17,42"`` -> array([3, 17, 42]) (int64 when every id is ASCII digits fitting int64,
    else the strings, e.g. ``"u_3,u_17"``, as the rating readers type ids); "" -> None (all)."""
    text = str(text).strip()
    if not text:
        return None
    tokens = [t.strip() for t in text.split(",")]
    if not all(tokens):
        raise RecommendError(f"--{flag}={text!r}: expected comma-separated ids (an id is empty)")
    if all(t.isascii() and t.isdigit() and int(t) < 2 ** 63 for t in tokens):
        return np.asarray([int(t) for t in tokens], np.int64)
    return np.asarray(tokens, str)


def check_rating_range(triples: ratings.Triples, rating_range: tuple[float, float] | None,
                       source: str) -> None:
    """Raises RecommendError naming ``source``, the user and the item of the first rating
    outside the model's rating scale (the training ratings' range; None: not recorded)."""
    if rating_range is None:
        return
    low, high = rating_range
    bad = np.flatnonzero((triples.ratings < low) | (triples.ratings > high))
    if bad.size:
        i = bad[0]
        raise RecommendError(f"{source}: rating {triples.ratings[i]:g} of user "
                             f"{triples.users[i]} for item {triples.items[i]} is outside the "
                             f"model's rating scale {low:g}..{high:g} ({bad.size} such "
                             "rating(s))")


def run_recommend(cfg) -> int:
    """``--mode=recommend``: the ``--top_k`` best unrated items of ``--users`` (default: all
    training users), or of the users in ``--ratings_file`` (new users, scored from those ratings
    alone), written as ``user<TAB>item<TAB>prediction<TAB>rank`` to ``--recommendations_path``
    (default: standard output). Returns the number of lines."""
    users = parse_ids(cfg.users)
    default = defaults()  # flags left at their defaults: read as the run was (config.json)
    rec = Recommender.from_logdir(
        cfg.logdir, cfg.path_to_train_data or None, cfg.save_path,
        None if cfg.delimiter == default.delimiter else cfg.delimiter,
        None if cfg.column_order == default.column_order else cfg.column_order,
        cfg.eval_batch_size, load_train=not cfg.ratings_file)
    if cfg.ratings_file:
        triples = ratings.read_table(cfg.ratings_file, ratings.TableFormat.from_config(cfg))
        check_rating_range(triples, rec.rating_range, cfg.ratings_file)
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
