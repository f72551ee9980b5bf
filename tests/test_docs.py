"""The documentation's links point at files that exist: README.md and every page under docs/.

`mkdocs build --strict` (.ci/run) checks the site's links too, but needs the docs extra; these checks need
nothing, so a broken link or a renamed page fails the test suite on its own.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

FENCE = re.compile(r"^(```|~~~).*?^\1[^\S\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
# [text](target) and ![alt](target), the target optionally in <...> and followed by a "title"
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]*)>|([^)\s]*))(?:\s+[\"'][^)]*)?\s*\)")
# [id]: target (reference definitions)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


def links(text):
    """Every link target in Markdown text, outside fenced code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return [m.group(1) or m.group(2) for m in INLINE.finditer(text)] + [m.group(1) for m in REFERENCE.finditer(text)]


def broken_links(page):
    """The relative link targets of `page` that name no existing file or folder."""
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path or EXTERNAL.match(target):  # an anchor on the same page, or a URL
            continue
        if not (page.parent / path).exists():
            broken.append(target)
    return broken


def test_the_docs_have_pages():
    assert (DOCS / "index.md").is_file()
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(page):
    assert broken_links(page) == []


def test_every_docs_path_the_readme_names_exists():
    named = set(re.findall(r"\bdocs/[\w./-]*", (ROOT / "README.md").read_text(encoding="utf-8")))
    assert named, "README.md names no docs/ path"
    missing = sorted(p for p in named if not (ROOT / p.rstrip(".")).exists())
    assert missing == []


def test_every_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s*-\s+(?:[^\n:]+:\s+)?(\S+\.md)\s*$", nav, re.M))
    missing = sorted(str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in listed)
    assert missing == []


def test_the_link_finder_sees_links_and_skips_code():
    text = ("[a](a.md) ![b](img/b.png) [c](<c d.md> \"t\") [e](https://x.org/e.md) [f](#anchor)\n"
            "`[g](g.md)`\n```\n[h](h.md)\n```\n[i]: i.md\n")
    assert links(text) == ["a.md", "img/b.png", "c d.md", "https://x.org/e.md", "#anchor", "i.md"]


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "there.md").write_text("# there\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#top) [gone](gone.md) [up](../nowhere/x.md) [web](https://example.org)\n")
    assert broken_links(page) == ["gone.md", "../nowhere/x.md"]
