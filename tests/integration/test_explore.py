"""Issue 31: `infogan explore` in a real headless Chromium (Debian's, driven by
Playwright; no browser download), on a checkpoint the real trainer writes in the layout
`make train` leaves (runs/quickstart, data.eval_shards relative to where it ran): moving
a slider and picking a category change the image, and the page's "reproduce" command
writes the same PNG, byte for byte; a checkpoint saved while the page is open appears in
its picker; bad values get a one-line 400; the server binds 127.0.0.1 by default; what is
not a complete checkpoint is refused in one line."""

from __future__ import annotations

import base64
import os
import queue
import shlex
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import VENV_BIN, launch_env, make_shards, train

pytestmark = pytest.mark.integration

INFOGAN = str(VENV_BIN / "infogan")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
START_S = 180  # torch's import and the first load, on a loaded 2-core machine
WAIT_MS = 60_000  # one page update (a request, a PNG), under the same load


class Explore:
    """`infogan explore ARGS` in `cwd`, its output read by a thread (no blocking read)."""

    def __init__(self, cwd: Path, *args: str):
        self.proc = subprocess.Popen([INFOGAN, "explore", *args], cwd=cwd, env=launch_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def url(self) -> str:
        """The address it prints once it serves (fails if it exits first)."""
        while True:
            try:
                line = self.lines.get(timeout=START_S)
            except queue.Empty:
                pytest.fail(f"infogan explore printed no address in {START_S} s: {self.seen}")
            if line is None:
                pytest.fail(f"infogan explore exited {self.proc.wait()}: {''.join(self.seen)}")
            self.seen.append(line)
            if "serving http://" in line:
                return line.split("serving ", 1)[1].split()[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the server stops as on Ctrl-C
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    """A directory laid out as after `make train`: runs/quickstart from the real trainer
    (configs/smoke.yaml, 10 steps on 256 digits, an EMA generator), and the labelled
    shards its config names relative to that directory (data/fashion_mnist/test)."""
    root = tmp_path_factory.mktemp("explore")
    shards = make_shards(root / "digits", limit=256, shard_size=64)
    (root / "data" / "fashion_mnist").mkdir(parents=True)
    (root / "data" / "fashion_mnist" / "test").symlink_to(shards)
    train("launch/cpu.yaml", "configs/smoke.yaml", f"data.shards={shards}",
          "data.eval_shards=data/fashion_mnist/test", f"run.output_dir={root / 'runs'}",
          "run.name=quickstart", "train.max_steps=10", "model.ema_half_life_images=100")
    return root


@pytest.fixture(scope="module")
def server(quickstart):
    """`infogan explore runs/quickstart` as after `make train`, on a free port."""
    explore = Explore(quickstart, "runs/quickstart", "--port", "0")
    try:
        explore.address = explore.url()
        yield explore
    finally:
        explore.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        # bypass_csp: Playwright's waits evaluate their predicates, which the page's
        # Content-Security-Policy (no eval) would refuse
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            bypass_csp=True, viewport={"width": 1280, "height": 820})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture()
def page(browser, server):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.address)
    settle(page)
    yield page
    page.close()
    assert not errors, errors


def settle(page) -> None:
    """Until the page shows the image, traversal and commands of its current controls."""
    page.wait_for_function(
        "() => window.explore && explore.state.info && explore.busy === 0"
        " && explore.shown === imageQuery() && explore.reproduced === explore.shown"
        " && explore.traversalShown === traversalQuery()"
        " && explore.traversalReproduced === explore.traversalShown", timeout=WAIT_MS)


def shown_png(page) -> bytes:
    """The bytes of the image on the page (the blob its <img> shows)."""
    b64 = page.evaluate("""async () => {
        const bytes = new Uint8Array(await explore.blob.arrayBuffer());
        let s = ""; for (const b of bytes) s += String.fromCharCode(b);
        return btoa(s); }""")
    return base64.b64decode(b64)


