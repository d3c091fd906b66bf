"""MovieLens readers and splits: small files built here, and the real ML-100K when present."""
from __future__ import annotations

import os

import numpy as np
import pytest

from deepae_jax.data.datasets import movielens, movielens_convert
from deepae_jax.data.ratings import RatingMatrix, RatingsFormatError, read_ratings_text
from deepae_jax.cli import data as cli_data

def convert_main(argv):
    """``deepae movielens`` in process (the command line of :mod:`movielens_convert`)."""
    return cli_data.main(cli_data.MOVIELENS, argv)


# (user, item, rating, timestamp)
ROWS = [
    (1, 10, 4.0, 100), (1, 11, 3.0, 50), (1, 12, 5.0, 300), (1, 13, 2.0, 200),  # 4: 2 train
    (2, 10, 4.5, 10), (2, 14, 0.5, 20), (2, 11, 1.0, 30),  # 3 ratings: floor(2.1) = 2 train
    (3, 12, 3.5, 5),  # a single rating: user dropped
    (4, 10, 5.0, 7), (4, 15, 2.5, 9),  # 2 ratings: 1 train; item 15 not in TRAIN: removed
    (5, 14, 3.0, 3), (5, 11, 2.0, 2), (5, 10, 1.0, 1),
]


def write(path, rows, fmt: str, crlf: bool = False) -> str:
    nl = "\r\n" if crlf else "\n"
    d = {"tab": "\t", "dat": "::", "csv": ","}[fmt]
    lines = ["userId,movieId,rating,timestamp"] if fmt == "csv" else []
    lines += [d.join([str(u), str(i), f"{r:g}" if fmt != "tab" else str(int(r)), str(t)])
              for u, i, r, t in rows]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as fh:
        fh.write(nl.join(lines) + nl)
    return str(path)


@pytest.mark.parametrize("fmt, name, crlf", [("dat", "ratings.dat", False),
                                              ("csv", "ratings.csv", False),
                                              ("csv", "ratings.csv", True)])
def test_read_formats_with_half_stars(tmp_path, fmt, name, crlf):
    data = movielens.read_movielens(write(tmp_path / "ml" / name, ROWS, fmt, crlf))
    got = list(zip(data.triples.users.tolist(), data.triples.items.tolist(),
                   data.triples.ratings.tolist(), data.timestamps.tolist()))
    assert got == [tuple(r) for r in ROWS]
    assert movielens.find_ratings_file(str(tmp_path)) == str(tmp_path / "ml" / name)


def test_read_u_data(tmp_path):
    rows = [(u, i, float(max(1, int(r))), t) for u, i, r, t in ROWS]
    data = movielens.read_movielens(write(tmp_path / "u.data", rows, "tab"))
    assert data.triples.ratings.tolist() == [r for _, _, r, _ in rows]


def test_time_split_hand_checked(tmp_path):
    data = movielens.read_movielens(write(tmp_path / "ratings.csv", ROWS, "csv"))
    train, valid, test = movielens.time_split(data, seed=0)
    pairs = lambda t: sorted(zip(t.users.tolist(), t.items.tolist()))  # noqa: E731
    assert pairs(train) == [(1, 10), (1, 11), (2, 10), (2, 14), (4, 10), (5, 10), (5, 11)]
    held = pairs(valid) + pairs(test)
    assert sorted(held) == [(2, 11), (5, 14)]  # user 1's items 12, 13 are not in TRAIN
    for u in (1, 2):  # one coin per user: a user's held-out block goes to one side
        assert not ({x for x in pairs(valid) if x[0] == u} and {x for x in pairs(test) if x[0] == u})
    again = movielens.time_split(data, seed=0)
    assert pairs(again[1]) == pairs(valid)


def test_random_split(tmp_path):
    rng = np.random.default_rng(0)
    rows = list({(int(u), int(i)): (int(u), int(i), float(r) / 2, 0) for u, i, r in zip(
        rng.integers(1, 50, 3000), rng.integers(1, 200, 3000), rng.integers(1, 11, 3000))}.values())
    data = movielens.read_movielens(write(tmp_path / "ratings.dat", rows, "dat"))
    train, held = movielens.random_split(data, seed=5)
    assert len(held) == round(0.1 * len(rows)) and len(train) + len(held) == len(rows)
    train2, held2 = movielens.random_split(data, seed=5)
    assert np.array_equal(held.users, held2.users) and np.array_equal(held.items, held2.items)
    assert not np.array_equal(movielens.random_split(data, seed=6)[1].users, held.users)


