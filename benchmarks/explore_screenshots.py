"""The screenshots of docs/explore.md, from the real page in headless Chromium.

    .venv/bin/infogan explore runs/mnist --port 8000 &
    .venv/bin/python benchmarks/explore_screenshots.py http://127.0.0.1:8000/ docs/img

Writes DIR/explore.png (the page with c1, c2 set and the traversal of c2) and
DIR/explore-categories.png (the traversal of c1: all categories over six noises).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTLED = ("() => window.explore && explore.state.info && explore.busy === 0"
           " && explore.shown === imageQuery() && explore.reproduced === explore.shown"
           " && explore.traversalShown === traversalQuery()"
           " && explore.traversalReproduced === explore.traversalShown"
           " && explore.state.info.labels.status !== 'pending'")


def main(url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", args=ARGS, headless=True,
            bypass_csp=True, viewport={"width": 1280, "height": 640})
        try:
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_function(SETTLED, timeout=300_000)
            page.locator("#seed").fill("7")
            page.locator("#seed").dispatch_event("change")
            page.select_option("#code-c1", "3")
            page.locator("#code-c2").fill("1.2")
            page.wait_for_function(SETTLED, timeout=300_000)
            page.screenshot(path=str(out / "explore.png"), full_page=True)
            page.select_option("#sweep", "c1")
            page.wait_for_function(SETTLED, timeout=300_000)
            page.locator("#traversal-view").screenshot(path=str(out / "explore-categories.png"))
        finally:
            ctx.close()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
