"""api.py: fit from DataFrames or paths, evaluate, predict, recommend, save and load."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from deepae_jax import api
from deepae_jax.config import ConfigError
from deepae_jax.data import ratings
from deepae_jax.data.datasets import synthetic

SPEC = synthetic.SyntheticSpec(n_users=80, n_items=30, mean_ratings_per_user=10, seed=4)


def frames():
    train, held = synthetic.generate(SPEC)
    make = lambda t: pd.DataFrame({"userId": [f"u{u}" for u in t.users],  # noqa: E731
                                   "movieId": t.items, "rating": t.ratings})
    held = make(held)
    return make(train), held.iloc[::2], held.iloc[1::2]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    train, valid, test = frames()
    logdir = str(tmp_path_factory.mktemp("api") / "run")
    model = api.fit(train, valid, test, logdir=logdir, hidden_layers=(8,), optimizer="adam",
                    lr=0.01, batch_size=8, num_epochs=3, progress=False, baseline="bias",
                    unknown="baseline", clip_predictions=True, non_linearity_type="sigmoid",
                    skip_last_layer_nl=True)
    return model, train, valid, test


def test_fit_from_dataframes_keeps_string_ids_and_scores_test(fitted):
    model, train, _, test = fitted
    rec = model.recommender()
    assert rec.user_ids.dtype.kind == "U" and set(rec.user_ids) == set(train.userId)
    summary = model.logdir + "/summary.json"
    import json
    assert json.load(open(summary))["test_count"] == len(test)


def test_evaluate_returns_every_metric(fitted):
    model, _, _, test = fitted
    out = model.evaluate(test, metrics="rmse,mae,ndcg@5,hit@5")
    assert out["eval_ratings"] == len(test) and out["eval_ratings_dropped"] == 0
    assert set(out) >= {"rmse", "mae", "ndcg@5", "hit@5", "ranking_users"}
    pred = model.predict(test.userId.to_numpy(), test.movieId.to_numpy())
    rmse = float(np.sqrt(np.mean((pred - test.rating.to_numpy()) ** 2)))
    assert out["rmse"] == pytest.approx(rmse, abs=1e-5)  # evaluate and predict agree


def test_predict_known_unknown_and_repeated_pairs(fitted):
    model, train, _, _ = fitted
    rec = model.recommender()
    user, item = train.userId.iloc[0], int(train.movieId.iloc[0])
    pred = model.predict([user, "nobody", user], [item, item, item])
    scores = rec.user_scores([user])[0, rec.item_columns([item])[0]]
    assert pred[0] == pytest.approx(np.clip(scores, 1, 5), abs=1e-5) and pred[2] == pred[0]
    b = rec.base
    fallback = b.mu + b.col_bias[rec.item_columns([item])[0]]  # a new user: no user bias
    assert pred[1] == pytest.approx(np.clip(fallback, 1, 5))
    assert np.all((pred >= 1) & (pred <= 5))


def test_recommend_and_save_load_round_trip(fitted, tmp_path):
    model, train, _, _ = fitted
    users = list(train.userId.unique()[:3])
    frame = model.recommend(users, k=4).to_frame()
    assert list(frame.columns) == ["user", "item", "score", "rank"] and len(frame) == 12
    rated = set(zip(train.userId, train.movieId))
    assert not any((u, i) in rated for u, i in zip(frame.user, frame.item))
    copy = model.save(str(tmp_path / "saved"))
    again = api.load(copy.logdir)
    pd.testing.assert_frame_equal(again.recommend(users, k=4).to_frame(), frame)
    q = (train.userId.to_numpy()[:20], train.movieId.to_numpy()[:20])
    np.testing.assert_allclose(again.predict(*q), model.predict(*q))
    with pytest.raises(FileExistsError):
        model.save(copy.logdir)


def test_fit_from_paths_and_a_flagfile(tmp_path):
    synthetic.ensure_dataset(str(tmp_path / "train"), str(tmp_path / "valid"), SPEC)
    flags = tmp_path / "recipe.flags"
    flags.write_text("--hidden_layers=6\n--num_epochs=1\n--batch_size=16\n--noprogress\n")
    model = api.fit(str(tmp_path / "train"), str(tmp_path / "valid"), flagfile=str(flags),
                    logdir=str(tmp_path / "run"), lr=0.001)
    assert model.config.hidden_layers == (6,) and model.config.lr == 0.001
    assert model.evaluate(str(tmp_path / "valid"), metrics="rmse")["eval_ratings"] > 0
    flags.write_text("--hidden_layers=6,x\n")
    with pytest.raises(ConfigError, match="hidden_layers"):
        api.fit(str(tmp_path / "train"), flagfile=str(flags), logdir=str(tmp_path / "run2"))


def test_bad_data_is_named():
    with pytest.raises(ratings.RatingsFormatError, match="expected user, item and rating"):
        api.as_path(pd.DataFrame({"a": [1]}), "/tmp", "train")
    with pytest.raises(TypeError, match="train: expected a path"):
        api.as_path(42, "/tmp", "train")


def test_fit_refused_on_another_run_writes_nothing(fitted, tmp_path):
    """Class 1: the ownership check comes before the DataFrames are written into LOGDIR/data."""
    import hashlib
    import os
    model, train, valid, _ = fitted
    data = os.path.join(model.logdir, "data")
    digest = {f: hashlib.sha256(open(os.path.join(data, f), "rb").read()).hexdigest()
              for f in os.listdir(data)}
    before = model.predict(train.userId.to_numpy()[:5], train.movieId.to_numpy()[:5])
    from deepae_jax.run.logdir import LogdirError
    with pytest.raises(LogdirError, match="holds the files of another run"):
        api.fit(train.iloc[:50], valid.iloc[:10], logdir=model.logdir, hidden_layers=(4,),
                num_epochs=1, progress=False)
    assert {f: hashlib.sha256(open(os.path.join(data, f), "rb").read()).hexdigest()
            for f in os.listdir(data)} == digest
    after = api.load(model.logdir).predict(train.userId.to_numpy()[:5],
                                           train.movieId.to_numpy()[:5])
    np.testing.assert_array_equal(after, before)
    fresh = tmp_path / "bad"
    with pytest.raises(ConfigError, match="lr"):  # a bad setting: nothing written either
        api.fit(train, logdir=str(fresh), lr=-1.0)
    assert not fresh.exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"num_epoch": 1}, "num_epoch=1: unknown setting; did you mean 'num_epochs'"),
    ({"hidden_layers": 32}, "hidden_layers=32: expected a sequence of positive integers"),
    ({"lr": "0.001"}, "lr='0.001': expected a number"),
    ({"num_epochs": 1.5}, "num_epochs=1.5: expected an integer"),
    ({"clip_predictions": "no"}, "clip_predictions='no': expected true or false"),
    ({"progress": 1}, "progress=1: expected true or false"),
])
def test_fit_checks_keywords_and_types(kwargs, match, tmp_path):
    """Class 5: the API refuses what the command line would, naming argument and value."""
    train, _, _ = frames()
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        api.fit(train, logdir=str(tmp_path / "run"), **kwargs)
    assert not (tmp_path / "run").exists()


def test_predict_and_recommend_check_their_arguments(fitted):
    model, train, _, _ = fitted
    item = int(train.movieId.iloc[0])
    for users in ([1.0], [float("nan")], [True], [None]):
        with pytest.raises(ConfigError, match="users: ids must be integers or strings"):
            model.predict(users, [item])
    with pytest.raises(ConfigError, match="items: ids must be"):
        model.predict([train.userId.iloc[0]], [float(item)])
    for k in (2.5, 0, True, "3"):
        with pytest.raises(ConfigError, match="k=.*expected a positive integer"):
            model.recommend([train.userId.iloc[0]], k=k)
    one = model.recommend(train.userId.iloc[0], k=2).to_frame()  # one id: a list of one
    assert len(one) == 2


def test_resume_with_other_dataframes_is_refused_before_writing(fitted):
    """Class 1: resume=True must not replace the run's data/train.npz with other ratings."""
    import hashlib
    import os
    model, train, valid, _ = fitted
    path = os.path.join(model.logdir, "data", "train.npz")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with pytest.raises(ConfigError, match="train: other ratings than the run's"):
        api.fit(train.iloc[:60], valid, logdir=model.logdir, resume=True, num_epochs=4,
                progress=False)
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest


def test_the_refit_model_of_a_run(fitted, tmp_path):
    model, train, valid, test = fitted
    assert model.refit is None  # trained without --refit
    again = api.fit(train, valid, test, logdir=str(tmp_path / "run"), hidden_layers=(8,),
                    optimizer="adam", lr=0.01, batch_size=8, num_epochs=2, progress=False,
                    baseline="bias", unknown="baseline", final_predictor="blend", refit=True)
    refit = again.refit
    assert refit is not None and refit.logdir.endswith("refit")
    summary = json.loads(open(os.path.join(again.logdir, "summary.json")).read())
    scores = refit.evaluate(test, metrics="rmse")
    assert scores["rmse"] == pytest.approx(summary["refit_test_rmse"], rel=1e-6)
    assert np.isfinite(refit.predict(["u1"], [1])).all()
