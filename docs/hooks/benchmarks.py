"""MkDocs hook: docs/benchmarks/index.md shows the results tables of BENCHMARKS.md (the
repository root's file is the one source), with its links made relative to that page."""

from __future__ import annotations

import re
from pathlib import Path

MARKER = "<!-- include BENCHMARKS.md -->"
ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relink(markdown: str) -> str:
    """Links written from the repository root (docs/benchmarks/X, docs/Y) made relative
    to docs/benchmarks/; any other link is left as it is, for strict mode to check."""

    def fix(m: re.Match) -> str:
        target = m.group(1)
        if target.startswith("docs/benchmarks/"):
            target = target.removeprefix("docs/benchmarks/")
        elif target.startswith("docs/"):
            target = "../" + target.removeprefix("docs/")
        return f"]({target})"

    return LINK.sub(fix, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != "benchmarks/index.md" or MARKER not in markdown:
        return markdown
    text = (ROOT / "BENCHMARKS.md").read_text()
    body = text.split("\n", 1)[1] if text.startswith("# ") else text  # the page has a title
    return markdown.replace(MARKER, relink(body))
