"""Netflix Prize raw-format reader and time splits, on small raw fixtures built here."""
from __future__ import annotations

import datetime
import os
import random

import numpy as np
import pytest

from deepae_jax.data.datasets import netflix, netflix_convert
from deepae_jax.data.ratings import RatingMatrix, RatingsFormatError, read_ratings_text
from deepae_jax.cli import data as cli_data

def convert_main(argv):
    """``deepae netflix`` in process (the command line of :mod:`netflix_convert`)."""
    return cli_data.main(cli_data.NETFLIX, argv)


# (user, movie, stars, date). Comments say which window edge a rating sits on.
RAW = [
    (10, 1, 5, "1999-12-01"),  # NF train first day
    (10, 2, 4, "2005-12-01"),  # NF/N3M/N6M test first day
    (10, 3, 3, "2005-12-31"),  # test last day
    (20, 1, 2, "2005-11-30"),  # NF/N3M/N6M train last day
    (20, 4, 1, "2005-12-15"),
    (20, 7, 5, "2005-12-15"),  # movie 7 is in no train window: removed from VALID/TEST
    (30, 2, 4, "1999-11-30"),  # day before the NF train window: nowhere
    (30, 3, 4, "2006-01-01"),  # day after the test window: nowhere
    (30, 1, 3, "2005-12-10"),  # user 30 has no train rating: dropped
    (40, 2, 5, "2005-09-01"),  # N3M train first day
    (40, 3, 4, "2005-06-01"),  # N6M train first day, N1Y test first day
    (40, 1, 3, "2004-06-01"),  # N1Y train first day
    (40, 4, 2, "2005-05-31"),  # N1Y train last day
    (40, 5, 1, "2005-06-30"),  # N1Y test last day
    (40, 6, 2, "2005-07-01"),  # day after the N1Y test window
    (40, 8, 3, "2005-12-05"),
    (50, 5, 4, "2004-12-01"),
    (50, 3, 4, "2005-01-15"),
    (60, 8, 5, "2005-10-10"),
    (60, 3, 2, "2004-05-31"),  # day before the N1Y train window
]

# Hand-checked (user, movie) sets: TRAIN, and VALID ∪ TEST.
EXPECTED = {
    "NF": ({(10, 1), (20, 1), (40, 2), (40, 3), (40, 1), (40, 4), (40, 5), (40, 6), (50, 5),
            (50, 3), (60, 8), (60, 3)}, {(10, 2), (10, 3), (20, 4), (40, 8)}),
    "N3M": ({(20, 1), (40, 2), (60, 8)}, {(40, 8)}),
    "N6M": ({(20, 1), (40, 2), (40, 3), (40, 5), (40, 6), (60, 8)}, {(40, 8)}),
    "N1Y": ({(40, 1), (40, 4), (50, 5), (50, 3)}, {(40, 3), (40, 5)}),
}


def write_raw(folder, raw, crlf: bool = False) -> str:
    """Writes ``raw`` (user, movie, stars, date) as Netflix ``mv_*.txt`` files."""
    os.makedirs(folder, exist_ok=True)
    nl = "\r\n" if crlf else "\n"
    by_movie: dict[int, list] = {}
    for u, m, r, d in raw:
        by_movie.setdefault(m, []).append(f"{u},{r},{d}")
    for m, lines in by_movie.items():
        with open(os.path.join(folder, f"mv_{m:07d}.txt"), "w", newline="") as fh:
            fh.write(f"{m}:{nl}" + nl.join(lines) + nl)
    return str(folder)


def pairs(data, mask):
    t = netflix.part_triples(data, mask)
    return set(zip(t.users.tolist(), t.items.tolist()))


@pytest.fixture
def raw_dir(tmp_path):
    return write_raw(tmp_path / "training_set", RAW)


def test_days_from_civil_matches_datetime():
    days = [datetime.date(1999, 11, 11) + datetime.timedelta(k) for k in range(0, 3000, 7)]
    days += [datetime.date(2000, 2, 29), datetime.date(1970, 1, 1), datetime.date(1900, 3, 1)]
    got = netflix.days_from_civil([d.year for d in days], [d.month for d in days],
                                  [d.day for d in days])
    assert got.tolist() == [(d - datetime.date(1970, 1, 1)).days for d in days]


def test_read_netflix_values(raw_dir):
    data = netflix.read_netflix(raw_dir)
    assert len(data) == len(RAW) and data.n_files == 8
    got = {(int(data.user_ids[u]), int(data.item_ids[i]), int(r), netflix.iso_date(d))
           for u, i, r, d in zip(data.user, data.item, data.rating, data.day)}
    assert got == set(RAW)
    key = data.user.astype(np.int64) * 100 + data.item
    assert np.all(np.diff(key) > 0)  # sorted by (user, movie)


