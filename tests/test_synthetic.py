"""data/synthetic.py: the deterministic synthetic set and its MovieLens-style CSV."""
from __future__ import annotations

import numpy as np

from deepae_jax.data import ratings
from deepae_jax.data.datasets import synthetic
from deepae_jax.cli import data as cli_data

def synthetic_main(argv):
    """``deepae synthetic`` in process (the command line of :mod:`synthetic`)."""
    return cli_data.main(cli_data.SYNTHETIC, argv)


SPEC = synthetic.SyntheticSpec(n_users=40, n_items=30, mean_ratings_per_user=8, seed=2)


def test_csv_holds_every_rating_and_reads_back_with_string_user_ids(tmp_path):
    path = str(tmp_path / "ratings.csv")
    n = synthetic.write_csv(path, SPEC)
    train, held_out = synthetic.generate(SPEC)
    assert n == len(train) + len(held_out)
    with open(path) as fh:
        assert fh.readline() == "userId,movieId,rating,timestamp\n"
    back = ratings.read_table(path, ratings.TableFormat(timestamp_column="timestamp"))
    assert len(back) == n and back.users.dtype.kind == "U"
    expected = {(f"u{u}", int(i), float(r)) for t in (train, held_out)
                for u, i, r in zip(t.users, t.items, t.ratings)}
    assert {(str(u), int(i), float(r)) for u, i, r in
            zip(back.users, back.items, back.ratings)} == expected
    for user in np.unique(back.users):  # timestamps grow along each user's ratings
        assert np.all(np.diff(back.timestamps[back.users == user]) > 0)


def test_cli_writes_the_file_and_refuses_bad_flags(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert synthetic_main([f"--out={out}", "--users=30", "--items=20"]) == 0
    assert out.read_text().count("\n") > 30
    assert synthetic_main(["--users=1", f"--out={out}"]) == 2
    assert "--users=1: must be >= 2" in capsys.readouterr().err
