"""Splits of any data (deepae_jax.data.split_methods) and their CLI (deepae_jax.data.split)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from deepae_jax.data import split
from deepae_jax.data.ratings import RatingMatrix, read_ratings_text
from deepae_jax.data.split_methods import METHODS, split_indices
from deepae_jax.cli import data as cli_data

def split_main(argv):
    """``deepae split ARGV`` in process."""
    return cli_data.main(cli_data.SPLIT, argv)



def fake(n_users=40, seed=0):
    """Users with 1..30 ratings and coarse timestamps (many ties)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 30, n_users)
    users = rng.permutation(np.repeat(np.arange(100, 100 + n_users), counts))
    ts = rng.integers(0, 50, users.size)
    return users, ts


def check_partition(parts, n):
    allidx = np.concatenate(list(parts.values()))
    assert len(allidx) == n and len(np.unique(allidx)) == n  # disjoint and complete
    for idx in parts.values():
        assert np.all(np.diff(idx) > 0)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_split_disjoint_parts(method):
    users, ts = fake()
    a = split_indices(users, method, ts, test_share=0.2, valid_share=0.1, seed=3, folds=4)
    b = split_indices(users, method, ts, test_share=0.2, valid_share=0.1, seed=3, folds=4)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    folds = sorted({k.rpartition("/")[0] for k in a})
    for fold in folds:
        check_partition({k: v for k, v in a.items() if k.rpartition("/")[0] == fold}, len(users))
    if method not in ("temporal", "user_temporal", "leave_one_out"):  # random choices
        c = split_indices(users, method, ts, test_share=0.2, valid_share=0.1, seed=4, folds=4)
        assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_shares_are_respected():
    users, ts = fake()
    n = len(users)
    p = split_indices(users, "random", test_share=0.25, valid_share=0.2, seed=1)
    assert len(p["TEST"]) == int(np.floor(0.25 * n + 0.5))
    assert len(p["VALID"]) == int(np.floor(0.2 * (n - len(p["TEST"])) + 0.5))
    p = split_indices(users, "user_random", test_share=0.3, seed=1)
    for u in np.unique(users):
        n_u = int((users == u).sum())
        assert np.isin(p["TEST"], np.flatnonzero(users == u)).sum() == min(
            int(np.floor(0.3 * n_u + 0.5)), n_u - 1)
    p = split_indices(len(users), "kfold", folds=3, seed=1)
    sizes = [len(p[f"fold_{f}/TEST"]) for f in range(3)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    assert len(np.unique(np.concatenate([p[f"fold_{f}/TEST"] for f in range(3)]))) == n


def test_temporal_cuts():
    users, ts = fake()
    p = split_indices(users, "temporal", ts, test_share=0.2, valid_share=0.2)
    assert ts[p["TEST"]].min() > ts[p["VALID"]].max() >= ts[p["VALID"]].min() > ts[p["TRAIN"]].max()
    assert 0.1 * len(users) < len(p["TEST"]) <= 0.2 * len(users) + 1
    p = split_indices(users, "user_temporal", ts, test_share=0.3, valid_share=0.2)
    for u in np.unique(users):
        mine = lambda part: ts[np.intersect1d(p[part], np.flatnonzero(users == u))]  # noqa
        train, valid, test = mine("TRAIN"), mine("VALID"), mine("TEST")
        assert len(train) >= 1
        if len(test):
            assert test.min() > max(train.max(), valid.max(initial=-1))
        if len(valid):
            assert valid.min() > train.max()
    p = split_indices(users, "leave_one_out", ts, valid_share=0.1)
    for u in np.unique(users):
        rows = np.flatnonzero(users == u)
        test = np.intersect1d(p["TEST"], rows)
        assert len(test) == (1 if len(rows) >= 2 else 0)
        if len(test):
            assert ts[test[0]] == ts[rows].max()
            assert test[0] == rows[ts[rows] == ts[rows].max()][-1]  # ties: last in file order


def test_hand_worked_user_temporal_and_leave_one_out():
    #           positions:  0  1  2  3  4  5  6
    users = np.array([1, 1, 1, 1, 2, 2, 2])
    ts = np.array([5, 1, 9, 5, 3, 3, 3])
    # user 1 by time: 1 (pos 1), 5 (0), 5 (3), 9 (2); share 0.5 -> last 2 = pos 3, 2, but pos 3
    # ties with the last kept (pos 0, time 5): it stays in TRAIN. User 2: all tied: no TEST.
    p = split_indices(users, "user_temporal", ts, test_share=0.5)
    assert p["TEST"].tolist() == [2] and p["TRAIN"].tolist() == [0, 1, 3, 4, 5, 6]
    p = split_indices(users, "leave_one_out", ts)
    assert p["TEST"].tolist() == [2, 6]  # user 2's ties: the last in file order
    # by time 1, 3, 3, 3, 5, 5, 9: 2 of 7 held out puts the cut inside the tie at time 5,
    # so both 5s stay in TRAIN; 3 of 7 cuts after the 3s
    p = split_indices(users, "temporal", ts, test_share=2 / 7)
    assert p["TEST"].tolist() == [2]
    p = split_indices(users, "temporal", ts, test_share=3 / 7)
    assert p["TEST"].tolist() == [0, 2, 3]


def test_bad_arguments_name_the_flag():
    users, ts = fake()
    with pytest.raises(ValueError, match="--method=temporal needs timestamps"):
        split_indices(users, "temporal")
    with pytest.raises(ValueError, match="--test_share=1.5"):
        split_indices(users, "random", test_share=1.5)
    with pytest.raises(ValueError, match="--folds=1"):
        split_indices(users, "kfold", folds=1)
    with pytest.raises(ValueError, match="--method='nope'"):
        split_indices(users, "nope")
    p = split_indices(users, "leave_one_out")  # no timestamps: a random one per user
    assert len(p["TEST"]) == int((np.bincount(users - 100) >= 2).sum())


def write_tsv(path, users, ts, with_ts=True):
    rng = np.random.default_rng(0)
    items = rng.permutation(len(users)) % 37 + 1
    keys = set()
    lines = []
    for u, i, t in zip(users, items, ts):
        if (u, i) in keys:
            continue
        keys.add((u, i))
        lines.append(f"{u}\t{i}\t{rng.integers(1, 6)}" + (f"\t{t}\n" if with_ts else "\n"))
    path.write_text("".join(lines))
    return len(lines)


def test_cli_writes_parts_and_stats(tmp_path):
    users, ts = fake()
    n = write_tsv(tmp_path / "r.tsv", users, ts)
    out = tmp_path / "out"
    assert split_main([str(tmp_path / "r.tsv"), str(out), "--method=user_temporal",
                       "--test_share=0.2", "--valid_share=0.1", "--seed=2"]) == 0
    total = 0
    for part in ("TRAIN", "VALID", "TEST"):
        text = read_ratings_text(str(out / part / f"{part.lower()}.txt"))
        npz = RatingMatrix.load(str(out / f"{part}.npz")).to_triples()
        assert len(text) == len(npz) > 0
        total += len(text)
    assert total == n and "user_temporal" in (out / "stats.md").read_text()
    folds = tmp_path / "folds"
    assert split_main([str(tmp_path / "r.tsv"), str(folds), "--method=kfold",
                       "--folds=3", "--valid_share=0"]) == 0
    assert sorted(os.listdir(folds)) == ["fold_0", "fold_1", "fold_2", "stats.md"]
    assert sorted(os.listdir(folds / "fold_1")) == ["TEST", "TEST.npz", "TRAIN", "TRAIN.npz"]


def test_cli_errors(tmp_path, capsys):
    users, ts = fake()
    write_tsv(tmp_path / "three.tsv", users, ts, with_ts=False)
    assert split_main([str(tmp_path / "three.tsv"), str(tmp_path / "o"),
                       "--method=temporal"]) == 1
    assert "needs timestamps" in capsys.readouterr().err
    (tmp_path / "bad.tsv").write_text("1\t2\t4\t100\n1\t3\tx\t101\n")
    assert split_main([str(tmp_path / "bad.tsv"), str(tmp_path / "o")]) == 1
    assert "bad.tsv:2" in capsys.readouterr().err
    (tmp_path / "badts.tsv").write_text("1\t2\t4\t100\n1\t3\t5\tlater\n")
    assert split_main([str(tmp_path / "badts.tsv"), str(tmp_path / "o")]) == 1
    assert "timestamp" in capsys.readouterr().err
    assert split_main([str(tmp_path / "three.tsv"), str(tmp_path / "o"),
                       "--method=bogus"]) == 2
    assert split_main([str(tmp_path / "three.tsv")]) == 2
    assert not (tmp_path / "o").exists()


def test_movielens_100k_temporal(shared_data, tmp_path):
    data = split._read_input(str(shared_data / "movielens-100k" / "u.data"))
    assert len(data.triples) == 100_000 and data.timestamps is not None
    p = split_indices(data.triples.users, "temporal", data.timestamps, test_share=0.2)
    assert data.timestamps[p["TEST"]].min() > data.timestamps[p["TRAIN"]].max()
    assert abs(len(p["TEST"]) - 20_000) < 100


def test_cli_reads_any_table_with_header_and_string_ids(tmp_path):
    """A CSV with a header, CRLF, string ids and named columns splits by its timestamp column."""
    rng = np.random.default_rng(3)
    lines = ["uid,ts,iid,stars"]
    for n in range(300):
        lines.append(f"user_{n % 20},{1000 + n},item_{n // 20},{rng.integers(1, 11) / 2}")
    src = tmp_path / "ratings.tsv.csv"
    src.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    out = tmp_path / "out"
    code = split_main([str(src), str(out), "--method=temporal", "--test_share=0.2",
                       "--valid_share=0", "--columns=uid,iid,stars", "--timestamp_column=ts"])
    assert code == 0
    train = read_ratings_text(str(out / "TRAIN"))
    test = read_ratings_text(str(out / "TEST"))
    assert len(train) + len(test) == 300 and len(test) == 60
    assert train.users.dtype.kind == "U" and str(train.users[0]).startswith("user_")
    assert set(np.unique(test.ratings)) <= {x / 2 for x in range(1, 11)}


def test_timestamp_column_found_by_its_header_name(tmp_path):
    """A MovieLens ratings.csv as a file: header names, string ids, its timestamp column found."""
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"u{n % 10},{n // 10},{1 + n % 5},{5000 - n}" for n in range(200)]
    src = tmp_path / "ratings.csv"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert split_main([str(src), str(out), "--method=temporal", "--test_share=0.1",
                       "--valid_share=0"]) == 0
    test = read_ratings_text(str(out / "TEST"))
    assert len(test) == 20
    assert set(test.items.tolist()) == {0, 1}  # the latest ratings: those of the first lines
