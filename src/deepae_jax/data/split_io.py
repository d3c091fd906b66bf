"""Writing converted splits: crash-safe output folders, text + ``.npz`` per part, a stats table.

Layout of a converted data set ``OUT_DIR`` (shared by the Netflix and MovieLens converters)::

    OUT_DIR/NF_TRAIN/nf.train.txt   reference text format, user<TAB>item<TAB>rating, original ids
    OUT_DIR/NF_TRAIN.npz            the same ratings as a RatingMatrix (what the trainer loads fast)
    OUT_DIR/NF_VALID/..., NF_VALID.npz, NF_TEST/..., NF_TEST.npz, ...
    OUT_DIR/stats.md                the per-split table (PAPER.md's columns)

Everything is written into a temporary folder beside ``OUT_DIR`` (same parent, so the final
rename is atomic) and renamed to ``OUT_DIR`` only when every part is complete; on failure the
temporary folder is removed, so ``OUT_DIR`` never holds a half-written conversion.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator, Sequence

from deepae_jax.data.ratings import RatingMatrix, Triples, write_ratings_text
from deepae_jax.run.files import atomic_write_text


def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Fails early when ``out_dir`` holds something and ``overwrite`` is off."""
    if os.path.exists(out_dir) and not overwrite and (
            not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir} exists and is not empty (pass --overwrite to replace it)")


@contextlib.contextmanager
def staged_dir(out_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary folder that becomes ``out_dir`` if the block succeeds.

    The temporary folder lies in ``out_dir``'s parent (``.NAME.tmp-*``). On an exception it is
    deleted and ``out_dir`` is left as it was.
    """
    out_dir = os.path.abspath(out_dir)
    check_out_dir(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.tmp-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would otherwise stick to OUT_DIR
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.old-")
        os.rmdir(old)
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def write_part(folder: str, part: str, triples: Triples, matrix: RatingMatrix | None) -> None:
    """Writes ``folder/PART/part.txt`` (text) and ``folder/PART.npz`` (RatingMatrix)."""
    write_ratings_text(os.path.join(folder, part, part.lower().replace("_", ".") + ".txt"), triples)
    if matrix is not None:
        matrix.save(os.path.join(folder, part + ".npz"))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table; integers get thousands separators."""
    def cell(v):
        return f"{v:,}" if isinstance(v, int) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_stats(folder: str, title: str, table: str, notes: Sequence[str] = ()) -> None:
    """Writes ``folder/stats.md``: a title, the table and notes."""
    text = f"# {title}\n\n{table}\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write_text(os.path.join(folder, "stats.md"), text)