@pytest.mark.parametrize("name", list(netflix.SPLITS))
def test_time_split_hand_checked(raw_dir, name):
    data = netflix.read_netflix(raw_dir)
    s = netflix.time_split(data, name, netflix.SPLITS[name], seed=3)
    train, held = EXPECTED[name]
    assert pairs(data, s.train) == train
    assert pairs(data, s.valid | s.test) == held
    assert not np.any(s.valid & s.test)


def test_same_seed_same_split(tmp_path):
    rng = random.Random(0)
    raw, seen = [], set()
    while len(raw) < 3000:
        u, m = rng.randrange(1, 300), rng.randrange(1, 60)
        if (u, m) not in seen:
            seen.add((u, m))
            day = datetime.date(2005, 5, 1) + datetime.timedelta(rng.randrange(245))
            raw.append((u, m, rng.randrange(1, 6), day.isoformat()))
    data = netflix.read_netflix(write_raw(tmp_path / "ts", raw))
    a = netflix.time_split(data, "NF", netflix.SPLITS["NF"], seed=7)
    b = netflix.time_split(data, "NF", netflix.SPLITS["NF"], seed=7)
    c = netflix.time_split(data, "NF", netflix.SPLITS["NF"], seed=8)
    assert np.array_equal(a.valid, b.valid) and np.array_equal(a.test, b.test)
    assert not np.array_equal(a.valid, c.valid)
    assert np.array_equal(a.valid | a.test, c.valid | c.test)
    assert 0.4 < a.valid.sum() / (a.valid | a.test).sum() < 0.6  # a fair coin


