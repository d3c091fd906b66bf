"""Tests of reading any ratings table (data/table.py, data/table_arrow.py): exact ids, headers,
delimiters, columns by name or position, quotes, timestamps, DataFrames; errors name file:line."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from deepae_jax.data import ratings as R
from deepae_jax.data.readers import table
from deepae_jax.data.readers.table import TableFormat, read_table


def write(path, text, mode="w"):
    with open(path, mode, **({} if "b" in mode else {"newline": ""})) as fh:
        fh.write(text)
    return str(path)


ML_CSV = ("userId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1260759179\r\n"
          "7,31,0.5,1260759182\r\n7,10,4.5,1260759185\r\n")


def test_movielens_csv_with_header_crlf_half_stars_is_detected(tmp_path):
    p = write(tmp_path / "ratings.csv", ML_CSV)
    t = read_table(p)  # delimiter and header detected
    assert t.users.dtype == np.int64 and t.users.tolist() == [1, 1, 7, 7]
    assert t.items.tolist() == [31, 1029, 31, 10] and t.ratings.tolist() == [2.5, 3, 0.5, 4.5]
    assert t.timestamps is None
    m = R.load_matrix(p)
    assert m.shape == (2, 3) and m.nnz == 4
    named = read_table(p, TableFormat(columns="userId,movieId,rating",
                                      timestamp_column="timestamp"))
    assert named.timestamps.tolist() == [1260759144, 1260759179, 1260759182, 1260759185]


def test_twenty_digit_ids_are_kept_exactly_as_strings(tmp_path):
    big = ["12345678901234567890", "12345678901234567891"]  # beyond int64, differ in the last digit
    p = write(tmp_path / "big.tsv", f"{big[0]}\t1\t3\n{big[1]}\t1\t4\n")
    t = read_table(p)
    assert t.users.dtype.kind == "U" and t.users.tolist() == big
    m = R.build_matrix(t)
    assert m.row_ids.tolist() == big and m.shape == (2, 1)


def test_ids_above_2_to_53_stay_distinct_int64(tmp_path):
    ids = [2 ** 53, 2 ** 53 + 1, 2 ** 63 - 1]  # float64 would merge the first two
    p = write(tmp_path / "big.tsv", "".join(f"{u}\t7\t1.5\n" for u in ids))
    t = read_table(p)
    assert t.users.dtype == np.int64 and t.users.tolist() == ids


def test_underscore_id_is_a_string_not_ten(tmp_path):
    p = write(tmp_path / "u.tsv", "1_0\t5\t3\n10\t5\t4\n")
    t = read_table(p)
    assert t.users.tolist() == ["1_0", "10"]  # Python's int() would read 1_0 as 10
    assert R.build_matrix(t).shape == (2, 1)


def test_negative_id_refused_also_with_a_blank_line(tmp_path):
    p = write(tmp_path / "neg.tsv", "1\t2\t3\n\n-4\t2\t3\n")  # the blank line: general path
    with pytest.raises(R.RatingsFormatError, match=r"neg.tsv:3: negative user id -4"):
        read_table(p)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_ratings_refused_in_a_csv(tmp_path, value):
    p = write(tmp_path / "r.csv", f"user,item,rating\n1,2,4\n\n1,3,{value}\n")
    with pytest.raises(R.RatingsFormatError, match=r"r.csv:4: rating .* not allowed"):
        read_table(p)


def test_negative_ratings_are_read_with_a_warning(tmp_path, caplog):
    p = write(tmp_path / "r.tsv", "1\t2\t4\n1\t3\t-2.5\n")
    with caplog.at_level(logging.WARNING, logger="deepae_jax"):
        t = read_table(p)
    assert t.ratings.tolist() == [4.0, -2.5]
    assert "r.tsv:2: negative rating -2.5" in caplog.text


def test_string_ids_train_save_and_align(tmp_path):
    p = write(tmp_path / "s.csv", "user,item,rating\nu_17,i_2,4\nu_3,i_2,1\nu_17,i_9,2\n")
    m = R.load_matrix(p)
    assert m.row_ids.tolist() == ["u_17", "u_3"] and m.col_ids.tolist() == ["i_2", "i_9"]
    m.save(str(tmp_path / "s.npz"))  # no pickle needed for 'U' arrays
    back = R.RatingMatrix.load(str(tmp_path / "s.npz"))
    assert back.row_ids.tolist() == ["u_17", "u_3"] and (back.csr != m.csr).nnz == 0
    ev = R.Triples(np.array(["u_3", "u_9"]), np.array(["i_9", "i_2"]), np.ones(2, np.float32))
    split = R.align_eval(m, ev)
    assert split.nnz == 1 and split.dropped_unknown_rows == 1


def test_integer_training_ids_meet_string_evaluation_ids(tmp_path):
    train = R.build_matrix(R.Triples(np.array([2, 10, 9]), np.array([5, 5, 7]),
                                     np.ones(3, np.float32)))
    ev = R.Triples(np.array(["10", "u_1", "9"]), np.array(["7", "5", "7"]),
                   np.full(3, 2, np.float32))  # "10" sorts before "9" as text
    split = R.align_eval(train, ev)
    assert split.dropped_unknown_rows == 1
    np.testing.assert_array_equal(split.csr.toarray(), [[0, 0], [0, 2], [0, 2]])


def test_quoted_fields(tmp_path):
    p = write(tmp_path / "q.csv", 'user,item,rating\n"Doe, J.","The Film, Part 2",4.5\n'
                                  '"Doe, J.","x",1\n')
    t = read_table(p)
    assert t.users.tolist() == ["Doe, J.", "Doe, J."]
    assert t.items.tolist() == ["The Film, Part 2", "x"]


def test_columns_by_position_in_any_order(tmp_path):
    p = write(tmp_path / "p.txt", "4.5;junk;7;3\n2;junk;8;3\n")
    t = read_table(p, TableFormat(columns="3,2,0"))  # delimiter ';' detected
    assert t.users.tolist() == [3, 3] and t.items.tolist() == [7, 8]
    assert t.ratings.tolist() == [4.5, 2.0]


def test_double_colon_delimiter_fast_and_general(tmp_path):
    p = write(tmp_path / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n")
    assert read_table(p).items.tolist() == [122, 185]
    s = write(tmp_path / "s.dat", "a::122::5\nb::185::-1\n")  # strings: the pyarrow path
    t = read_table(s, TableFormat(delimiter="::"))
    assert t.users.tolist() == ["a", "b"] and t.ratings.tolist() == [5.0, -1.0]


def test_directory_of_integer_and_string_files_unifies_ids(tmp_path):
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "a.tsv", "1\t2\t3\n")
    write(tmp_path / "d" / "b.tsv", "u\t2\t4\n")
    t = read_table(str(tmp_path / "d"))
    assert t.users.tolist() == ["1", "u"] and t.items.tolist() == [2, 2]  # items: all integers


def test_header_auto_does_not_swallow_a_bad_first_line(tmp_path):
    p = write(tmp_path / "h.tsv", "1\t2\tx\n3\t4\t5\n")  # ids are numbers: not a header
    with pytest.raises(R.RatingsFormatError, match=r"h.tsv:1: rating 'x' is not a number"):
        read_table(p)
    t = read_table(p, TableFormat(header="true"))
    assert t.users.tolist() == [3]


def test_unknown_column_name_and_names_without_header(tmp_path):
    p = write(tmp_path / "r.csv", ML_CSV)
    with pytest.raises(R.RatingsFormatError, match=r"r.csv:1: no column 'user'"):
        read_table(p, TableFormat(columns="user,movieId,rating"))
    with pytest.raises(ValueError, match="column names need a header"):
        TableFormat(header="false", columns="userId,movieId,rating")
    with pytest.raises(ValueError, match="--columns='0,1'"):
        TableFormat(columns="0,1")
    with pytest.raises(ValueError, match="used twice"):
        TableFormat(columns="0,0,2")


def test_bad_delimiter_flag_and_undetectable_delimiter(tmp_path):
    with pytest.raises(ValueError, match="--delimiter=''"):
        TableFormat(delimiter="")
    assert table.normalize_delimiter("tab") == "\t" and table.normalize_delimiter("\\t") == "\t"
    p = write(tmp_path / "one.txt", "justonefield\nanother\n")
    with pytest.raises(R.RatingsFormatError, match=r"one.txt: cannot detect the delimiter"):
        read_table(p)


def test_csv_errors_name_the_line(tmp_path):
    ragged = write(tmp_path / "ragged.csv", "u,i,r\n1,2,3\n1,2\n")
    with pytest.raises(R.RatingsFormatError, match=r"ragged.csv:3: expected 3 fields"):
        read_table(ragged)
    binary = write(tmp_path / "bin.csv", b"u,i,r\n1,2,3\n1,\xff,3\n", mode="wb")
    with pytest.raises(R.RatingsFormatError, match=r"bin.csv:3: not valid UTF-8"):
        read_table(binary)
    stamp = write(tmp_path / "ts.csv", "u,i,r,t\n1,2,3,99\n1,3,3,later\n")
    with pytest.raises(R.RatingsFormatError, match=r"ts.csv:3: timestamp 'later'"):
        read_table(stamp, TableFormat(timestamp_column="t"))


def test_from_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"userId": [5, 5, 9], "movieId": ["a", "b", "a"], "rating": [4.5, 1, 2]})
    m = R.from_dataframe(df, major="users")
    assert m.row_ids.tolist() == [5, 9] and m.col_ids.tolist() == ["a", "b"]
    assert m.csr.toarray().tolist() == [[4.5, 1.0], [2.0, 0.0]]
    with pytest.raises(R.RatingsFormatError, match="no column 'user'"):
        R.from_dataframe(df, user_col="user")
    with pytest.raises(R.RatingsFormatError, match="DataFrame row 1: missing item id"):
        R.from_dataframe(df.assign(movieId=["a", None, "b"]))
    with pytest.raises(R.RatingsFormatError, match="float64 user ids"):
        R.from_dataframe(df.assign(userId=[1.0, 2.0, 3.0]))
    df.loc[2, "rating"] = float("nan")
    with pytest.raises(R.RatingsFormatError, match="DataFrame row 2: rating nan"):
        R.from_dataframe(df)


def test_write_string_ids_round_trip_and_refuse_delimiter(tmp_path):
    t = R.Triples(np.array(["u_1", "u_2"]), np.array(["i", "j"]), np.array([1, 2.5], np.float32))
    R.write_ratings_text(str(tmp_path / "w.tsv"), t)
    back = read_table(str(tmp_path / "w.tsv"))
    assert back.users.tolist() == ["u_1", "u_2"] and back.ratings.tolist() == [1.0, 2.5]
    bad = R.Triples(np.array(["a\tb"]), np.array(["i"]), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="holds the delimiter"):
        R.write_ratings_text(str(tmp_path / "x.tsv"), bad)


def test_space_delimiter_runs_of_blanks_and_a_bom(tmp_path):
    p = write(tmp_path / "sp.txt", "1  2 3\n 4 5   6 \n")  # detected: space
    t = read_table(p)
    assert t.users.tolist() == [1, 4] and t.items.tolist() == [2, 5]
    assert t.ratings.tolist() == [3.0, 6.0]
    bom = write(tmp_path / "bom.csv", "\ufeffuserId,movieId,rating\nu1,2,3\n")
    assert read_table(bom, TableFormat(columns="userId,movieId,rating")).users.tolist() == ["u1"]


def test_column_position_beyond_the_fields_names_the_line(tmp_path):
    p = write(tmp_path / "r.tsv", "1\t2\t3\n4\t5\t6\n")
    with pytest.raises(R.RatingsFormatError, match=r"r.tsv:1: expected 6 fields"):
        read_table(p, TableFormat(columns="0,1,5"))


# ---- issue 23, class 2: input never read as something else --------------------------------
@pytest.mark.parametrize("text", [
    "1\t2\t5\r1\t3\t4\r2\t3\t1\r",  # the fast parser's input: once deleted CRs made "51"
    "1\t2\t5\r1\t3\t4\r2\t3\t1",
    "user,item,rating\r1,2,5\r1,3,4\r2,3,1\r",  # the general reader
    "1,2,5\r\n1,3,4\r2,3,1\n",  # mixed line ends
])
def test_cr_only_line_ends_are_line_ends(tmp_path, text):
    t = read_table(write(tmp_path / "r.txt", text, "w"))
    assert t.users.tolist() == [1, 1, 2] and t.items.tolist() == [2, 3, 3]
    assert t.ratings.tolist() == [5, 4, 1]


def test_cr_only_errors_name_the_line(tmp_path):
    with pytest.raises(R.RatingsFormatError, match=r"r.txt:3: rating 'x' is not a number"):
        read_table(write(tmp_path / "r.txt", "1\t2\t5\r1\t3\t4\r2\t3\tx\r"))
    with pytest.raises(R.RatingsFormatError, match=r"r.txt:4: rating 0"):
        read_table(write(tmp_path / "r.txt", "1\t2\t5\r\r1\t3\t4\r2\t3\t0\r"))


@pytest.mark.parametrize("value, became", [("1e39", "inf"), ("-3.5e38", "-inf"),
                                           ("1e-50", "0.0"), ("-1e-46", "-0.0")])
def test_ratings_beyond_float32_are_refused(tmp_path, value, became):
    """1e39 became inf (RMSE inf) and 1e-50 became 0 (= unrated, dropped) without a word."""
    for text in (f"1\t2\t5\n1\t3\t{value}\n", f"u,i,r\n1,2,5\n1,3,{value}\n"):
        with pytest.raises(R.RatingsFormatError, match=rf"r.txt:\d: rating .* outside "
                           rf"float32's range .*become {re.escape(became)}"):
            read_table(write(tmp_path / "r.txt", text))
    import pandas as pd
    from deepae_jax.data.readers.arrow import triples_from_dataframe
    df = pd.DataFrame({"u": [1, 2], "i": [1, 1], "r": [4.0, float(value)]})
    with pytest.raises(R.RatingsFormatError, match="DataFrame row 1: .*float32"):
        triples_from_dataframe(df, "u", "i", "r")


def test_a_data_folder_with_a_sub_folder_is_refused(tmp_path):
    write(tmp_path / "a.txt", "1\t2\t5\n")
    (tmp_path / "more").mkdir()
    write(tmp_path / "more" / "b.txt", "1\t3\t4\n")
    with pytest.raises(R.RatingsFormatError, match="holds 'more', not a file"):
        read_table(str(tmp_path))
    (tmp_path / "more").rename(tmp_path / ".hidden")  # hidden entries stay skipped
    assert len(read_table(str(tmp_path))) == 1


def test_a_pipe_is_refused_by_name(tmp_path):
    import os
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(R.RatingsFormatError, match="pipe: not a regular file"):
        read_table(str(fifo))


# ---- property: what is written reads back exactly, or fails naming the file and line -----
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_ID = st.one_of(st.integers(0, 10 ** 12).map(str),
                st.text(st.sampled_from("abcXYZ_-.é0123"), min_size=1, max_size=6))
_RATING = st.one_of(st.integers(-5, 9).filter(bool).map(float),
                    st.sampled_from([0.5, 1.25, 3.75, 4.5, -2.5, 1e-3, 123456.0]))


def _number(value: float, style: int) -> str:
    return [f"{value:g}", repr(value), f"{value:.3e}", f"{value:.6f}"][style]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_ID, _ID, _RATING), min_size=1, max_size=12),
       delimiter=st.sampled_from(["\t", ",", ";", "|", "::", " "]),
       line_end=st.sampled_from(["\n", "\r\n", "\r"]), header=st.booleans(),
       quote=st.booleans(), style=st.integers(0, 3), bom=st.booleans(),
       corrupt=st.sampled_from([None, "rating", "field", "bytes"]), where=st.integers(0, 11))
def test_property_round_trip_or_named_error(tmp_path_factory, rows, delimiter, line_end, header,
                                            quote, style, bom, corrupt, where):
    """Random tables (ids, delimiters, line ends, quotes, BOM, number formats), read with the
    layout given explicitly: exactly the values written, or a RatingsFormatError that names
    the file and the line of the corruption."""
    if quote and len(delimiter) > 1 or quote and delimiter == " ":
        quote = False  # quotes are honoured for one-character delimiters
    q = (lambda s: f'"{s}"') if quote else (lambda s: s)  # noqa: E731
    lines = [delimiter.join(["user", "item", "rating"])] if header else []
    lines += [delimiter.join([q(u), q(i), _number(r, style)]) for u, i, r in rows]
    bad_line = None
    if corrupt:
        k = where % len(rows)
        bad_line = k + 1 + header
        fields = lines[bad_line - 1].split(delimiter)
        if corrupt == "rating":
            fields[2] = "4x"
        elif corrupt == "field":
            fields = fields[:2]
        lines[bad_line - 1] = delimiter.join(fields)
    encoded = [ln.encode("utf-8") for ln in lines]
    if corrupt == "bytes":
        encoded[bad_line - 1] += b"\xff"  # not UTF-8
    raw = (b"\xef\xbb\xbf" if bom and header else b"") + b"".join(
        ln + line_end.encode() for ln in encoded)
    path = str(tmp_path_factory.mktemp("prop") / "t.txt")
    with open(path, "wb") as fh:
        fh.write(raw)
    fmt = TableFormat(delimiter=delimiter, header="true" if header else "false")
    if corrupt:
        with pytest.raises(R.RatingsFormatError) as err:
            read_table(path, fmt)
        assert re.search(rf"t\.txt:{bad_line}\b", str(err.value)), (str(err.value), bad_line)
        return
    t = read_table(path, fmt)
    as_str = lambda ids: [str(x) for x in ids.tolist()]  # noqa: E731
    ints = lambda col: all(re.fullmatch(r"[0-9]{1,18}", v) for v in col)  # noqa: E731
    for got, want in ((t.users, [u for u, _, _ in rows]), (t.items, [i for _, i, _ in rows])):
        if ints(want):
            assert got.dtype == np.int64 and got.tolist() == [int(v) for v in want]
        else:
            assert as_str(got) == [v.strip() for v in want]
    np.testing.assert_array_equal(
        t.ratings, np.array([float(_number(r, style)) for _, _, r in rows], np.float32))


def test_a_field_over_csvs_limit_is_named(tmp_path):
    """Issue 23, class 6: csv's field size limit ended in a traceback (_csv.Error)."""
    text = '1,2,5\n1,"' + "x" * 200_000 + '",x\n'
    with pytest.raises(R.RatingsFormatError, match=r"r.txt:2: field larger than field limit"):
        read_table(write(tmp_path / "r.txt", text))
    t = read_table(write(tmp_path / "r.txt", '1,"' + "x" * 140_000 + '",4\n'),
                   TableFormat(delimiter=","))  # a long id that is quoted right reads back
    assert t.items.tolist() == ["x" * 140_000]
