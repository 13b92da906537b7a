"""Every relative link in the README and docs/ leads somewhere: a file that exists, and a heading of it that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#+ (.*)$", re.M)


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_lead_to_a_file_and_heading_that_exist(page):
    broken = []
    for link in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md":
            if fragment not in {anchor(h) for h in HEADING.findall(target.read_text(encoding="utf-8"))}:
                broken.append(f"{link}: no such heading")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_anchor_is_githubs():
    assert anchor("apply_patch (V4A)") == "apply_patch-v4a"
    assert anchor("Long files: `--benchmark editeval-long`, `humanevalfix-long`") == (
        "long-files---benchmark-editeval-long-humanevalfix-long")
