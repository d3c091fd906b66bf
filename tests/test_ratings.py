"""Tests of the reference text format reader, the CSR rating matrix and evaluation alignment."""
from __future__ import annotations

import os

import numpy as np
import pytest

from deepae_jax.data import ratings as R
from deepae_jax.data.readers import arrow, text_format

COLS = {"user": 0, "item": 1, "rating": 2}


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as fh:
        fh.write(text)
    return str(path)


def test_reads_file_and_directory_and_ignores_extra_columns(tmp_path):
    write(tmp_path / "d" / "a.txt", "10\t7\t4\t881250949\n3\t7\t2.5\t881250950\n")
    write(tmp_path / "d" / "b.txt", "3\t9\t5\n")
    write(tmp_path / "d" / ".hidden", "garbage")
    t = R.read_ratings_text(str(tmp_path / "d"))
    assert t.users.tolist() == [10, 3, 3]
    assert t.items.tolist() == [7, 7, 9]
    assert t.ratings.tolist() == [4.0, 2.5, 5.0]


def general(tmp_path, text: str) -> np.ndarray:
    """What the general (pyarrow) reader makes of a tab-separated text, as (n, 3) float64."""
    path = write(tmp_path / "general.tsv", text)
    t = arrow.read_arrow(path, "\t", False, COLS)
    return np.column_stack([t.users, t.items, t.ratings]).astype(np.float64)


def as_read(values: np.ndarray) -> np.ndarray:
    """Fast-parser values with the ratings rounded to float32 as the readers store them."""
    return np.column_stack([values[:, :2], values[:, 2].astype(np.float32)]).astype(np.float64)


def test_fast_and_slow_parsers_agree(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(int(u), int(i), float(r)) for u, i, r in zip(
        rng.integers(1, 10**6, 500), rng.integers(1, 2000, 500), rng.integers(1, 6, 500))]
    text = "".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows)
    fast = text_format._parse_fast(text.encode(), "\t")
    assert fast is not None
    np.testing.assert_array_equal(as_read(fast), general(tmp_path, text))


@pytest.mark.parametrize("rating_fmt", ["{:d}", "{:d}.0", "{:d}.50"])
def test_integer_and_decimal_fast_paths_agree_with_slow_parser(tmp_path, rating_fmt):
    """Integer fields take _parse_ints (leading zeros, widths 1..9 per column); any decimal
    point sends the file to _parse_decimals; both equal float() on every field."""
    rng = np.random.default_rng(1)
    users = rng.integers(0, 10**9, 3000)
    items = rng.integers(0, 20, 3000)
    text = "".join(f"{u}\t{i:03d}\t{rating_fmt.format(int(r))}\t77\n" for u, i, r in zip(
        users, items, rng.integers(1, 6, 3000)))
    fast = text_format._parse_fast(text.encode(), "\t")
    assert fast is not None and fast.shape == (3000, 3)
    np.testing.assert_array_equal(as_read(fast), general(tmp_path, text))
    buf = np.frombuffer(b"12\t3x\t4\n", np.uint8)  # a non-digit: not the integer path
    assert text_format._parse_ints(buf, np.array([[0, 3, 6]]), np.array([[2, 5, 7]])) is None


def test_file_read_in_blocks_equals_whole_file(tmp_path):
    """Block boundaries (mid-line, CRLF, a last line without newline) change nothing; a bad
    line in a later block is still named by its line number."""
    rng = np.random.default_rng(2)
    lines = [f"{u}\t{i}\t{r}" for u, i, r in zip(rng.integers(1, 999, 400),
                                                 rng.integers(1, 50, 400), rng.integers(1, 6, 400))]
    path = write(tmp_path / "r.tsv", "\r\n".join(lines), mode="w")
    whole = text_format._parse_fast(open(path, "rb").read(), "\t")
    for size in (7, 64, 1000, 1 << 20):
        np.testing.assert_array_equal(text_format.parse_fast_file(path, "\t", size), whole)
    bad = write(tmp_path / "bad.tsv", "\n".join(lines[:300] + ["5\t6\tx"] + lines[300:]))
    assert text_format.parse_fast_file(bad, "\t", 64) is None
    with pytest.raises(R.RatingsFormatError, match="bad.tsv:301:"):
        R.read_ratings_text(bad)


