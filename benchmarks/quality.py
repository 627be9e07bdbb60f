r"""Quality benchmark: does c1 learn the digits, seed after seed?

For each seed it runs the real trainer as a subprocess, then `infogan eval --json` on the
final checkpoint, and prints one row per seed (c1's unsupervised accuracy and MI bound,
steps, training and wall time, device, time to 95% when the run logged eval/acc/c1), the
median accuracy and the number of seeds that reach 95% (the paper's 5% error), and per
seed and label the share of the label's images in c1's category mapped to it.

The full benchmark (5 seeds of configs/mnist.yaml on the 10k real MNIST digits; on a
CPU, --parallel 2 trains two seeds at a time, one thread each):

    .venv/bin/python benchmarks/quality.py --config configs/mnist.yaml --seeds 5 \\
        --shards data/mnist/test10k --launch launch/gpu.yaml log.eval_every=250

FID (issue 14): --features DIR (from `infogan train-features`) adds the FID and KID of
each seed's final generator on those features against --fid-data (default: the eval
data): the EMA generator (when the run has model.ema_half_life_images > 0) and the raw
one (--raw-generator). These FIDs are on the scale of the project's own MNIST features,
not comparable with Inception FIDs of papers. 5 seeds (configs/mnist.yaml has the EMA on):

    .venv/bin/infogan train-features --data data/mnist/test10k --out features/mnist --epochs 10
    .venv/bin/python benchmarks/quality.py --config configs/mnist.yaml --seeds 5 \
        --shards data/mnist/test10k --features features/mnist

Held-out protocol (train without labels on the first 5,000 of the 10,000 digits, score
accuracy and FID on the other 5,000; test10k holds 10 shards of 1,000, so a brace
pattern selects each half):

    .venv/bin/python benchmarks/quality.py --config configs/mnist.yaml --seeds 5 \
        --shards 'data/mnist/test10k/shard-{000000..000004}.tar' \
        --eval-data 'data/mnist/test10k/shard-{000005..000009}.tar' \
        --features features/mnist

(train the feature network on the held-out half too, or on Fashion-MNIST's own labels
for Fashion-MNIST, so that the features never saw the training images).

--reuse scores again, without training, every seed whose run under --out already has its
final checkpoint (to print the table after adding seeds, or after an interruption).

A quick check that it works (one seed, 50 steps, on a few hundred digits):

    .venv/bin/python benchmarks/quality.py --config configs/mnist.yaml --seeds 1 \\
        --steps 50 --shards /tmp/digits --launch launch/cpu.yaml --eval-limit 512

Each seed trains `run.seed=S run.name=quality-S` under --out (default
runs/quality-<date-time>) with `train.resume=none log.wandb=off log.progress=false`
before the extra key=value overrides (which win). The training log of each seed is
`OUT/quality-S.log`; the table also goes to `OUT/quality.json`.
Exit status: 0 when every seed trained and was scored, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infogan_dist.checkpoint import list_checkpoints  # noqa: E402
from infogan_dist.choices import load_config  # noqa: E402

THRESHOLD = 0.95


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch() -> list[str]:
    exe = Path(sys.executable).parent / "accelerate"
    if exe.exists():
        return [str(exe), "launch"]
    return [sys.executable, "-m", "accelerate.commands.launch"]


def train_cmd(args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    cmd = [*accelerate_launch(), "--config_file", str(args.launch),
           "--main_process_port", str(free_port()), str(ROOT / "train.py"),
           "--config", str(args.config), f"run.seed={seed}", f"run.name=quality-{seed}",
           f"run.output_dir={out}", "train.resume=none", "log.wandb=off", "log.progress=false"]
    if args.steps is not None:
        cmd.append(f"train.max_steps={args.steps}")
    if args.shards is not None:
        cmd.append(f"data.shards={args.shards}")
    return cmd + list(args.overrides)


def eval_cmd(args: argparse.Namespace, checkpoint: Path, raw: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "infogan_dist.cli", "eval", "--checkpoint", str(checkpoint),
           "--json"]
    if args.eval_data:
        cmd += ["--data", str(args.eval_data)]
    if args.eval_limit:
        cmd += ["--limit", str(args.eval_limit)]
    if raw:
        cmd.append("--raw-generator")
    return cmd


def fid_cmd(args: argparse.Namespace, checkpoint: Path, raw: bool) -> list[str]:
    """FID/KID of the EMA (or, raw, the trained) generator; the codes with few samples."""
    cmd = [sys.executable, "-m", "infogan_dist.cli", "eval", "--checkpoint", str(checkpoint),
           "--json", "--no-pictures", "--samples", "16", "--limit", "16", "--fid",
           "--features", str(args.features), "--fid-samples", str(args.fid_samples),
           "--data", str(args.fid_data or args.eval_data or args.shards or
                         load_config(args.config).data.shards)]
    return cmd + (["--raw-generator"] if raw else [])


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash
    return rows


def training_seconds(rows: list[dict[str, Any]], upto: int | None = None) -> float | None:
    """Seconds of training up to step `upto` (all when None): from timestamps ("time",
    unix seconds) when the rows have them, else the sum of perf/s_per_step over the
    steps of each log interval. None when neither is logged."""
    rows = sorted(rows, key=lambda r: r.get("step", 0))
    if upto is None and rows:
        upto = rows[-1].get("step", 0)
    stamped = [r for r in rows if isinstance(r.get("time"), (int, float))]
    if len(stamped) >= 2:
        before = [r for r in stamped if r["step"] <= upto]
        if not before:
            return None
        first = stamped[0]  # its stamp closes the first interval: add that one's time
        lead = first.get("perf/s_per_step", 0.0) * first["step"]
        return before[-1]["time"] - first["time"] + lead
    total, prev, seen = 0.0, 0, False
    for r in rows:
        if "perf/s_per_step" not in r:
            continue
        step = r["step"]
        if step > upto:  # a part of this interval: its rate times the missing steps
            total += r["perf/s_per_step"] * (upto - prev)
            return total
        total += r["perf/s_per_step"] * (step - prev)
        prev, seen = step, True
    return total if seen else None


def time_to_threshold(
    rows: list[dict[str, Any]], global_batch: int, key: str = "eval/acc/c1",
    threshold: float = THRESHOLD,
) -> dict[str, Any] | None:
    """The first logged step where `key` >= threshold: {step, images, seconds, value};
    None when `key` was never logged; {"step": None} when it never got there."""
    rows = sorted(rows, key=lambda r: r.get("step", 0))
    scored = [r for r in rows if key in r]
    if not scored:
        return None
    for r in scored:
        if r[key] >= threshold:
            step = r["step"]
            images = next((x["progress/images_seen"] for x in rows
                           if x.get("step") == step and "progress/images_seen" in x),
                          step * global_batch)
            return {"step": step, "images": int(images), "seconds": training_seconds(rows, step),
                    "value": r[key]}
    return {"step": None, "images": None, "seconds": None, "value": max(r[key] for r in scored)}


def thread_env(parallel: int) -> dict[str, str]:
    """Environment of one training process when `parallel` share this machine's cores:
    each gets its share of threads (on 2 cores, two 1-thread runs give about 15% more
    images/s in total than one 2-thread run; docs/benchmarks/2026-11-27-mnist-quality.md)."""
    env = dict(os.environ)
    if parallel > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def run_seed(
    args: argparse.Namespace, seed: int, out: Path, global_batch: int, max_steps: int
) -> dict:
    result: dict[str, Any] = {"seed": seed}
    log = out / f"quality-{seed}.log"
    run_dir = out / f"quality-{seed}"
    good, _ = list_checkpoints(run_dir)
    if args.reuse and good and good[-1].name == f"step-{max_steps:08d}":
        print(f"[seed {seed}] reusing {good[-1]}", flush=True)
        rc, result["reused"] = 0, True
        result["wall_s"] = training_seconds(read_metrics(run_dir / "metrics.jsonl")) or 0.0
    else:
        cmd = train_cmd(args, seed, out)
        print(f"[seed {seed}] {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env=thread_env(args.parallel)).returncode
        result["wall_s"] = time.perf_counter() - t0
    text = log.read_text(errors="replace") if log.exists() else ""
    m = re.search(r"training \S+ on (\S+), (\d+) process", text)
    result["device"] = f"{m.group(1)} x{m.group(2)}" if m else "?"
    if rc != 0:
        tail = " | ".join(text.strip().splitlines()[-3:])
        result["error"] = f"training exited {rc} (see {log}): {tail}"
        return result
    good, _ = list_checkpoints(run_dir)
    if not good:
        result["error"] = f"no complete checkpoint in {run_dir}"
        return result
    rows = read_metrics(run_dir / "metrics.jsonl")
    result["train_s"] = training_seconds(rows)
    result["t95"] = time_to_threshold(rows, global_batch)
    r = subprocess.run(eval_cmd(args, good[-1]), cwd=ROOT, capture_output=True, text=True,
                       env=thread_env(args.parallel))
    if r.returncode != 0:
        result["error"] = f"infogan eval exited {r.returncode}: {r.stderr.strip()[-500:]}"
        return result
    report = json.loads(r.stdout)
    c1 = report["codes"].get("c1", {})
    result |= {"checkpoint": report["checkpoint"], "steps": report["step"],
               "accuracy": c1.get("accuracy"), "mi": c1.get("mi"),
               "eval_images": report["images"], "generator": report.get("generator")}
    if "confusion" in c1:
        result["per_class"] = per_class(c1["confusion"], c1["mapping"])
    if args.features:
        has_ema = (good[-1] / "generator_ema.safetensors").is_file()
        for label, raw in (("ema", False), ("raw", True)) if has_ema else (("raw", True),):
            r = subprocess.run(fid_cmd(args, good[-1], raw), cwd=ROOT, capture_output=True,
                               text=True, env=thread_env(args.parallel))
            if r.returncode != 0:
                result["error"] = f"infogan eval --fid exited {r.returncode}: {r.stderr[-500:]}"
                return result
            fid = json.loads(r.stdout)
            result[f"fid_{label}"], result[f"kid_{label}"] = fid["fid"], fid["kid"]
    return result


def per_class(confusion: list[list[int]], mapping: list[int | None]) -> list[float | None]:
    """For each label, the share of its images that c1 puts in the category mapped to it
    (the recall behind the accuracy; confusion[k][l] counts category k, label l). None for
    a label with no images in the eval data."""
    labels = len(confusion[0]) if confusion else 0
    hits = [0] * labels
    for k, label in enumerate(mapping):
        if label is not None:
            hits[label] = confusion[k][label]
    totals = [sum(row[label] for row in confusion) for label in range(labels)]
    return [h / t if t else None for h, t in zip(hits, totals, strict=True)]


def format_per_class(results: list[dict[str, Any]]) -> str:
    """Per seed and label: per_class() of c1 (empty when no seed has a confusion)."""
    rows = [r for r in results if r.get("per_class")]
    if not rows:
        return ""
    n = max(len(r["per_class"]) for r in rows)
    head = f"{'seed':>4} " + " ".join(f"{label:>5}" for label in range(n))
    lines = ["per label: share of its images in the category mapped to it (c1)", head,
             "-" * len(head)]
    for r in rows:
        lines.append(f"{r['seed']:>4} " + " ".join(f"{_fmt(v, '.3f'):>5}"
                                                    for v in r["per_class"]))
    return "\n".join(lines)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(results: list[dict[str, Any]]) -> str:
    head = (f"{'seed':>4} {'acc c1':>7} {'MI c1':>7} {'FID ema':>8} {'FID raw':>8} "
            f"{'steps':>6} {'train s':>8} "
            f"{'wall s':>7} {'device':<9} {'95% at step':>11} {'images':>8} {'s':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['seed']:>4} FAILED: {r['error']}")
            continue
        t = r.get("t95") or {}
        step95 = "n/a" if not t else ("never" if t.get("step") is None else str(t["step"]))
        lines.append(
            f"{r['seed']:>4} {_fmt(r['accuracy'], '.4f'):>7} {_fmt(r['mi'], '.3f'):>7} "
            f"{_fmt(r.get('fid_ema'), '.3f'):>8} {_fmt(r.get('fid_raw'), '.3f'):>8} "
            f"{_fmt(r['steps'], 'd'):>6} {_fmt(r.get('train_s'), '.1f'):>8} "
            f"{r['wall_s']:>7.1f} {r['device']:<9} {step95:>11} "
            f"{_fmt(t.get('images'), 'd'):>8} {_fmt(t.get('seconds'), '.1f'):>7}")
    scored = [r["accuracy"] for r in results if r.get("accuracy") is not None]
    if scored:
        good = sum(a >= THRESHOLD for a in scored)
        lines += ["", f"median accuracy of c1: {statistics.median(scored):.4f} over "
                      f"{len(scored)} seed(s); seeds >= {THRESHOLD:.0%}: {good}/{len(results)}"]
    for label in ("ema", "raw"):
        fids = [r[f"fid_{label}"] for r in results if r.get(f"fid_{label}") is not None]
        if fids:
            lines.append(f"median FID ({label} generator, own features): "
                         f"{statistics.median(fids):.3f} over {len(fids)} seed(s)")
    if results and all(not r.get("t95") for r in results if "error" not in r):
        lines.append("time to 95%: n/a (no eval/acc/c1 in metrics.jsonl; the trainer logs it "
                     "with log.eval_every=N)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="training config (YAML)")
    p.add_argument("--seeds", type=int, default=5, help="seeds first-seed .. first-seed+N-1")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="train.max_steps (default: config)")
    p.add_argument("--shards", default=None, help="data.shards (default: config)")
    p.add_argument("--launch", type=Path, default=ROOT / "launch" / "cpu.yaml",
                   help="accelerate launch config (default launch/cpu.yaml)")
    p.add_argument("--out", type=Path, default=None,
                   help="parent of the runs (default runs/quality-<date-time>)")
    p.add_argument("--eval-data", default=None, help="infogan eval --data (default: config)")
    p.add_argument("--eval-limit", type=int, default=None, help="infogan eval --limit")
    p.add_argument("--features", default=None,
                   help="FID/KID features (a train-features dir, or inception): adds FID of "
                        "the EMA and the raw generator per seed")
    p.add_argument("--fid-data", default=None,
                   help="real images of FID (default: --eval-data, else --shards / config)")
    p.add_argument("--fid-samples", type=int, default=10_000, help="generated images per FID")
    p.add_argument("--reuse", action="store_true",
                   help="score, without training again, a seed whose run under --out already "
                        "has its final checkpoint (wall s is then its training time)")
    p.add_argument("--parallel", type=int, default=1,
                   help="seeds trained at once, sharing the CPU cores (default 1)")
    p.add_argument("overrides", nargs="*", help="extra section.key=value for every seed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seeds < 1 or args.parallel < 1:
        print("error: --seeds and --parallel must be >= 1", file=sys.stderr)
        return 2
    extra = list(args.overrides)
    if args.steps is not None:
        extra.append(f"train.max_steps={args.steps}")
    try:  # the same validation the trainer runs, before any launch
        cfg = load_config(args.config, extra)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or ROOT / "runs" / time.strftime("quality-%Y%m%d-%H%M%S")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    def one(seed: int) -> dict[str, Any]:
        r = run_seed(args, seed, out, cfg.train.global_batch_size, cfg.train.max_steps)
        print(f"[seed {seed}] " + (r["error"] if "error" in r else
              f"accuracy {r['accuracy']:.4f}, MI {r['mi']:.3f} after {r['steps']} steps, "
              f"{r['wall_s']:.0f} s"), flush=True)
        return r

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:  # threads only wait
        results = list(pool.map(one, seeds))
    (out / "quality.json").write_text(json.dumps(results, indent=1))
    print()
    print(format_table(results))
    if per := format_per_class(results):
        print("\n" + per)
    print(f"\nruns, logs and quality.json in {out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
