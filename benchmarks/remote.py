"""Remote shards against local ones, on this machine: a real SeaweedFS (S3) and a real
nginx (HTTP, Range) on 127.0.0.1, started here the way the tests start them.

    .venv/bin/python benchmarks/remote.py --shards data/fashion_mnist/train --repeats 3
    .venv/bin/python benchmarks/remote.py --shards data/fashion_mnist/train --skip-loader \\
        --train-config configs/mnist.yaml --train-steps 30

Loader (benchmarks/loader.py, stream mode, 0 workers, batch 128): local, s3, http, s3 with
a warm node cache; then training throughput (benchmarks/train.py, stream mode) with
data.shards local vs s3://. Every variant runs in its own process, the variants are
interleaved `--repeats` times (order effects), and the median and the spread are printed
with each median's ratio to local. Run it on an idle machine only.

    git worktree add /tmp/base <commit>
    .venv/bin/python benchmarks/remote.py --shards data/mnist/test10k --baseline /tmp/base

--baseline DIR: also runs the loader variants local, s3 and http with the infogan_dist
package of another checkout (PYTHONPATH=DIR), interleaved with this tree's: an A/B of a
reader change, measured side by side.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.remote_servers import Nginx, SeaweedS3  # noqa: E402

PY = sys.executable


def rate(cmd: list[str], env: dict[str, str], pattern: str) -> float:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    m = re.search(pattern, r.stdout)
    if not m:
        raise SystemExit(f"no rate in the output of {' '.join(cmd)}:\n{r.stdout[-2000:]}")
    return float(m.group(1).replace(",", ""))


def table(title: str, runs: dict[str, list[float]], base: str) -> None:
    print(f"\n{title}\n| variant | images/s (median) | runs | vs {base} |")
    print("| --- | ---: | --- | ---: |")
    b = statistics.median(runs[base])
    for k, v in runs.items():
        m = statistics.median(v)
        print(f"| {k} | {m:,.0f} | {', '.join(f'{x:,.0f}' for x in v)} | {m / b:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", default="data/fashion_mnist/train", help="local shard dir")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="loader: timed seconds a run")
    p.add_argument("--skip-loader", action="store_true")
    p.add_argument("--train-config", default="", help="also time training (stream mode)")
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--baseline", default="", help="another checkout: A/B of the loader")
    args = p.parse_args()
    local = (ROOT / args.shards).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s3 = SeaweedS3(tmp / "s3")
        s3.start()
        www = tmp / "www"
        shutil.copytree(local, www / "shards")
        nginx = Nginx(www, tmp / "nginx")
        try:
            env = {**os.environ, **s3.env()}
            sources = {"local": str(local), "s3": s3.upload_dir(local, "shards"),
                       "http": f"{nginx.url}/shards"}
            if not args.skip_loader:
                loader = [PY, "benchmarks/loader.py", "--mode", "stream", "--workers", "0",
                          "--batch", "128", "--seconds", str(args.seconds), "--device", "cpu"]
                cache = tmp / "cache"
                names = ["local", "s3", "http", "s3 warm cache"]
                if args.baseline:
                    names += ["baseline local", "baseline s3", "baseline http"]
                runs: dict[str, list[float]] = {k: [] for k in names}
                # fill the cache once, so "warm" is warm in every cycle
                rate([*loader, "--shards", sources["s3"], "--cache-dir", str(cache)], env,
                     r"([\d,.]+) images/s")
                for _ in range(args.repeats):
                    for name in runs:
                        src = sources[name.split()[-1] if "baseline" in name
                                      else name.split()[0]]
                        extra = ["--cache-dir", str(cache)] if "cache" in name else []
                        tree = ({"PYTHONPATH": str(Path(args.baseline).resolve())}
                                if "baseline" in name else {})
                        runs[name].append(rate([*loader, "--shards", src, *extra],
                                               {**env, **tree}, r"([\d,.]+) images/s"))
                table("Loader, stream mode, 0 workers, batch 128", runs, "local")
                if args.baseline:
                    table(f"The same with {args.baseline} (baseline)",
                          {k: v for k, v in runs.items() if "baseline" in k}, "baseline local")
            if args.train_config:
                train: dict[str, list[float]] = {"local": [], "s3": []}
                for _ in range(args.repeats):
                    for name in train:
                        train[name].append(rate(
                            [PY, "benchmarks/train.py", "--config", args.train_config,
                             "--steps", str(args.train_steps), "--warmup", "5", "--repeats",
                             "1", "--sources", "stream", f"data.shards={sources[name]}",
                             "log.eval_every=0"],
                            env, r"\| stream \| ([\d.]+) \|"))
                table(f"Training {args.train_config}, stream mode, {args.train_steps} steps",
                      train, "local")
        finally:
            nginx.stop()
            s3.kill()


if __name__ == "__main__":
    main()
