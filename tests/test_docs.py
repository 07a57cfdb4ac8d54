"""The repository explains itself: every document a file names is in the repository.

Scanned: every file git tracks or would track (untracked files that are not ignored too), as
text. A "named document" is (1) any `something.md` path in any file — markdown, comments,
docstrings, JSON preset texts, JavaScript — resolved against the naming file's folder or the
repository root; (2) the target of a markdown link or image, with its `#anchor` checked against
the target's headings; (3) a path outside the repository (an absolute path into the machine
the repository was written on). README.md stays short enough to read to the end, every page of
docs/ is reachable from it by links, and docs/rest-api.md's endpoint table is the app's API,
both ways.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A path to a markdown document: not part of a longer word, path or URL (`://host/x.md` is not
# matched because the match may not start right after a slash).
DOC_NAME = re.compile(r"(?<![\w./-])((?:\.\.?/)*(?:[\w-]+/)*[\w][\w.-]*\.md)\b")
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Paths on the machine this was written on, outside the repository.
OUTSIDE = re.compile(r"(?<![\w.-])/work/[\w.-]+|(?<![\w./-])shared/[\w.-]+\.md")
SKIP_SCHEMES = ("http://", "https://", "mailto:", "data:")


@cache
def repo_files() -> tuple[Path, ...]:
    """Tracked and untracked-but-not-ignored files that exist (deleted ones drop out)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    paths = (REPO / p for p in out.decode().split("\0") if p)
    return tuple(sorted(p for p in paths if p.is_file()))


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (images, archives)
    return data.decode("utf-8", errors="replace")


def text_files() -> list[tuple[Path, str]]:
    """Every text file but this one (its own examples name documents that do not exist)."""
    me = Path(__file__).resolve()
    return [(p, t) for p in repo_files() if p != me and (t := text_of(p)) is not None]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    out.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', path.read_text(encoding="utf-8")))
    return frozenset(out)