def test_column_order_item_user(tmp_path):
    p = write(tmp_path / "f.txt", "26\t1718936\t5.0\n26\t187387\t2.0\n")
    t = R.read_ratings_text(p, column_order="item,user,rating")
    assert t.users.tolist() == [1718936, 187387] and t.items.tolist() == [26, 26]


def test_crlf_and_comma_delimiter(tmp_path):
    p = write(tmp_path / "f.csv", "1,2,3.5\r\n4,5,1\r\n")
    t = R.read_ratings_text(p, delimiter=",")
    assert t.ratings.tolist() == [3.5, 1.0] and t.users.tolist() == [1, 4]


@pytest.mark.parametrize("line,needle", [
    ("5\t6\n", "expected 3 fields"),
    ("5\t6\tgood\n", "'good' is not a number"),
    ("5\t6\tnan\n", "not allowed"),
    ("5\t6\tinf\n", "not allowed"),
    ("5\t6\t0\n", "0 (indistinguishable"),
    ("5\t6\t4_5\n", "'4_5' is not a number"),
    ("5\t6\t \n", "'' is not a number"),
    ("-5\t6\t3\n", "negative user id -5"),
    ("5\t\t3\n", "empty item id"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, needle):
    p = write(tmp_path / "bad.txt", "1\t2\t3\n" * 4 + line + "1\t3\t3\n")
    with pytest.raises(R.RatingsFormatError) as e:
        R.read_ratings_text(p)
    assert f"{p}:5:" in str(e.value) and needle in str(e.value)


def test_non_utf8_names_line(tmp_path):
    p = write(tmp_path / "bin.txt", b"1\t2\t3\n1\t\xff\t3\n", mode="wb")
    with pytest.raises(R.RatingsFormatError, match=r"bin.txt:2: not valid UTF-8"):
        R.read_ratings_text(p)


def test_empty_directory_and_missing_path(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(R.RatingsFormatError, match="no rating files"):
        R.read_ratings_text(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="nope"):
        R.read_ratings_text(str(tmp_path / "nope"))


def test_empty_training_set(tmp_path):
    p = write(tmp_path / "empty.txt", "\n")
    with pytest.raises(R.RatingsFormatError, match="empty training set"):
        R.build_matrix(R.read_ratings_text(p), source=p)


def test_build_matrix_maps_ids_densely_and_sorted():
    t = R.Triples(np.array([30, 10, 30, 20]), np.array([7, 5, 5, 9]),
                  np.array([1, 2, 3, 4], np.float32))
    m = R.build_matrix(t)
    assert m.row_ids.tolist() == [10, 20, 30] and m.col_ids.tolist() == [5, 7, 9]
    expected = np.array([[2, 0, 0], [0, 0, 4], [3, 1, 0]], np.float32)
    np.testing.assert_array_equal(m.csr.toarray(), expected)
    items = R.build_matrix(t, major="items")
    np.testing.assert_array_equal(items.csr.toarray(), expected.T)
    assert items.row_ids.tolist() == [5, 7, 9]


def test_duplicate_policy():
    t = R.Triples(np.array([1, 1, 2]), np.array([5, 5, 5]), np.array([1, 4, 2], np.float32))
    with pytest.raises(R.RatingsFormatError, match="user 1 rated item 5 more than once"):
        R.build_matrix(t)
    m = R.build_matrix(t, duplicates="last")
    assert m.csr.toarray().ravel().tolist() == [4.0, 2.0]


def test_npz_round_trip_and_triples(tmp_path):
    t = R.Triples(np.array([3, 1, 3]), np.array([2, 2, 8]), np.array([5, 1, 3.5], np.float32))
    m = R.build_matrix(t)
    path = str(tmp_path / "m.npz")
    m.save(path)
    back = R.RatingMatrix.load(path)
    assert (back.csr != m.csr).nnz == 0 and back.major == "users"
    np.testing.assert_array_equal(back.row_ids, m.row_ids)
    assert R.load_matrix(path).nnz == 3
    back_t = R.load_triples(path)
    got = sorted(zip(back_t.users.tolist(), back_t.items.tolist(), back_t.ratings.tolist()))
    assert got == sorted(zip([3, 1, 3], [2, 2, 8], [5.0, 1.0, 3.5]))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_align_eval_drops_and_counts_unknown_rows_and_columns():
    train = R.build_matrix(R.Triples(np.array([1, 1, 2]), np.array([10, 11, 10]),
                                     np.array([3, 4, 5], np.float32)))
    ev = R.Triples(np.array([1, 2, 9, 2, 9]), np.array([11, 11, 10, 99, 99]),
                   np.array([2, 3, 4, 5, 1], np.float32))
    split = R.align_eval(train, ev)
    assert split.dropped_unknown_rows == 2   # user 9 (two ratings)
    assert split.dropped_unknown_cols == 1   # item 99 of user 2
    np.testing.assert_array_equal(split.csr.toarray(), [[0, 2], [0, 3]])
    assert split.rows.tolist() == [0, 1]


def test_movielens_100k_u1(shared_data):
    base = R.read_ratings_text(str(shared_data / "movielens-100k" / "u1.base"))
    train = R.build_matrix(base)
    assert train.shape == (943, 1650) and train.nnz == 80000
    split = R.align_eval(train, R.read_ratings_text(str(shared_data / "movielens-100k" / "u1.test")))
    assert split.nnz + split.dropped_unknown_cols + split.dropped_unknown_rows == 20000
    assert len(split.rows) == 459


def saved_parts(tmp_path, **changes) -> str:
    """A valid saved matrix (3 users x 3 items) with some of its stored arrays replaced."""
    m = R.build_matrix(R.Triples(np.array([1, 1, 2, 3]), np.array([5, 6, 5, 7]),
                                 np.array([1, 2, 3, 4], np.float32)))
    parts = dict(indptr=m.csr.indptr.astype(np.int64), indices=m.csr.indices, data=m.csr.data,
                 shape=np.asarray(m.shape, np.int64), row_ids=m.row_ids, col_ids=m.col_ids,
                 major=np.asarray("users"))
    parts.update(changes)
    path = str(tmp_path / "m.npz")
    np.savez(path, **parts)
    return path


def test_valid_saved_matrix_loads(tmp_path):
    assert R.RatingMatrix.load(saved_parts(tmp_path)).validate().nnz == 4


def test_truncated_npz_names_the_file(tmp_path):
    path = saved_parts(tmp_path)
    raw = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(raw[:len(raw) // 2])
    with pytest.raises(R.RatingsFormatError, match=r"m.npz: not a rating matrix"):
        R.load_matrix(path)
    with open(path, "wb") as fh:
        fh.write(b"")
    with pytest.raises(R.RatingsFormatError, match=r"m.npz: not a rating matrix"):
        R.load_matrix(path)


@pytest.mark.parametrize("changes,needle", [
    (dict(indices=np.array([0, 1, 0, 9], np.int32)), "column index 9 outside 0..2"),
    (dict(indices=np.array([0, 1, 0, -1], np.int32)), "column index -1"),
    (dict(data=np.array([1, np.nan, 3, 4], np.float32)), "finite and non-zero"),
    (dict(data=np.array([1, 0, 3, 4], np.float32)), "finite and non-zero"),
    (dict(indptr=np.array([0, 3, 2, 4])), "indptr must rise"),
    (dict(indptr=np.array([0, 2, 3, 5])), "indptr must rise from 0 to the 4 entries"),
    (dict(indptr=np.array([0, 2, 4])), "indptr has 3"),
    (dict(indices=np.array([1, 0, 0, 2], np.int32)), "not strictly increasing"),
    (dict(row_ids=np.array([1, 3, 2])), "row_ids are not sorted and unique"),
    (dict(col_ids=np.array([5, 6])), "col_ids holds 2"),
    (dict(shape=np.array([3])), "shape [3]"),
    (dict(major=np.asarray("both")), "major 'both'"),
    (dict(data=np.array([1, 2, 3], np.float32)), "3 values"),
])
def test_corrupt_npz_is_refused_naming_the_file(tmp_path, changes, needle):
    path = saved_parts(tmp_path, **changes)
    with pytest.raises(R.RatingsFormatError) as e:
        R.load_matrix(path)
    assert str(e.value).startswith(f"{path}:") and needle in str(e.value)