def test_convert_writes_text_npz_and_stats(raw_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert_main([raw_dir, str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| NF | 1999-12-01 .. 2005-11-30 |" in printed
    assert "| N1Y | 2004-06-01 .. 2005-05-31 | 2005-06-01 .. 2005-06-30 | 2 | 4 | 4 |" in printed
    assert (out / "stats.md").read_text().count("\n| N") == 4
    stars = {(u, m): r for u, m, r, _ in RAW}
    for name, (train, held) in EXPECTED.items():
        t = read_ratings_text(str(out / f"{name}_TRAIN"))
        assert set(zip(t.users.tolist(), t.items.tolist())) == train
        assert all(stars[(u, i)] == r for u, i, r in zip(t.users, t.items, t.ratings))
        assert (out / f"{name}_TRAIN" / f"{name.lower()}.train.txt").is_file()
        m = RatingMatrix.load(str(out / f"{name}_TRAIN.npz")).to_triples()
        assert sorted(zip(m.users.tolist(), m.items.tolist(), m.ratings.tolist())) == sorted(
            zip(t.users.tolist(), t.items.tolist(), t.ratings.tolist()))
        got_held = set()
        for part in ("VALID", "TEST"):
            p = read_ratings_text(str(out / f"{name}_{part}"))
            got_held |= set(zip(p.users.tolist(), p.items.tolist()))
        assert got_held == held
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_crlf_and_blank_lines_are_accepted(tmp_path):
    folder = write_raw(tmp_path / "ts", RAW, crlf=True)
    with open(os.path.join(folder, "mv_0000001.txt"), "ab") as fh:
        fh.write(b"\r\n\r\n")
    data = netflix.read_netflix(folder)
    assert len(data) == len(RAW) and data.skipped_blank == 2


def bad_case(tmp_path, movie_file_text: bytes) -> str:
    folder = write_raw(tmp_path / "ts", RAW)
    with open(os.path.join(folder, "mv_0000009.txt"), "wb") as fh:
        fh.write(movie_file_text)
    return folder


@pytest.mark.parametrize("text, message", [
    (b"123,4,2005-01-01\n", r"mv_0000009.txt:1: missing 'MovieID:' line"),
    (b"9:\n123,4,2005-01-01\n124,4,2005-13-01\n", r"mv_0000009.txt:3: malformed date '2005-13-01'"),
    (b"9:\n123,4,2005-02-29\n", r"mv_0000009.txt:2: malformed date"),
    (b"9:\n123,4,2005-01-01\n\n124,6,2005-01-01\n", r"mv_0000009.txt:4: rating 6 outside"),
    (b"9:\n123,0,2005-01-01\n", r"mv_0000009.txt:2: rating 0 outside"),
    (b"9:\n123,4,2005-01-01\n12\xff3,4,2005-01-01\n", r"mv_0000009.txt:3: not valid UTF-8"),
    (b"9:\n123;4;2005-01-01\n", r"mv_0000009.txt:2: expected 'CustomerID,Rating,YYYY-MM-DD'"),
    (b"", r"mv_0000009.txt:1: missing 'MovieID:' line \(empty file\)"),
])
def test_bad_input_names_file_and_line(tmp_path, text, message):
    with pytest.raises(RatingsFormatError, match=message):
        netflix.read_netflix(bad_case(tmp_path, text))


def test_duplicate_pair_policy(tmp_path):
    folder = bad_case(tmp_path, b"9:\n7,2,2005-01-01\n8,3,2005-01-01\n7,5,2005-02-01\n")
    with pytest.raises(RatingsFormatError,
                       match=r"mv_0000009.txt:4: user 7 rated movie 9 again \(first at .*"
                             r"mv_0000009.txt:2\)"):
        netflix.read_netflix(folder)
    data = netflix.read_netflix(folder, duplicates="last")
    assert data.dropped_duplicates == 1 and len(data) == len(RAW) + 2
    (k,) = np.flatnonzero((data.user_ids[data.user] == 7) & (data.item_ids[data.item] == 9))
    assert data.rating[k] == 5 and netflix.iso_date(data.day[k]) == "2005-02-01"


def test_empty_directory(tmp_path):
    (tmp_path / "ts").mkdir()
    with pytest.raises(RatingsFormatError, match="no mv_.*txt files"):
        netflix.read_netflix(str(tmp_path / "ts"))


def test_failed_conversion_leaves_nothing(tmp_path, capsys):
    folder = bad_case(tmp_path, b"9:\n123,4,2005-01-01\n124,4,2005-1-01\n")
    work = tmp_path / "work"
    work.mkdir()
    assert convert_main([folder, str(work / "out")]) == 1
    assert "mv_0000009.txt:3" in capsys.readouterr().err
    assert os.listdir(work) == []


def test_failure_while_writing_leaves_nothing(raw_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(*args, **kwargs)
    original = netflix_convert.write_split
    monkeypatch.setattr(netflix_convert, "write_split", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        netflix_convert.convert(raw_dir, str(work / "out"), log=lambda *_: None)
    assert os.listdir(work) == []


def test_matches_a_plain_python_reference(tmp_path):
    """Random raw data: the vectorised reader and splits equal a line-by-line implementation."""
    rng = random.Random(1)
    raw, seen = [], set()
    while len(raw) < 4000:
        u, m = rng.randrange(1, 2_649_430), rng.randrange(1, 40)
        u = u if rng.random() < 0.5 else rng.randrange(1, 200)  # repeat users often
        if (u, m) not in seen:
            seen.add((u, m))
            day = datetime.date(2004, 5, 1) + datetime.timedelta(rng.randrange(640))
            raw.append((u, m, rng.randrange(1, 6), day.isoformat()))
    data = netflix.read_netflix(write_raw(tmp_path / "ts", raw))
    for index, (name, (a, b, c, d)) in enumerate(netflix.SPLITS.items()):
        train = {(u, m) for u, m, _, day in raw if a <= day <= b}
        users, items = {u for u, _ in train}, {m for _, m in train}
        held = {(u, m) for u, m, _, day in raw if c <= day <= d and u in users and m in items}
        s = netflix.time_split(data, name, (a, b, c, d), seed=0, split_index=index)
        assert pairs(data, s.train) == train and pairs(data, s.valid | s.test) == held
        mat = netflix.split_matrix(data, s.train)
        assert mat.nnz == len(train) and mat.shape == (len(users), len(items))


def test_real_netflix_samples_both_column_orders(shared_data):
    """DeepRecommender's samples: testData_iRec is item,user,rating; testData_uRec user,item."""
    i_rec = read_ratings_text(str(shared_data / "netflix-sample" / "testData_iRec"),
                              column_order="item,user,rating")
    u_rec = read_ratings_text(str(shared_data / "netflix-sample" / "testData_uRec"))
    for t, n, users, items in ((i_rec, 26091, 19547, 163), (u_rec, 204821, 97618, 11259)):
        assert (len(t), np.unique(t.users).size, np.unique(t.items).size) == (n, users, items)
        assert 1 <= t.items.min() and t.items.max() <= 17770  # Netflix movie ids
        assert t.users.max() <= 2649429 and set(np.unique(t.ratings)) <= {1, 2, 3, 4, 5}
