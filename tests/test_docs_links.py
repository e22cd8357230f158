"""The documentation's links hold: every relative link and image in README.md and docs/*.md names a
file that exists, and the README stays short enough to read in five minutes."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# README.md and docs/*.md, plus the pages beside measurement records (docs/*/README.md,
# benchmarks/results/**/README.md), whose links moved with the records.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
         *sorted((ROOT / "benchmarks" / "results").rglob("README.md"))]
README_MAX_LINES = 220

# [text](target) and ![alt](target); the target stops at whitespace or ')' (an optional "title" after
# it is ignored). Text may hold one level of brackets, e.g. [`--tile`](x.md).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def links(page: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", page.read_text()))      # code shows commands, not links
    return LINK.findall(text)


def relative_targets(page: Path) -> list[str]:
    out = []
    for target in links(page):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue                                          # http(s)://, mailto:, an anchor on the page
        out.append(target.split("#", 1)[0])
    return out


def test_the_pages_exist_and_have_links():
    assert (ROOT / "docs" / "index.md").is_file()
    assert len(relative_targets(ROOT / "README.md")) >= 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_an_existing_file(page):
    missing = [t for t in relative_targets(page) if not (page.parent / t).is_file()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_link_pattern_reads_links_and_images():
    sample = 'See [a](docs/a.md#x), ![b](img/b.png "t"), [`c`](c.md), [d](https://e.org) and `[e](f.md)`.'
    assert LINK.findall(CODE.sub("", sample)) == ["docs/a.md#x", "img/b.png", "c.md", "https://e.org"]


def test_readme_is_at_most_220_lines():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it at most {README_MAX_LINES} (guides go in docs/)"