@pytest.mark.parametrize("split", ["time70", "random90"])
def test_convert_half_stars_end_to_end(tmp_path, split, capsys):
    src = write(tmp_path / "ml" / "ratings.csv", ROWS, "csv", crlf=True)
    out = tmp_path / "out"
    assert convert_main([src, str(out), "--split", split, "--seed", "2"]) == 0
    assert "| ML_TRAIN |" in capsys.readouterr().out
    stars = {(u, i): r for u, i, r, _ in ROWS}
    for part in ("TRAIN", "VALID", "TEST"):
        if not (out / f"ML_{part}.npz").exists():
            continue
        text = read_ratings_text(str(out / f"ML_{part}"))
        m = RatingMatrix.load(str(out / f"ML_{part}.npz")).to_triples()
        for t in (text, m):
            assert all(stars[(u, i)] == r for u, i, r in zip(t.users.tolist(), t.items.tolist(),
                                                                  t.ratings.tolist()))
    assert "4.5" in (out / "ML_TRAIN" / "ml.train.txt").read_text()


@pytest.mark.parametrize("line, message", [
    ("1,10,5.5,100", r"ratings.csv:3: rating 5.5 is off the MovieLens scale"),
    ("1,10,0.3,100", r"ratings.csv:3: rating 0.3 is off"),
    ("1,10,4", r"ratings.csv:3: expected 4 fields"),
    ("1,x,4,100", r"ratings.csv:3: user, item and timestamp must be integers"),
    ("1,10,abc,100", r"ratings.csv:3: rating 'abc' is not a number"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n2,11,4.0,1\n" + line + "\n3,12,1,4\n")
    with pytest.raises(RatingsFormatError, match=message):
        movielens.read_movielens(str(path))


def test_non_utf8_and_empty(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_bytes(b"1::2::3::4\n1::\xff3::3::4\n")
    with pytest.raises(RatingsFormatError, match=r"ratings.dat:2: not valid UTF-8"):
        movielens.read_movielens(str(path))
    path.write_bytes(b"")
    with pytest.raises(RatingsFormatError, match="no ratings"):
        movielens.read_movielens(str(path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RatingsFormatError, match="no ratings.csv"):
        movielens.read_movielens(str(tmp_path / "empty"))


def test_duplicates_policy(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::2::3::4\n1::5::3::4\n1::2::5::9\n")
    data = movielens.read_movielens(str(path))
    with pytest.raises(RatingsFormatError, match=r"ratings.dat:3: user 1 rated item 2 again "
                                                 r"\(first at line 1\)"):
        movielens.check_duplicates(data)
    kept = movielens.check_duplicates(data, "last")
    assert len(kept) == 2 and kept.triples.ratings.tolist() == [3.0, 5.0]


def test_failed_conversion_leaves_nothing(tmp_path):
    path = tmp_path / "src" / "ratings.dat"
    os.makedirs(path.parent)
    path.write_text("1::2::3::4\n1::2::5::9\n")
    work = tmp_path / "work"
    work.mkdir()
    assert convert_main([str(path), str(work / "out")]) == 1
    assert os.listdir(work) == []


# SOURCES.md: rows of every predefined ML-100K file, (users, items) of the .base files.
ML100K = {"u1": (80000, 20000, 943, 1650), "u2": (80000, 20000, 943, 1648),
          "u3": (80000, 20000, 943, 1650), "u4": (80000, 20000, 943, 1660),
          "u5": (80000, 20000, 943, 1650), "ua": (90570, 9430, 943, 1680),
          "ub": (90570, 9430, 943, 1675)}


def test_real_movielens_100k(shared_data):
    folder = str(shared_data / "movielens-100k")
    data = movielens.read_movielens(folder)
    t = data.triples
    assert (len(t), np.unique(t.users).size, np.unique(t.items).size) == (100000, 943, 1682)
    assert np.bincount(t.ratings.astype(int))[1:].tolist() == [6110, 11370, 27145, 34174, 21201]
    for name, (n_base, n_test, users, items) in ML100K.items():
        base, test = movielens.predefined_split(folder, name)
        assert (len(base), len(test)) == (n_base, n_test), name
        assert (np.unique(base.users).size, np.unique(base.items).size) == (users, items), name
    train, valid, test = movielens.time_split(data, seed=0)
    assert len(train) == sum(int(np.floor(0.7 * c)) for c in np.bincount(t.users) if c >= 2)
    assert set(np.unique(valid.items)) <= set(np.unique(train.items))


def test_real_movielens_100k_convert_u1(shared_data, tmp_path):
    out = tmp_path / "u1"
    movielens_convert.convert(str(shared_data / "movielens-100k"), str(out), "u1")
    assert RatingMatrix.load(str(out / "ML_TRAIN.npz")).nnz == 72000
    assert len(read_ratings_text(str(out / "ML_VALID"))) == 8000
    assert len(read_ratings_text(str(out / "ML_TEST"))) == 20000
    train = set(zip(*(a.tolist() for a in (read_ratings_text(str(out / "ML_TRAIN")).users,
                                            read_ratings_text(str(out / "ML_TRAIN")).items))))
    valid = read_ratings_text(str(out / "ML_VALID"))
    assert not train & set(zip(valid.users.tolist(), valid.items.tolist()))
    whole = tmp_path / "u1_whole"
    movielens_convert.convert(str(shared_data / "movielens-100k"), str(whole), "u1",
                              valid_share=0)
    assert RatingMatrix.load(str(whole / "ML_TRAIN.npz")).nnz == 80000


def test_predefined_split_names_the_folder_given(tmp_path):
    """A folder without u1.base/u1.test: the error names that folder, not '/u1.base'."""
    given = tmp_path / "ml"
    given.mkdir()
    (given / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(RatingsFormatError) as e:
        movielens.predefined_split(str(given), "u1")
    assert str(e.value).startswith(f"{given}: no u1.base and u1.test in '{given}'")
    assert "'/u1.base'" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        movielens.predefined_split(str(tmp_path / "nowhere"), "u1")


def test_predefined_split_found_in_a_subfolder(tmp_path):
    inner = tmp_path / "download" / "ml-100k"
    inner.mkdir(parents=True)
    (inner / "u1.base").write_text("1\t2\t3\t4\n1\t3\t4\t5\n")
    (inner / "u1.test").write_text("1\t4\t5\t6\n")
    base, test = movielens.predefined_split(str(tmp_path / "download"), "u1")
    assert len(base) == 2 and test.items.tolist() == [4]


def test_convert_any_ratings_table_with_string_ids(tmp_path):
    src = tmp_path / "mine.txt"
    src.write_text("who;what;stars;when\n" + "".join(
        f"u{u};item {i};{(u + i) % 10 + 1};{1000 + 7 * u + i}\n"
        for u in range(12) for i in range(6)))
    out = tmp_path / "out"
    args = [str(src), str(out), "--split", "time70", "--columns", "who,what,stars"]
    assert convert_main(args) == 1  # time70 without --timestamp_column
    assert convert_main(args + ["--timestamp_column", "when"]) == 0
    train = RatingMatrix.load(str(out / "ML_TRAIN.npz"))
    assert train.row_ids.dtype.kind == "U" and train.row_ids[0] == "u0"
    assert set(train.col_ids.tolist()) == {f"item {i}" for i in range(4)}  # the earliest 4
    assert train.nnz == 12 * 4  # floor(70% of 6) per user, by time


def test_convert_table_errors_name_the_line(tmp_path, capsys):
    src = tmp_path / "mine.csv"
    src.write_text("u,i,r,t\n1,2,3,4\n1,2,5,6\n")
    args = [str(src), str(tmp_path / "out"), "--split", "random90", "--header", "true"]
    assert convert_main(args) == 1
    assert f"{src}:3: user 1 rated item 2 again (first at line 2)" in capsys.readouterr().err
