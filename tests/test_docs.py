"""The docs name only files that exist: a path a newcomer reads in README.md or docs/ (in
backticks or a Markdown link) must be in the checkout. Last wave the docs named 20 files
that no longer existed (shared/trader.py, shared/registry.py, …)."""

from __future__ import annotations

import re

from tests.helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("shared/", "services/", "scheduler/", "tests/", "bench/", "deploy/", "cgroups/", "docs/",
       ".ci/")
FILES = ("Makefile", "supervisord.conf", "pyproject.toml", "requirements.lock")
# `code` spans and Markdown link targets
SPANS = re.compile(r"`([^`\n]+)`|\]\(([^)\s]+)\)")


def named_paths(text: str) -> set[str]:
    """Repository paths named in ``text``: tokens starting with a top-level folder of the
    checkout (or one of its top-level files), without globs, placeholders or arguments."""
    found = set()
    for span in SPANS.finditer(text):
        for token in re.split(r"[\s,;()]+", span.group(1) or span.group(2) or ""):
            token = token.strip("'\".:")
            token = token.split("#")[0].split("::")[0]
            if not token.startswith(TOP) and token not in FILES:
                continue
            if any(c in token for c in "*<>{}[]$%|=…") or token.endswith("-") \
                    or "NAME" in token:
                continue
            found.add(token)
    return found


def test_every_path_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        base = doc.parent
        for path in named_paths(doc.read_text()):
            if not ((REPO / path).exists() or (base / path).exists()):
                missing.append(f"{doc.relative_to(REPO)}: {path}")
    assert missing == []


def test_the_check_finds_a_path_that_does_not_exist():
    assert named_paths("see `shared/trader.py` and [x](shared/nowhere.py)") == {
        "shared/trader.py", "shared/nowhere.py"}
    assert not (REPO / "shared/trader.py").exists()
