r"""Start-up and latency of `infogan explore` and the CLI (issue 31's targets), as a table.

    slider -> image   p50 / p95 over --moves slider moves in headless Chromium, measured
                      by the page (input event -> decoded <img>): p50 <= 50 ms
    start -> image    `infogan explore` spawned -> its first PNG over HTTP: <= 5 s
    --help            `infogan --help`, wall: <= 1 s
    import trainer    CPU seconds (user + sys) of `python -c "import infogan_dist.trainer"`:
                      <= 4 s

Without --checkpoint it writes a checkpoint of configs/mnist.yaml's networks (fresh
weights: the cost of a forward does not depend on them) into a temporary directory.
Run it on an idle machine (numbers taken under load say nothing):

    .venv/bin/python benchmarks/explore_speed.py
    .venv/bin/python benchmarks/explore_speed.py --checkpoint runs/mnist --moves 200 \
        --repeats 5 --json runs/explore_speed.json

Needs Debian's chromium (launch/setup.sh) and playwright (the dev extra).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def fresh_checkpoint(config: Path, out: Path) -> Path:
    """A complete checkpoint directory of `config`'s networks with fresh weights."""
    import torch
    from safetensors.torch import save_file

    from infogan_dist.checkpoint import COMPLETE, STATE_FILE
    from infogan_dist.config import load_config, save_config
    from infogan_dist.latent import LatentSpace
    from infogan_dist.models import build_models

    cfg = load_config(config)
    space = LatentSpace(cfg.latent)
    shape = (1, 28, 28)
    torch.manual_seed(0)
    G, D = build_models(cfg.model, space.input_dim, space.q_dim, shape)
    path = out / "checkpoints" / "step-00000001"
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    for name, m in (("generator", G), ("generator_ema", G), ("model_1", D)):
        save_file({k: v.contiguous() for k, v in m.state_dict().items()},
                  str(path / f"{name}.safetensors"))
    (path / STATE_FILE).write_text(json.dumps({
        "step": 1, "image_shape": list(shape), "latent": dataclasses.asdict(cfg.latent),
        "model": dataclasses.asdict(cfg.model)}))
    (path / COMPLETE).write_text("step 1\n")
    return out


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def child_cpu_seconds(cmd: list[str]) -> float:
    """user + sys CPU seconds of one child process run to the end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def wall_seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def start_explore(target: Path) -> tuple[subprocess.Popen, str, float, float]:
    """(process, address, seconds to its 'serving' line, seconds to its first PNG)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "infogan"), "explore", str(target), "--port", "0",
                             "--eval-images", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "serving http://" in line:
            break
    else:
        raise SystemExit(f"infogan explore exited {proc.wait()} before serving")
    serving = time.perf_counter() - t0
    address = line.split("serving ", 1)[1].split()[0]
    with urllib.request.urlopen(address + "api/checkpoints") as r:
        ckpt = json.load(r)["default"]
    with urllib.request.urlopen(address + "api/info?ckpt=" + ckpt) as r:
        codes = json.load(r)["codes"]
    query = "&".join([f"ckpt={ckpt}", "gen=ema", "seed=0"] + [f"{c['name']}=0" for c in codes])
    with urllib.request.urlopen(address + "api/image?" + query) as r:
        assert r.read(8) == b"\x89PNG\r\n\x1a\n"
    return proc, address, serving, time.perf_counter() - t0


def slider_latencies(address: str, moves: int) -> list[float]:
    """ms from each slider input event to its decoded image, as the page measures it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True,
            bypass_csp=True)
        try:
            page = ctx.new_page()
            page.goto(address)
            page.wait_for_function("() => window.explore && explore.shown && explore.busy === 0")
            slider = page.locator("input[type=range]").first
            page.evaluate("() => { explore.timings = []; }")
            for i in range(moves):
                slider.fill(f"{-2 + 4 * ((i * 37) % 101) / 100:.2f}")
                page.wait_for_function(f"() => explore.timings.length >= {i + 1}"
                                       " && explore.shown === imageQuery()")
            return page.evaluate("explore.timings")
        finally:
            ctx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="run directory or checkpoint (default: fresh configs/mnist.yaml nets)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist.yaml",
                    help="networks of the fresh checkpoint (default configs/mnist.yaml)")
    ap.add_argument("--moves", type=int, default=200, help="slider moves (default 200)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="runs of each start-up measurement; the median is shown (default 5)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    env_note = f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory() as tmp:
        target = args.checkpoint or fresh_checkpoint(args.config, Path(tmp) / "run")
        starts, servings = [], []
        for r in range(args.repeats):
            proc, address, serving, first = start_explore(target)
            try:
                if r == args.repeats - 1:
                    timings = slider_latencies(address, args.moves)
            finally:
                proc.terminate()
                proc.wait()
            starts.append(first)
            servings.append(serving)
    helps = [wall_seconds([str(BIN / "infogan"), "--help"]) for _ in range(args.repeats)]
    imports = [child_cpu_seconds([sys.executable, "-c", "import infogan_dist.trainer"])
               for _ in range(args.repeats)]
    rows = [
        ("slider -> image p50 (ms)", percentile(timings, 50), "<= 50"),
        ("slider -> image p95 (ms)", percentile(timings, 95), "-"),
        ("explore start -> serving (s)", statistics.median(servings), "-"),
        ("explore start -> first image (s)", statistics.median(starts), "<= 5"),
        ("infogan --help (s, wall)", statistics.median(helps), "<= 1"),
        ("import infogan_dist.trainer (CPU s)", statistics.median(imports), "<= 4"),
    ]
    print(f"infogan explore speed: {target}; {args.moves} moves, median of {args.repeats} "
          f"starts; {env_note}")
    print(f"{'measure':<38}{'value':>10}  target")
    for name, value, target_text in rows:
        print(f"{name:<38}{value:>10.3f}  {target_text}")
    if args.json:
        args.json.write_text(json.dumps({
            "moves": args.moves, "repeats": args.repeats, "timings_ms": timings,
            "starts_s": starts, "servings_s": servings, "help_s": helps,
            "import_trainer_cpu_s": imports, "machine": env_note}) + "\n")


if __name__ == "__main__":
    main()
