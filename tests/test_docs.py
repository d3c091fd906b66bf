"""The documentation: a short README, docs pages whose links resolve, nothing that points outside
a public clone, and (where mkdocs is installed) the site built with warnings as errors."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"
README_MAX_LINES = 260
LINK = re.compile(r"\]\(([^)\s]+)\)")  # the target of a Markdown link [text](target)


def pages() -> list:
    return sorted(DOCS.rglob("*.md"))


def local_links(path) -> list[str]:
    """The link targets of a Markdown file that point into the repository (no URL, no anchor
    of the same page), without their #anchor; fenced code is skipped."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    targets = [t.split("#")[0] for t in LINK.findall(text)]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move details into docs/"


def test_docs_exist():
    names = {p.relative_to(DOCS).as_posix() for p in pages()}
    assert {"index.md", "install.md", "quickstart.md", "cli.md", "api/index.md"} <= names


@pytest.mark.parametrize("path", [README, *pages()], ids=lambda p: p.name)
def test_links_resolve(path):
    missing = [t for t in local_links(path) if not (path.parent / t).exists()]
    assert not missing, f"{path.relative_to(REPO_ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("path", [README, *pages()], ids=lambda p: p.name)
def test_no_workspace_paths(path):
    """A public clone has no ../shared beside it: no page may send a reader there."""
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines())
            if "../shared" in line or "/work/shared" in line]
    assert not hits, f"{path.relative_to(REPO_ROOT)} refers to ../shared on lines {hits}"


def test_every_page_in_nav():
    nav = set(re.findall(r"([\w/-]+\.md)\s*$", (REPO_ROOT / "mkdocs.yml").read_text(), re.M))
    names = {p.relative_to(DOCS).as_posix() for p in pages()}
    assert names == nav, f"pages not in nav: {names - nav}; nav entries without page: {nav - names}"


def test_link_check_catches_a_missing_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [web](https://example.org) [gone](gone.md#x)\n"
                    "```\n[in code](ignored.md)\n```\n")
    assert local_links(page) == ["page.md", "gone.md"]


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs not installed (pip install -e '.[docs]'); "
                                         "CI builds the site in .ci/run")
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site/api/api/index.html").is_file()