@cache
def package_data_roots() -> tuple[Path, ...]:
    """pyproject.toml names package data relative to its package (`"bnlab" = ["engine/x.md"]`)."""
    path = REPO / "pyproject.toml"
    if not path.exists():
        return ()
    # The keys of [tool.setuptools.package-data], read without tomllib (not in Python 3.10).
    text = path.read_text(encoding="utf-8")
    section = re.search(r"^\[tool\.setuptools\.package-data\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    packages = re.findall(r'^"?([\w.]+)"?\s*=', section.group(1), re.M) if section else []
    return tuple(REPO / pkg.replace(".", "/") for pkg in packages)


def resolves(name: str, where: Path) -> Path | None:
    """The file `name` stands for: relative to the naming file's folder or the root (or, in
    pyproject.toml, to a package with package data); a bare name (no folder, as in
    `ROOT / "docs" / "x.md"`) may be any file of that name."""
    bases = [where.parent, REPO]
    if where == REPO / "pyproject.toml":
        bases += package_data_roots()
    for base in bases:
        target = (base / name).resolve()
        if target.is_relative_to(REPO) and target.exists():
            return target
    if "/" not in name:
        return next((p for p in repo_files() if p.name == name), None)
    return None


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def test_name_only_documents_the_repository_contains():
    """Every `x.md` named anywhere (docs, comments, docstrings, preset texts, the dashboard's
    code) exists in the repository, relative to the naming file or the root."""
    missing = []
    for path, text in text_files():
        for m in DOC_NAME.finditer(text):
            if not resolves(m.group(1), path):
                missing.append(f"{path.relative_to(REPO)}:{line_of(text, m.start())}: {m.group(1)}")
    assert not missing, "documents named but not in the repository:\n" + "\n".join(missing)


def test_resolve_every_markdown_link_and_anchor():
    """Every relative markdown link or image points at a file of the repository, and a link's
    #anchor at a heading of its target."""
    broken = []
    for path, text in text_files():
        if path.suffix != ".md":
            continue
        for m in MD_LINK.finditer(text):
            target = m.group(1)
            if target.startswith(SKIP_SCHEMES):
                continue
            file_part, _, anchor = target.partition("#")
            found = resolves(file_part, path) if file_part else path
            where = f"{path.relative_to(REPO)}:{line_of(text, m.start())}: {target}"
            if found is None or (file_part and not (path.parent / file_part).resolve().exists()):
                broken.append(f"{where} (no such file)")
            elif anchor and found.suffix == ".md" and anchor not in anchors(found):
                broken.append(f"{where} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_point_nowhere_outside_the_repository():
    """No file points at a path outside the repository (the machine it was written on)."""
    found = []
    for path, text in text_files():
        for m in OUTSIDE.finditer(text):
            found.append(f"{path.relative_to(REPO)}:{line_of(text, m.start())}: {m.group(0)}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_catch_a_missing_document(tmp_path):
    """The checks above can fail: a name, a link and an anchor that do not exist are found."""
    doc = tmp_path / "a.md"
    doc.write_text("# Title\nsee nothere.md and [x](b.md#nope) and [y](#title)\n")
    (tmp_path / "b.md").write_text("# Other\n")
    names = [m.group(1) for m in DOC_NAME.finditer(doc.read_text())]
    assert names == ["nothere.md", "b.md"]
    assert resolves("nothere.md", doc) is None and resolves("design.md", doc) is not None
    assert "nope" not in anchors(tmp_path / "b.md") and "title" in anchors(doc)
    assert not DOC_NAME.search("https://example.org/path/README.md")


README_MAX_LINES = 250  # what a newcomer reads to the end; the rest lives in docs/


def test_keep_the_readme_short():
    """README.md is the way in, not the manual: at most README_MAX_LINES lines."""
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (
        f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


def linked_documents(start: Path) -> set[Path]:
    """Every markdown file reachable from `start` by following relative markdown links."""
    seen: set[Path] = set()
    todo = [start.resolve()]
    while todo:
        page = todo.pop()
        if page in seen or not page.is_file():
            continue
        seen.add(page)
        for m in MD_LINK.finditer(page.read_text(encoding="utf-8")):
            target = m.group(1).partition("#")[0]
            if target and not target.startswith(SKIP_SCHEMES) and target.endswith(".md"):
                todo.append((page.parent / target).resolve())
    return seen


def unlinked_docs(readme: Path, docs: list[Path]) -> list[str]:
    reachable = linked_documents(readme)
    return sorted(p.name for p in docs if p.resolve() not in reachable)


def test_link_every_doc_from_the_readme():
    """Every docs/*.md is linked from README.md or from a page linked from it (transitively):
    a page nobody can reach from the README is a page nobody reads."""
    docs = [p for p in repo_files() if p.parent == REPO / "docs" and p.suffix == ".md"]
    assert docs, "no docs/*.md found"
    orphans = unlinked_docs(REPO / "README.md", docs)
    assert not orphans, f"docs/ pages reachable from no link starting at README.md: {orphans}"


def test_catch_an_unlinked_doc(tmp_path):
    """The reachability check can fail: an orphan page and a page linked only from it are
    found; a link with an anchor counts (transitively), a URL ending in .md does not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("[a](docs/a.md#top) and https://x.org/c.md\n")
    (tmp_path / "docs" / "a.md").write_text("# Top\n[b](b.md)\n")
    (tmp_path / "docs" / "b.md").write_text("# B\n")
    (tmp_path / "docs" / "c.md").write_text("[d](d.md)\n")
    (tmp_path / "docs" / "d.md").write_text("# D\n")
    docs = sorted((tmp_path / "docs").glob("*.md"))
    assert unlinked_docs(tmp_path / "README.md", docs) == ["c.md", "d.md"]


def api_doc_endpoints() -> set[tuple[str, str]]:
    text = (REPO / "docs" / "rest-api.md").read_text(encoding="utf-8")
    return set(
        re.findall(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*(/api/[^\s|]*)\s*\|", text, re.M)
    )


def test_list_every_api_endpoint_in_rest_api_doc():
    """docs/rest-api.md's endpoint table is the app's API: every route the app serves is listed,
    and every listed route exists."""
    pytest.importorskip("fastapi")
    from backend.api.main import create_app

    served = {
        (method.upper(), path)
        for path, ops in create_app().openapi()["paths"].items()
        for method in ops
    }
    listed = api_doc_endpoints()
    assert not served - listed, f"served but not in docs/rest-api.md: {sorted(served - listed)}"
    assert not listed - served, f"in docs/rest-api.md but not served: {sorted(listed - served)}"
