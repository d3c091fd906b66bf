"""Top-N recommendations (--mode=recommend) for training users and for new users."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deepae_jax.run import checkpoint as ckpt
from deepae_jax.core import model
from deepae_jax.config import Config, ConfigError
from deepae_jax.data import ratings
from deepae_jax.recommend import Recommender, RecommendError, UnknownIdError
from deepae_jax.cli.recommend_run import run_recommend
from deepae_jax.run.run_config import load_run_config, save_run_config
from conftest import TINY_SPEC as SPEC

BATCH = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def rec(trained):
    root, cfg = trained
    return Recommender.from_logdir(cfg.logdir, cfg.path_to_train_data, batch_size=BATCH)


def rec_cfg(trained, tmp_path, **kw):
    root, cfg = trained
    base = dict(mode="recommend", logdir=cfg.logdir, path_to_train_data=cfg.path_to_train_data,
                top_k=5, eval_batch_size=BATCH, recommendations_path=str(tmp_path / "rec.tsv"))
    base.update(kw)
    return Config(**base)


def read_tsv(path):
    return [line.split("\t") for line in open(path).read().splitlines()]


def test_top_k_excludes_rated_items_and_follows_the_model(rec):
    top = rec.recommend_users(None, k=5)
    assert len(top) == len(rec.user_ids) and np.array_equal(top.users, rec.user_ids)
    x = rec.train.csr.toarray()
    out = np.asarray(model.apply(rec.params, x, rec.model_cfg))
    for u in range(0, len(top), 7):
        rated = set(rec.item_ids[x[u] != 0])
        items = [i for i, _ in top.for_user(u)]
        assert len(items) == 5 and not rated & set(items)
        masked = np.where(x[u] != 0, -np.inf, out[u])
        best = np.argsort(-masked, kind="stable")[:5]
        assert items == list(rec.item_ids[best])
        np.testing.assert_allclose([s for _, s in top.for_user(u)], out[u, best], atol=1e-5)
        assert all(a >= b for a, b in zip(top.scores[u], top.scores[u][1:]))


def test_one_user_gets_the_same_result_as_all_users_at_once(rec):
    everyone = rec.recommend_users(None, k=6)
    for u in (0, 5, 17, len(everyone) - 1):
        alone = rec.recommend_users([rec.user_ids[u]], k=6)
        assert np.array_equal(alone.items[0], everyone.items[u])
        assert np.array_equal(alone.scores[0], everyone.scores[u])  # bit for bit


def test_k_larger_than_the_unrated_items_returns_the_rest(rec):
    counts = np.diff(rec.train.csr.indptr)
    u = int(np.argmax(counts))
    top = rec.recommend_users([rec.user_ids[u]], k=rec.n_items)
    assert len(top.for_user(0)) == rec.n_items - counts[u]
    assert (top.items[0] == -1).sum() == counts[u]
    with pytest.raises(RecommendError, match="k="):
        rec.recommend_users([rec.user_ids[u]], k=rec.n_items + 1)


def test_unknown_users_are_named(rec):
    with pytest.raises(UnknownIdError, match="999999") as e:
        rec.recommend_users([int(rec.user_ids[0]), 999999], k=3)
    assert e.value.kind == "user" and e.value.ids == [999999]


def test_cli_mode_writes_a_tsv_and_stdout(trained, rec, tmp_path, capsys):
    users = rec.user_ids[[3, 1, 40]]
    cfg = rec_cfg(trained, tmp_path, users=",".join(map(str, users)))
    assert run_recommend(cfg) == 15
    rows = read_tsv(cfg.recommendations_path)
    expected = rec.recommend_users(users, k=5)
    assert [int(r[0]) for r in rows] == list(np.repeat(users, 5))
    assert [int(r[3]) for r in rows] == [1, 2, 3, 4, 5] * 3
    assert [int(r[1]) for r in rows] == list(expected.items.ravel())
    np.testing.assert_allclose([float(r[2]) for r in rows], expected.scores.ravel(), atol=1e-6)
    capsys.readouterr()
    run_recommend(dataclasses.replace(cfg, recommendations_path=""))
    assert capsys.readouterr().out == open(cfg.recommendations_path).read()


def test_main_dispatches_recommend(trained, tmp_path, capsys):
    from deepae_jax.cli import app, main as main_lib
    root, cfg = trained
    out = tmp_path / "all.tsv"
    assert main_lib.main(["--mode=recommend", f"--logdir={cfg.logdir}",
                          f"--path_to_train_data={cfg.path_to_train_data}", "--top_k=2",
                          f"--recommendations_path={out}"]) == 0
    assert app.main(["recommend", f"--logdir={cfg.logdir}",
                     f"--path_to_train_data={cfg.path_to_train_data}", "--users=999999"]) == 2
    assert len(read_tsv(out)) == 2 * SPEC.n_users
    assert "unknown user" in capsys.readouterr().err


def test_new_user_path_gives_a_training_user_the_same_recommendations(trained, rec, tmp_path,
                                                                       capsys):
    chosen = rec.user_ids[[2, 9, 33]]
    train = rec.train.to_triples()
    keep = np.isin(train.users, chosen)
    new_id, unknown_item = 10 ** 9, 777777
    new_items = rec.item_ids[[0, 3, 5]]
    # the three training users' ratings, one rating of an item the model does not know, and a
    # brand-new user
    extra = ratings.Triples(np.array([chosen[0], new_id, new_id, new_id], np.int64),
                            np.array([unknown_item, *new_items], np.int64),
                            np.array([4, 5, 1, 3], np.float32))
    both = ratings.Triples(*(np.concatenate([a[keep], b]) for a, b in
                             zip((train.users, train.items, train.ratings),
                                 (extra.users, extra.items, extra.ratings))))
    ratings.write_ratings_text(str(tmp_path / "new.tsv"), both)

    known = rec_cfg(trained, tmp_path, users=",".join(map(str, chosen)),
                    recommendations_path=str(tmp_path / "known.tsv"))
    run_recommend(known)
    # the new-user path does not need the training data at all
    fresh = rec_cfg(trained, tmp_path, path_to_train_data="",
                    ratings_file=str(tmp_path / "new.tsv"),
                    recommendations_path=str(tmp_path / "fresh.tsv"))
    run_recommend(fresh)
    err = capsys.readouterr().err
    assert "ignored 1 rating(s) of 1 item(s) unknown" in err and str(unknown_item) in err
    fresh_rows = read_tsv(fresh.recommendations_path)
    known_rows = read_tsv(known.recommendations_path)
    assert [r for r in fresh_rows if int(r[0]) in set(chosen)] == known_rows  # exactly
    new_rows = [r for r in fresh_rows if int(r[0]) == new_id]
    assert len(new_rows) == 5 and not {int(r[1]) for r in new_rows} & set(new_items)

    only = dataclasses.replace(fresh, users=str(new_id), recommendations_path=str(tmp_path / "o"))
    run_recommend(only)
    assert read_tsv(only.recommendations_path) == new_rows
    with pytest.raises(UnknownIdError, match="no ratings of them"):
        run_recommend(dataclasses.replace(only, users="424242"))


def test_duplicate_ratings_in_the_file_are_an_error(trained, tmp_path):
    (tmp_path / "dup.tsv").write_text("5\t1\t4\n5\t1\t3\n")
    with pytest.raises(ratings.RatingsFormatError, match="more than once"):
        run_recommend(rec_cfg(trained, tmp_path, ratings_file=str(tmp_path / "dup.tsv")))


def test_item_based_model_recommends_like_a_user_based_one(trained, tmp_path):
    from deepae_jax.training import trainer
    root, cfg = trained
    items_cfg = dataclasses.replace(cfg, major="items", logdir=str(tmp_path / "items"),
                                    batch_size=8)
    trainer.train_and_evaluate(items_cfg)
    rec = Recommender.from_logdir(items_cfg.logdir, batch_size=BATCH)
    assert rec.major == "items" and len(rec.user_ids) == SPEC.n_users
    assert rec.n_items == SPEC.n_items
    x = rec.train.csr.toarray()  # items x users
    full = np.asarray(model.apply(rec.params, x, rec.model_cfg)).T  # users x items
    users = rec.user_ids[[0, 7, 50, len(rec.user_ids) - 1]]
    top = rec.recommend_users(users, k=4)
    np.testing.assert_allclose(rec.user_scores(users), full[[0, 7, 50, -1]], atol=1e-5)
    for u, row in zip(range(len(users)), [0, 7, 50, len(rec.user_ids) - 1]):
        masked = np.where(x[:, row] != 0, -np.inf, full[row])
        best = np.argsort(-masked, kind="stable")[:4]
        assert [i for i, _ in top.for_user(u)] == list(rec.item_ids[best])
        np.testing.assert_allclose(top.scores[u], full[row, best], atol=1e-5)
    out = tmp_path / "rec.tsv"
    run_recommend(Config(mode="recommend", logdir=items_cfg.logdir, major="items", top_k=4,
                         users=",".join(map(str, users)), recommendations_path=str(out)))
    assert [int(r[1]) for r in read_tsv(out)] == list(top.items.ravel())
    with pytest.raises(RecommendError, match="item-based model"):
        rec.recommend_vector(np.zeros((1, rec.n_items), np.float32), 3)
    (tmp_path / "new.tsv").write_text("5\t1\t4\n")
    with pytest.raises(RecommendError, match="item-based model"):
        run_recommend(Config(mode="recommend", logdir=items_cfg.logdir, major="items",
                             ratings_file=str(tmp_path / "new.tsv")))


def test_vocab_of_another_major_is_refused(trained, tmp_path):
    from test_checkpoint import write_run
    root, cfg = trained
    write_run(tmp_path, spec=ckpt.ModelSpec(model.ModelConfig((SPEC.n_users, 4)), "items"))
    row_ids, col_ids, _ = ckpt.load_vocab(str(tmp_path))
    ckpt.save_vocab(str(tmp_path), row_ids, col_ids, "users", "run-a")
    with pytest.raises(ckpt.CheckpointError, match="rows are items.*another run"):
        Recommender.from_logdir(str(tmp_path), cfg.path_to_train_data)


def test_ratings_outside_the_training_scale_are_refused(rec):
    assert rec.rating_range == (1.0, 5.0)
    item = int(rec.item_ids[0])
    for bad in (3e38, -1e30, 5.5):
        with pytest.raises(RecommendError, match="outside the model's rating scale 1..5"):
            rec.vector([item], [bad])
    rec.vector([item], [4.5])


def test_ratings_file_outside_the_scale_is_refused(trained, rec, tmp_path):
    item = int(rec.item_ids[0])
    (tmp_path / "far.tsv").write_text(f"7\t{item}\t4\n8\t{item}\t3e38\n")
    with pytest.raises(RecommendError, match=rf"far\.tsv: rating 3e\+38 of user 8 for item "
                       rf"{item} is outside the model's rating scale 1\.\.5"):
        run_recommend(rec_cfg(trained, tmp_path, ratings_file=str(tmp_path / "far.tsv")))


def test_training_data_path_read_from_config_json(trained, tmp_path):
    root, cfg = trained
    import shutil
    logdir = tmp_path / "copy"
    shutil.copytree(cfg.logdir, logdir)
    if (logdir / "config.json").exists():
        (logdir / "config.json").unlink()
    assert load_run_config(str(logdir)) is None
    save_run_config(str(logdir), cfg)
    saved = load_run_config(str(logdir))
    assert saved["path_to_train_data"] == str(root / "train") and saved["hidden_layers"] == [12, 6]
    rec = Recommender.from_logdir(str(logdir))
    assert rec.train is not None and len(rec.user_ids) == SPEC.n_users


def test_config_validation_names_the_flag():
    with pytest.raises(ConfigError, match="--top_k"):
        Config(mode="recommend", top_k=0)
    with pytest.raises(ConfigError, match="--users"):
        Config(mode="recommend", users="3,,17")  # an empty id
    Config(mode="recommend", users="3, 17,-2")
    Config(mode="recommend", users="u_3,x")  # string ids are ids too


def test_parse_ids_types_ids_as_the_readers_do():
    from deepae_jax.cli.recommend_run import parse_ids
    assert parse_ids("") is None
    assert parse_ids("3, 17").dtype == np.int64 and parse_ids("3, 17").tolist() == [3, 17]
    assert parse_ids("u_3,17").tolist() == ["u_3", "17"]  # not all integers: strings
    big = "12345678901234567890"  # beyond int64: kept exactly as a string
    assert parse_ids(big).tolist() == [big]
    with pytest.raises(RecommendError, match="an id is empty"):
        parse_ids("3,,4")


def test_string_ids_recommend_and_unknown_ids():
    """Models trained on string ids (any ratings table) recommend with those ids."""
    import jax
    t = ratings.Triples(np.array(["u_1", "u_1", "u_2"]), np.array(["a", "b", "c"]),
                        np.array([4, 2, 5], np.float32))
    train = ratings.build_matrix(t)
    cfg = model.ModelConfig(layer_sizes=(3, 2), activation="selu")
    params = model.init(jax.random.PRNGKey(0), cfg.layer_sizes)
    rec = Recommender(params, cfg, train.col_ids, train, batch_size=4)
    top = rec.recommend_users(np.array(["u_1"]), k=2)
    assert top.users.tolist() == ["u_1"] and top.items[0].tolist() == ["c", ""]  # 1 unrated
    assert top.for_user(0)[0][0] == "c" and top.tsv().startswith("u_1\tc\t")
    with pytest.raises(UnknownIdError, match="unknown user id.*u_9") as e:
        rec.user_rows(["u_9"])
    assert e.value.ids == ["u_9"]
    x = rec.vector(["a"], [3.0])
    assert [i for i, _ in rec.recommend_vector(x, 2)] and rec.item_columns(["c"]).tolist() == [2]


def test_recommend_clips_like_predict_when_the_run_clipped(rec):
    """--clip_predictions: recommendations and user scores clipped to the training range, as
    the predictions are (the ranking is unchanged: clipping keeps the order)."""
    clipped = Recommender(rec.params, rec.model_cfg, rec.item_ids, rec.train, BATCH,
                          major=rec.major, rating_range=(2.0, 3.0), clip=True)
    plain, top = rec.recommend_users(None, k=5), clipped.recommend_users(None, k=5)
    assert np.array_equal(plain.items, top.items)
    finite = np.isfinite(plain.scores)
    np.testing.assert_allclose(top.scores[finite], np.clip(plain.scores[finite], 2.0, 3.0))
    assert (plain.scores[finite] > 3.0).any() or (plain.scores[finite] < 2.0).any()
    users = rec.user_ids[:3]
    np.testing.assert_allclose(clipped.user_scores(users),
                               np.clip(rec.user_scores(users), 2.0, 3.0))
