"""The soak: one training under a seeded schedule of faults, then the invariants.

    make soak MINUTES=30 SEED=1                                   # the long one, for the record
    .venv/bin/python benchmarks/soak.py --minutes 30 --seed 1     # the same without make
    .venv/bin/python benchmarks/soak.py --faults 6 --seed 0 \\
        --kinds rank_kill,kill_in_save,preempt,disk_full,second_launch,machine_kill  # short

configs/mnist.yaml at width 0.125, 16 images a step, on two "machines" on localhost (two
`accelerate launch`, c10d rendezvous, --max_restarts, as slurm/infogan.sh launches them;
chaos/job.py), data from a real S3 server (SeaweedFS, started here as the tests start it)
behind a TCP proxy that can reset connections, a node cache per machine, a checkpoint
every 5 steps, milestones every 50, the run directory on a tmpfs the soak mounts (root;
the full-disk fault needs it). Faults are drawn from chaos/faults.py until --minutes
have passed or --faults were injected: each waits for a few new steps (metrics.jsonl),
then a seeded delay of 0-2 s. Then a STOP ends the run at step S, a reference run (the
same training without faults, one machine, local shards) trains to S, and the invariants
of chaos/checks.py are checked. Report: <out>/report.json and report.md (docs/soak.md
says how to read them); exit 0 when every invariant holds and every fault was
recovered without a person, else 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos import checks  # noqa: E402
from benchmarks.chaos.faults import FAULTS, Rig, kinds_available  # noqa: E402
from benchmarks.chaos.job import Job, JobSpec, SoakError, environment  # noqa: E402
from benchmarks.chaos.report import FaultRecord, write_report  # noqa: E402
from benchmarks.chaos.schedule import (  # noqa: E402
    STRIKE_RECOVERY_P,
    final_stop,
    run_schedule,
)
from benchmarks.chaos.setup import (  # noqa: E402
    BIN,
    digits,
    fresh_dir,
    mount_disk,
    own_host_names,
    reference_run,
    unmount,
)

CONFIG = "configs/mnist.yaml"
# the training, soak and reference alike (a step is about 0.15 s on 2 busy cores)
TRAINING = ["model.width=0.125", "train.global_batch_size=16", "log.every=1",
            "log.images_every=5", "log.eval_every=0", "log.progress=false"]
EVERY, KEEP, KEEP_EVERY = 5, 2, 50  # checkpoint.every, .keep, .keep_every of the soak


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0,
                   help="inject faults for this long (then stop, reference, checks)")
    p.add_argument("--faults", type=int, default=0,
                   help="stop after this many faults (0: no limit)")
    p.add_argument("--seed", type=int, default=0, help="seeds the schedule (kinds, ranks, delays)")
    p.add_argument("--kinds", default="", help="comma-separated fault kinds (default: all: "
                   + ", ".join(FAULTS) + "; disk_full needs root)")
    p.add_argument("--out", default="", help="soak directory (default runs/soak-<seed>); "
                   "emptied first")
    p.add_argument("--digits", type=int, default=2000, help="MNIST digits in the shards")
    p.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"),
                   help="directory of t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    p.add_argument("--wandb", choices=["offline", "off"], default="offline",
                   help="log.wandb of the soak's training (offline: W&B files are scanned for "
                   "the secret too)")
    p.add_argument("--max-restarts", type=int, default=100, help="torchrun's --max_restarts")
    p.add_argument("--strike", type=float, default=STRIKE_RECOVERY_P,
                   help="chance that a fault strikes the recovery of the one before")
    return p.parse_args(argv)


def build_rig(args: argparse.Namespace, out: Path, url: str, s3, proxy, disk: Path | None,
              port: int) -> Rig:
    """The job (not started) and everything the faults touch."""
    run_dir = out / "disk" / "run"
    caches = [out / f"cache-{m}" for m in (0, 1)]
    env = environment(dict(os.environ), s3.env(endpoint=proxy.url) | {
        "INFOGAN_FAULT_FILE": str(out / "fault"), "TMPDIR": str(out / "tmp")})
    overrides = [*TRAINING, f"log.wandb={args.wandb}", f"data.shards={url}",
                 f"run.output_dir={out / 'disk'}", "run.name=run", "train.resume=auto",
                 "train.max_steps=100000000", f"checkpoint.every={EVERY}",
                 f"checkpoint.keep={KEEP}", f"checkpoint.keep_every={KEEP_EVERY}"]
    job = Job(JobSpec(config=CONFIG, overrides=overrides, run_dir=run_dir, env=env,
                      logs=out / "logs", port=port, max_restarts=args.max_restarts,
                      python_bin=BIN, per_machine=[[f"data.cache_dir={c}"] for c in caches],
                      host_names=own_host_names()))
    second = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / CONFIG),
              *overrides, f"data.cache_dir={out / 'cache-second'}"]
    return Rig(job=job, rng=random.Random(args.seed), run_dir=run_dir, cache_dirs=caches,
               fault_file=out / "fault", s3=s3, proxy=proxy, second_launch=second,
               second_env=env, disk=disk)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.helpers import free_port
    from tests.remote_servers import FaultProxy, SeaweedS3

    out = Path(args.out or ROOT / "runs" / f"soak-{args.seed}").resolve()
    fresh_dir(out)
    for d in ("logs", "tmp"):
        (out / d).mkdir()
    started = dt.datetime.now().astimezone()
    secret = f"soak-secret-{secrets.token_hex(10)}"  # the fake S3 secret no file may hold
    s3 = SeaweedS3(out / "s3", secret_key=secret)
    disk = mount_disk(out / "disk")
    rig: Rig | None = None
    proxy = None
    records: list[FaultRecord] = []
    results: list[checks.Check] = []
    final_step, error, soak_s = 0, "", 0.0
    try:
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] or kinds_available(disk)
        for k in kinds:
            FAULTS[k]  # an unknown kind: one line before anything starts  # noqa: B018
        if "disk_full" in kinds and disk is None:
            raise SoakError("disk_full needs root (the run directory on a tmpfs); leave it out")
        shards = digits(Path(args.mnist), args.digits, out)
        s3.start()
        proxy = FaultProxy(s3.port)
        rig = build_rig(args, out, s3.upload_dir(shards, "soak"), s3, proxy, disk, free_port())
        t0 = time.time()
        rig.job.start()

        def more(records: list[FaultRecord]) -> bool:
            return time.time() - t0 < args.minutes * 60 and not (
                args.faults and len(records) >= args.faults)

        run_schedule(rig, kinds, more, t0, records, log=lambda line: print(line, flush=True),
                     strike_p=args.strike)
        final_step = final_stop(rig)
        for th in rig.s3_restarts:
            th.join()
        soak_s = time.time() - t0
        s3.kill()
        proxy.close()
        reference = reference_run(out, shards, final_step, CONFIG, TRAINING)
        results = invariants(rig.run_dir, reference, final_step, rig.cache_dirs, out, secret)
        results += [checks.Check("S3 restarts", False, err, [err]) for err in rig.s3_errors]
    except SoakError as e:
        error = str(e)
    except Exception:  # a bug of the soak: still a report, and everything stopped
        error = traceback.format_exc()
    finally:
        if rig is not None:
            rig.job.stop_everything()
            rig.job.close()
        s3.kill()
        if proxy is not None:
            proxy.close()
        if disk is not None and (out / "disk" / "run").exists():
            shutil.copytree(out / "disk" / "run", out / "run", symlinks=True)
        busy = unmount(out / "disk")
        if busy:
            results.append(checks.Check("the run directory's tmpfs unmounted", False, busy, [busy]))
    meta = {"seed": args.seed, "minutes": args.minutes, "kinds": args.kinds or "all",
            "started": started.isoformat(timespec="seconds"), "soak_s": round(soak_s, 1),
            "final_step": final_step, "machine": machine(), "commit": commit(), "error": error,
            "torchelastic_dirs_left": len(list((out / "tmp").glob("torchelastic_*"))),
            "command": " ".join(["benchmarks/soak.py", *(sys.argv[1:] if argv is None else argv)])}
    ok = write_report(out, meta, records, results)
    print((out / "report.md").read_text())
    return 0 if ok else 1


def invariants(run_dir: Path, reference: Path, final_step: int, caches: list[Path], out: Path,
               secret: str) -> list[checks.Check]:
    final = run_dir / "checkpoints" / f"step-{final_step:08d}"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        checks.bitwise(final, reference),
        checks.steps_once(rows, final_step),
        checks.checkpoints_sound(run_dir),
        checks.milestones_kept(run_dir, KEEP_EVERY, final_step),
        checks.no_processes(run_dir, os.getpid()),
        checks.no_temporaries([run_dir, *caches]),
        checks.lock_released(run_dir),
        checks.no_secret([run_dir, out / "logs"], secret),
    ]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end"


def commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                       text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return r.stdout.strip() + ("+changes" if dirty else "")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    sys.exit(main())
