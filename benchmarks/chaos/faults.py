"""The fault kinds of the soak, one function each, registered in FAULTS.

A fault function gets the Rig (the job, the servers, the run directory, a seeded random
generator) and injects one fault. It returns an Injected record: when it struck, whether
the workers of the moment must be replaced for training to go on (`restarts`), details
for the report, and optionally `after`, run once training has completed a step again
(disarm the proxy, check what the recovery left).

Recovery is the schedule's to measure (schedule.py): from `t` to the next step completed
by the workers that followed, with no launcher ending that the fault did not plan.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from infogan_dist.checkpoint import checkpoints_root, list_checkpoints
from infogan_dist.registry import Registry

from .job import ROOT, Job, SoakError


@dataclass
class Rig:
    """Everything a fault may touch."""

    job: Job
    rng: random.Random
    run_dir: Path
    cache_dirs: list[Path]  # node caches, per machine
    fault_file: Path  # INFOGAN_FAULT_FILE of the workers
    s3: object  # tests.remote_servers.SeaweedS3
    proxy: object  # tests.remote_servers.FaultProxy in front of it (the workers' endpoint)
    second_launch: list[str]  # the command of a second training on the same run directory
    second_env: dict[str, str]
    disk: Path | None  # the tmpfs holding the run directory (None: no disk_full)
    s3_restarts: list[threading.Thread] = field(default_factory=list)
    s3_errors: list[str] = field(default_factory=list)


@dataclass
class Injected:
    t: float  # wall clock of the fault
    restarts: bool  # training goes on only with new workers
    detail: dict = field(default_factory=dict)
    after: Callable[[], dict] | None = None  # once recovered: more details / checks
    problems: list[str] = field(default_factory=list)  # what went wrong in the injection


FAULTS: Registry[Callable[[Rig], Injected]] = Registry("soak fault kind")


def _sigkill(p: psutil.Process) -> None:
    try:
        p.send_signal(signal.SIGKILL)
    except psutil.Error:
        pass


def _kill_rank(rig: Rig, rank: int | None = None) -> tuple[float, int]:
    """SIGKILL one worker (by global rank); (time, rank)."""
    rank = rig.rng.randrange(2) if rank is None else rank
    worker = rig.job.wait(lambda: rig.job.worker_of_rank(rank), 120,
                          f"a worker of rank {rank} to kill")
    t = time.time()
    _sigkill(worker)
    return t, rank


def _empty_cache(cache: Path) -> int:
    """Delete the cached shards (what a new node's cache holds: nothing). Lock files
    and fills in progress (dot-names) stay: a process may hold them."""
    n = 0
    for p in cache.glob("*") if cache.is_dir() else []:
        if not p.name.startswith(".") and p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


@FAULTS.register("rank_kill")
def rank_kill(rig: Rig) -> Injected:
    """SIGKILL of one rank: torchrun restarts every worker (both machines)."""
    t, rank = _kill_rank(rig)
    return Injected(t, restarts=True, detail={"rank": rank})


@FAULTS.register("machine_kill")
def machine_kill(rig: Rig) -> Injected:
    """SIGKILL of one machine's launcher and its workers at once; the machine comes back
    (a node restarted by its scheduler), half the time with an empty node cache (a new
    node): its shards then come from S3 again."""
    m = rig.rng.randrange(2)
    fresh = rig.rng.random() < 0.5
    machine = rig.job.machines[m]
    rig.job.wait(machine.alive, 120, f"machine {m}'s launcher to kill")
    if m == 0:
        # Machine 0 hosts the rendezvous store: without it the other machine's launcher
        # ends too, and the job restarts as a whole, as Slurm requeues a job whose node
        # failed (--requeue). That exit is part of the plan.
        rig.job.machines[1].planned_exit = True
    t = time.time()
    machine.kill()
    emptied = _empty_cache(rig.cache_dirs[m]) if fresh else 0
    return Injected(t, restarts=True,
                    detail={"machine": m, "new_node": fresh, "cached_shards_removed": emptied})


@FAULTS.register("s3_outage")
def s3_outage(rig: Rig) -> Injected:
    """The S3 server SIGKILLed and started again 5-30 s later; a rank dies while it is
    down, so the restarted workers meet the outage (index, listing, and the shards of
    an emptied node cache)."""
    for th in rig.s3_restarts:
        th.join()  # a previous outage is over
    down_s = rig.rng.uniform(5, 30)
    empty = rig.rng.random() < 0.5
    rig.s3.kill()
    t_down = time.time()

    def restart() -> None:
        time.sleep(down_s)  # the outage itself: a length, not a synchronisation
        try:
            rig.s3.start()
        except BaseException as e:  # pytest.fail in the server helper is a BaseException
            rig.s3_errors.append(f"S3 did not come back: {' '.join(str(e).split())[:300]}")

    th = threading.Thread(target=restart, daemon=True)
    th.start()
    rig.s3_restarts.append(th)
    emptied = _empty_cache(rig.cache_dirs[1]) if empty else 0
    into = rig.rng.uniform(0, 2)  # seconds into the outage (drawn once: the schedule's seed)
    rig.job.wait(lambda: time.time() - t_down >= into, 10, "delay")
    t, rank = _kill_rank(rig)
    return Injected(t, restarts=True, detail={
        "down_s": round(down_s, 1), "rank": rank, "cached_shards_removed": emptied})


@FAULTS.register("conn_reset")
def conn_reset(rig: Rig) -> Injected:
    """Connections reset mid-body: the proxy in front of S3 cuts every second response
    after 20 kB with a TCP reset; both node caches are emptied and a rank dies, so the
    restarted workers download every shard through it. Disarmed once a step completed."""
    proxy = rig.proxy
    before = proxy.resets
    proxy.reset_after, proxy.reset_at, proxy.reset_every = 20000, 1, 2
    emptied = sum(_empty_cache(c) for c in rig.cache_dirs)
    t, rank = _kill_rank(rig)

    def after() -> dict:
        proxy.reset_every = 0
        return {"resets": proxy.resets - before}

    inj = Injected(t, restarts=True, after=after,
                   detail={"rank": rank, "cached_shards_removed": emptied})
    return inj


def _stop_checkpoint(rig: Rig) -> dict:
    """After a stop: the last row of metrics.jsonl and the newest complete checkpoint."""
    rig.job.metrics.poll()
    last = rig.job.metrics.last_step
    good, _ = list_checkpoints(rig.run_dir)
    newest = int(good[-1].name.split("-")[-1]) if good else 0
    return {"last_row": last, "newest_checkpoint": newest}


def _held_stop(rig: Rig, how: Callable[[], None], what: str) -> Injected:
    job = rig.job
    spawned = job.spawn_times()
    # the workers of the moment trained a step: they must stop with a checkpoint
    was_training = len(spawned) == 2 and bool(job.metrics.seen) and \
        job.metrics.seen[-1].t > max(spawned)
    job.hold = True
    for m in job.machines:
        m.planned_exit = True
    t = time.time()
    how()
    try:
        job.wait(job.all_exited, 300, f"every launcher to exit after {what}")
    finally:
        detail = _stop_checkpoint(rig)
        codes = [e.code for e in job.exits if e.t >= t]
        detail["launcher_exits"] = codes
        job.relaunch_stopped()
        job.hold = False
    problems = []
    if was_training and detail["newest_checkpoint"] != detail["last_row"]:
        problems.append(f"{what}: the newest checkpoint is step {detail['newest_checkpoint']},"
                        f" not the last step logged ({detail['last_row']})")
    return Injected(t, restarts=True, detail=detail, problems=problems)


@FAULTS.register("preempt")
def preempt(rig: Rig) -> Injected:
    """SIGTERM to every process of the job (as Slurm preempts), then the job started
    again once all are gone (as a requeue does); it resumes from the stop checkpoint."""
    return _held_stop(rig, lambda: rig.job.signal_all(signal.SIGTERM), "SIGTERM to all")


@FAULTS.register("stop_file")
def stop_file(rig: Rig) -> Injected:
    """`touch <run dir>/STOP`: every rank stops after the same step with a checkpoint,
    exit 0; the job is then started again (a requeue)."""
    stop = rig.run_dir / "STOP"

    def touch() -> None:
        stop.touch()

    inj = _held_stop(rig, touch, "the STOP file")
    if stop.exists():
        inj.problems.append("the STOP file is still there after the stop")
        stop.unlink()
    return inj


@FAULTS.register("kill_in_save")
def kill_in_save(rig: Rig) -> Injected:
    """A rank SIGKILLed inside a checkpoint save (after Accelerate wrote its files, before
    COMPLETE): armed through INFOGAN_FAULT_FILE, fired by the next save of that rank."""
    rank = rig.rng.randrange(2)
    fired = Path(str(rig.fault_file) + ".fired")
    fired.unlink(missing_ok=True)
    tmp = rig.fault_file.with_name(rig.fault_file.name + ".new")
    tmp.write_text(f"kill_in_save:{rank}:*\n")
    os.replace(tmp, rig.fault_file)  # whole or absent: a reader never sees half
    rig.job.wait(fired.exists, 300, f"rank {rank} to reach a save and die in it")
    t = time.time()
    fired.unlink(missing_ok=True)
    root = checkpoints_root(rig.run_dir)
    left = sorted(p.name for p in root.glob(".tmp-step-*"))
    return Injected(t, restarts=True, detail={"rank": rank, "interrupted": left})


def fill_leaving(ballast: Path, leave: int, tries: int = 50) -> int:
    """Grow `ballast` until its file system has about `leave` bytes free; returns its size.
    The training writes to the same disk meanwhile, so the free space read a moment ago
    may be gone when the allocation is made: an ENOSPC means "ask again and top up"
    (tmpfs undoes a failed allocation whole), not a failed fault (a 30-minute soak
    stopped on it, 2026-12-04)."""
    size = 0
    with open(ballast, "wb") as f:
        for _ in range(tries):
            st = os.statvfs(ballast.parent)
            more = st.f_bavail * st.f_frsize - leave
            if more <= 0:
                break
            try:
                os.posix_fallocate(f.fileno(), size, more)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                continue
            size += more
    return size


@FAULTS.register("disk_full")
def disk_full(rig: Rig) -> Injected:
    """The run directory's disk (a tmpfs the soak mounted) full for one save: a ballast
    file leaves half a checkpoint free; the save fails with ENOSPC on every rank (exit
    1, the partial save removed), the ballast goes, torchrun restarts the workers."""
    if rig.disk is None:
        raise SoakError("disk_full needs the run directory on a tmpfs (root)")
    good, _ = list_checkpoints(rig.run_dir)
    need = sum(f.stat().st_size for f in good[-1].iterdir()) if good else 4 << 20
    ballast = rig.disk / "ballast"
    t_fill = time.time()
    fill_leaving(ballast, need // 2)
    try:
        line = rig.job.wait(lambda: rig.job.lines_since(t_fill, "no space left on the device"),
                            300, "a save to fail for the full disk")
    finally:
        ballast.unlink(missing_ok=True)
    return Injected(line[0].t, restarts=True, detail={
        "free_bytes_left": need // 2, "checkpoint_bytes": need,
        "line": line[0].text.strip()[:200]})


@FAULTS.register("second_launch")
def second_launch(rig: Rig) -> Injected:
    """A second training on the live run directory: refused (exit 2, one line naming the
    holder of train.lock) before it touches anything; the live run goes on."""
    t = time.time()
    proc = subprocess.Popen(rig.second_launch, cwd=ROOT, env=rig.second_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    try:
        rig.job.wait(lambda: proc.poll() is not None, 300, "the second launch to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)
    text = b"".join(out).decode(errors="replace")
    problems = []
    refused = "is in use by another training" in text
    if proc.returncode != 2 or not refused:
        problems.append(f"second launch: exit {proc.returncode}, "
                        f"{'refused' if refused else 'not refused'}: {text.strip()[-400:]}")
    if "Traceback" in text:
        problems.append("second launch: a traceback")
    errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    return Injected(t, restarts=False, problems=problems, detail={
        "exit": proc.returncode, "line": errors[0][:300] if errors else ""})


def kinds_available(disk: Path | None) -> list[str]:
    return [k for k in FAULTS if k != "disk_full" or disk is not None]