def run_command(command: str, cwd: Path) -> Path:
    """The page's `infogan sample ...` line, run as a user would paste it (in `cwd`)."""
    words = shlex.split(command)
    assert words[:2] == ["infogan", "sample"], command
    r = subprocess.run([INFOGAN, *words[1:]], cwd=cwd, env=launch_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd / words[words.index("--out") + 1]


def test_slider_and_category_change_the_image_and_reproduce_is_bitwise(page, tmp_path):
    first = shown_png(page)
    page.locator("#code-c2").fill("1.37")  # a slider move (input event)
    settle(page)
    moved = shown_png(page)
    assert moved != first
    page.select_option("#code-c1", "3")
    settle(page)
    picked = shown_png(page)
    assert picked != moved
    command = page.locator("#command").text_content()
    assert "--fix c1=3" in command and "--fix c2=1.37" in command
    assert run_command(command, tmp_path).read_bytes() == picked
    # the traversal of c1 (all categories) and its command, with the raw generator
    page.select_option("#sweep", "c1")
    page.locator("#ema").uncheck()
    settle(page)
    assert shown_png(page) != picked  # the raw G draws another image than its EMA
    command = page.locator("#traversal-command").text_content()
    assert "--sweep c1=all" in command and "--raw-generator" in command
    traversal = page.evaluate("""async () => {
        const r = await fetch(document.getElementById('traversal').src);
        const bytes = new Uint8Array(await r.arrayBuffer());
        let s = ""; for (const b of bytes) s += String.fromCharCode(b);
        return btoa(s); }""")
    assert run_command(command, tmp_path).read_bytes() == base64.b64decode(traversal)


def test_categories_are_named_from_the_runs_eval_shards(page):
    """runs/quickstart's data.eval_shards is relative to where training ran; the
    categories of c1 get the labels of infogan eval's mapping."""
    page.wait_for_function("() => explore.state.info.labels.status !== 'pending'",
                           timeout=WAIT_MS)
    note = page.locator("#labels-note").text_content()
    assert "on 256 images of data/fashion_mnist/test" in note, note
    options = page.locator("#code-c1 option").all_text_contents()
    assert len(options) == 10 and all("\u2192 label " in o for o in options), options


def test_a_new_checkpoint_appears_in_the_picker(page, quickstart):
    """As a running training saves one: written beside, renamed into checkpoints/."""
    root = quickstart / "runs" / "quickstart" / "checkpoints"
    tmp = root / ".tmp-step-00000020"
    shutil.copytree(root / "step-00000010", tmp)
    os.replace(tmp, root / "step-00000020")
    try:
        page.wait_for_function("() => explore.checkpoints.includes('step-00000020')",
                               timeout=WAIT_MS)
        page.select_option("#ckpt", "step-00000020")
        settle(page)
        assert "step-00000020" in page.locator("#command").text_content()
    finally:
        shutil.rmtree(root / "step-00000020")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


GOOD = "ckpt=step-00000010&gen=ema&seed=1&c1=2&c2=0.5&c3=-0.5"


@pytest.mark.parametrize("path,status,reason", [
    (f"/api/image?{GOOD}", 200, ""),
    (f"/api/image?{GOOD.replace('c1=2', 'c1=10')}", 400, "c1=10 is out of range (0..9)"),
    (f"/api/image?{GOOD.replace('c2=0.5', 'c2=nan')}", 400, "c2='nan' is not a finite"),
    (f"/api/image?{GOOD.replace('c3=-0.5', 'c3=-7')}", 400, "c3=-7 is out of range"),
    (f"/api/image?{GOOD.replace('seed=1', 'seed=x')}", 400, "seed='x' is not an integer"),
    (f"/api/image?{GOOD.replace('step-00000010', '..%2F..%2Fetc')}", 400,
     "unknown checkpoint '../../etc'"),
    (f"/api/traversal?{GOOD}&sweep=c2&rows=99&cols=5&span=2", 400, "rows=99 is out of range"),
    (f"/api/reproduce?view=nope&{GOOD}", 400, "expected view=image or view=traversal"),
    ("/api/info?ckpt=%2Fetc", 400, "unknown checkpoint '/etc'"),
    ("/static/../../../etc/passwd", 404, "no such page"),
    ("/static/app.js/..%2F__init__.py", 404, "no such page"),
])
def test_bad_requests_get_a_one_line_reason(server, path, status, reason):
    code, body = get(server.address.rstrip("/") + path)
    assert code == status, body
    if reason:
        assert reason in body and "\n" not in body.strip()


def test_binds_127_0_0_1_unless_told(server, quickstart):
    assert "(bound to 127.0.0.1: this machine only" in "".join(server.seen)
    port = int(server.address.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=30):
        pass
    # 127.0.0.2 is this machine too, but not the address bound
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.2", port),
                                                                         timeout=30):
        pass


def test_refuses_an_incomplete_checkpoint_in_one_line(quickstart, tmp_path):
    broken = tmp_path / "step-00000010"
    shutil.copytree(quickstart / "runs/quickstart/checkpoints/step-00000010", broken)
    (broken / "COMPLETE").unlink()
    r = subprocess.run([INFOGAN, "explore", str(broken), "--port", "0"], capture_output=True,
                       text=True, timeout=300, env=launch_env())
    assert r.returncode == 2
    assert r.stderr.strip() == (f"infogan explore: error: {broken} is not a complete checkpoint"
                                " (no COMPLETE marker) nor a run directory (no checkpoints/); "
                                "pass a run directory (runs/NAME) or a complete checkpoint "
                                "(runs/NAME/checkpoints/step-N)")


def test_a_port_in_use_is_one_line_and_the_process_ends(server, quickstart):
    """Exit 2 with one line, and no worker left behind that keeps the process alive."""
    port = server.address.rsplit(":", 1)[1].strip("/")
    r = subprocess.run([INFOGAN, "explore", "runs/quickstart", "--port", port], cwd=quickstart,
                       capture_output=True, text=True, timeout=START_S, env=launch_env())
    assert r.returncode == 2
    assert r.stderr.strip() == (f"infogan explore: error: --host 127.0.0.1 --port {port}: the "
                                "address is in use; pass another --port (0: any free one)")
