"""The CPU protocol on procedural dSprites: InfoGAN and InfoGAN-CR, a few seeds each, the
four scores (FactorVAE, MIG, DCI, SAP) of every run's final checkpoint.

    .venv/bin/python benchmarks/dsprites_protocol.py --shards data/dsprites \\
        --out runs/dsprites_protocol --seeds 0,1,2 --steps 10000 --jobs 2

Per seed the two arms share their first START iterations, START = steps x 288,000 /
322,560 (the authors' share of the run before lambda_CR switches on; 8,929 of 10,000).
Until then InfoGAN-CR *is* InfoGAN: neither the term nor the CR discriminator runs, and
the run is bit for bit the run without the extension (tests/integration/
test_infogan_cr_launch.py). So one run, `prefix`, trains to START, and two copies of it
continue to `steps`: `infogan_cr` with the regulariser from START, `infogan` with it
never on (its start put at `steps`). That saves seeds x START iterations (about half
of the protocol's compute) and pairs the arms: per seed they differ only in what the
regulariser did. Each training is `accelerate launch --config_file launch/cpu.yaml
train.py --config CONFIG ...` (the commands are in OUT/protocol.log), each score
`infogan eval --checkpoint ... --disentanglement --json`. The full length on one GPU:

    python benchmarks/dsprites_protocol.py --steps 322560 --launch launch/gpu.yaml --jobs 1

Run it again after an interruption: every training resumes from its last checkpoint
(train.resume=auto), and what is finished (a final checkpoint, a scores.json) is kept.
--jobs processes run at once, each with --threads threads (run it idle, or niced:
`nice -n 19`; the scores do not depend on the load). Writes OUT/results.json and
OUT/results.md (per seed and arm the four scores, each code's best factor; the medians).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from infogan_dist.checkpoint import is_complete, step_dir  # noqa: E402

BIN = Path(sys.executable).parent
SCORES = ("factorvae", "mig", "dci", "sap")
ARMS = ("infogan", "infogan_cr")
AUTHORS_START, AUTHORS_STEPS = 288_000, 322_560  # configs/dsprites.yaml's schedule


@dataclass
class Task:
    name: str  # e.g. "seed0/prefix", "seed0/infogan_cr/scores"
    rank: int  # the longer kinds first: prefix 0, continuation 1, scores 2
    deps: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    before: object = None  # called before cmd (copying the prefix)
    output: Path | None = None  # where cmd's stdout goes (the scores' JSON)
    done: object = None  # () -> bool


def finished(run: Path, step: int) -> bool:
    return is_complete(step_dir(run, step))


def copy_prefix(prefix: Path, arm: Path) -> None:
    """The prefix's run directory as the arm's start (once: via a temporary name, so an
    interrupted copy is never taken for a run)."""
    if arm.exists():
        return
    tmp = arm.with_name(arm.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(prefix, tmp, ignore=shutil.ignore_patterns("train.lock", "*.log"))
    tmp.rename(arm)


def plan(args: argparse.Namespace, start: int) -> list[Task]:
    common = [f"data.shards={args.shards}", "checkpoint.every=500", "log.images_every=0",
              "log.eval_every=0", "log.eval_metrics=[]", "log.wandb=off", "log.progress=false",
              *args.overrides]

    def train(seed: int, name: str, steps: int, cr_start: int) -> list[str]:
        return [str(BIN / "accelerate"), "launch", "--config_file",
                str(ROOT / args.launch), str(ROOT / "train.py"), "--config", args.config,
                f"run.output_dir={args.out / f'seed{seed}'}", f"run.name={name}",
                f"run.seed={seed}", f"train.max_steps={steps}",
                f"loss.extra_start={{contrastive: {cr_start}}}", *common]

    tasks = []
    for seed in args.seeds:
        home = args.out / f"seed{seed}"
        prefix = home / "prefix"
        tasks.append(Task(f"seed{seed}/prefix", 0, cmd=train(seed, "prefix", start, start),
                          done=lambda p=prefix: finished(p, start)))
        for arm in ARMS:
            run = home / arm
            cr_start = start if arm == "infogan_cr" else args.steps  # never on: the plain arm
            tasks.append(Task(
                f"seed{seed}/{arm}", 1, deps=[f"seed{seed}/prefix"],
                cmd=train(seed, arm, args.steps, cr_start),
                before=lambda p=prefix, r=run: copy_prefix(p, r),
                done=lambda r=run: finished(r, args.steps)))
            scores = run / "scores.json"
            tasks.append(Task(
                f"seed{seed}/{arm}/scores", 2, deps=[f"seed{seed}/{arm}"],
                cmd=[str(BIN / "infogan"), "eval", "--checkpoint",
                     str(step_dir(run, args.steps)), "--disentanglement", "--json",
                     "--disentanglement-fraction", str(args.fraction)],
                output=scores, done=lambda s=scores: s.exists()))
    return tasks


def part_log(log: Path, task: Task) -> Path:
    """The log of one part (its stderr, and its stdout unless that is the output)."""
    return log.with_name(task.name.replace("/", "_") + ".log")


def execute(task: Task, log: Path, env: dict[str, str]) -> int:
    if task.before:
        task.before()
    with open(log, "a") as f:
        f.write(f"\n# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC {task.name}\n"
                f"{' '.join(task.cmd)}\n")
    err = part_log(log, task)
    began = time.monotonic()
    with open(err, "a") as stderr:
        r = subprocess.run(task.cmd, cwd=ROOT, env=env, text=True, stderr=stderr,
                           stdout=subprocess.PIPE if task.output else stderr)
    with open(log, "a") as f:  # the wall time of each part, for the record
        f.write(f"# {task.name}: exit {r.returncode} after {time.monotonic() - began:.0f} s\n")
    if r.returncode == 0 and task.output:
        tmp = task.output.with_suffix(".tmp")
        tmp.write_text(r.stdout)
        tmp.replace(task.output)
    return r.returncode


def run_all(tasks: list[Task], jobs: int, log: Path, env: dict[str, str]) -> list[str]:
    """Every task whose dependencies are done, longest kinds first, `jobs` at a time;
    the names of those that failed (nothing depending on them starts)."""
    done = {t.name for t in tasks if t.done()}
    failed: list[str] = []
    running: dict[cf.Future, Task] = {}
    todo = [t for t in tasks if t.name not in done]
    with cf.ThreadPoolExecutor(jobs) as pool:
        while todo or running:
            ready = sorted((t for t in todo if all(d in done for d in t.deps)),
                           key=lambda t: t.rank)
            for t in ready[:jobs - len(running)]:
                todo.remove(t)
                running[pool.submit(execute, t, log, env)] = t
            if not running:
                break  # what is left depends on a failure
            finished_now, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished_now:
                t = running.pop(fut)
                if fut.result() == 0 and t.done():
                    done.add(t.name)
                    print(f"done {t.name}", flush=True)
                else:
                    failed.append(t.name)
                    print(f"FAILED {t.name} (exit {fut.result()}): see {part_log(log, t)}",
                          flush=True)
    return failed + [t.name + " (not started)" for t in todo]


def results(args: argparse.Namespace, start: int) -> dict:
    rows = []
    for seed in args.seeds:
        for arm in ARMS:
            d = json.loads((args.out / f"seed{seed}" / arm / "scores.json").read_text())
            d = d["disentanglement"]
            rows.append({"arm": arm, "seed": seed, **{s: d[s] for s in SCORES},
                         "best_factor": d["best_factor"]})
    medians = {arm: {s: statistics.median(r[s] for r in rows if r["arm"] == arm)
                     for s in SCORES} for arm in ARMS}
    return {"steps": args.steps, "cr_start": start, "seeds": args.seeds,
            "config": args.config, "overrides": args.overrides, "shards": str(args.shards),
            "fraction": args.fraction, "machine": platform.processor() or platform.machine(),
            "rows": rows, "median": medians}


def table(res: dict) -> str:
    lines = [f"{res['steps']} iterations, the regulariser from {res['cr_start']}; "
             f"scores at {res['fraction']:g} x disentanglement_lib's sample counts",
             "", "| arm | seed | FactorVAE | MIG | DCI | SAP | best factor of c1..c5 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in res["rows"]:
        best = ", ".join(r["best_factor"].values())
        lines.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(f"{r[s]:.3f}" for s in SCORES)
                     + f" | {best} |")
    for arm, m in res["median"].items():
        lines.append(f"| **{arm}** | median | " + " | ".join(f"**{m[s]:.3f}**" for s in SCORES)
                     + " | |")
    return "\n".join(lines) + "\n"


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line (None: nothing); parses --seeds and
    resolves the paths. Checked before anything is written or started."""
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        return f"--seeds {args.seeds!r}: give integers separated by commas, e.g. 0,1,2"
    if len(set(args.seeds)) != len(args.seeds):
        return f"--seeds {','.join(map(str, args.seeds))}: a seed is given twice"
    # from 5 iterations on the regulariser's start (steps x 288,000 / 322,560, rounded)
    # falls before the end, so the two arms differ
    for name, value, least in (("--steps", args.steps, 5), ("--jobs", args.jobs, 1),
                               ("--threads", args.threads, 1)):
        if value < least:
            return f"{name} must be >= {least}, got {value}"
    if not 0 < args.fraction <= 1:
        return f"--fraction must be in (0, 1], got {args.fraction}"
    args.out, args.shards = args.out.resolve(), args.shards.resolve()
    if not (args.shards / "index.json").exists():
        return (f"{args.shards}/index.json not found; make the shards with `infogan "
                f"prepare-data --sprites --out {args.shards}`")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, default=Path("data/dsprites"))
    p.add_argument("--out", type=Path, default=Path("runs/dsprites_protocol"))
    p.add_argument("--config", default=str(ROOT / "configs/dsprites.yaml"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--launch", default="launch/cpu.yaml",
                   help="accelerate config of each training (launch/gpu.yaml: one GPU)")
    p.add_argument("--jobs", type=int, default=2, help="trainings/scorings at once")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="--disentanglement-fraction of the scores (1: disentanglement_lib's)")
    p.add_argument("overrides", nargs="*", help="more config overrides for every training")
    args = p.parse_args(argv)
    wrong = check(args)
    if wrong:
        print(f"error: {wrong}", file=sys.stderr)
        return 2
    start = round(args.steps * AUTHORS_START / AUTHORS_STEPS)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    failed = run_all(plan(args, start), args.jobs, args.out / "protocol.log", env)
    if failed:
        print(f"error: {len(failed)} task(s) did not finish: {', '.join(failed)}; run the "
              "same command again to resume", file=sys.stderr)
        return 1
    res = results(args, start)
    (args.out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    text = table(res)
    (args.out / "results.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
