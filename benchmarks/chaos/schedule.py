"""The schedule: which fault when, and how long training took to come back.

Faults are drawn in rounds: every kind once per round, in a seeded order. Before each
one the schedule waits for progress (2-8 new steps in metrics.jsonl, seeded), then a
seeded delay of 0-2 s. A fault that replaces the workers may, a quarter of the time
(seeded; --strike), be struck by the next fault while its recovery is under way (a
seeded 0-5 s after its last worker was gone: the new workers not yet spawned, or
starting), when that one kills, stops or launches a second training (COMPOSABLE): a
second failure during recovery, as clusters deliver them.

Recovery: the first step completed after the fault by workers that followed it (for a
fault that replaces the workers, once every worker of the moment is gone), with no
launcher ending that the fault did not plan (such an end is what a person would have had
to restart under Slurm; the soak restarts it anyway and says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from .faults import FAULTS, Injected, Rig
from .job import Job, SoakError
from .report import FaultRecord

RECOVERY_S = 300.0  # a fault not recovered by then needed a person
# may strike a recovery
COMPOSABLE = ("rank_kill", "machine_kill", "preempt", "stop_file", "second_launch")
STRIKE_RECOVERY_P = 0.25


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Attempt:
    """One injected fault under way."""

    rec: FaultRecord
    inj: Injected
    before: set[int]  # worker pids at the fault
    exits_before: int  # len(job.exits) at the fault
    gone: float | None = None  # when the last worker of the moment was gone
    exits_end: int | None = None  # len(job.exits) when the next fault struck it


def inject(rig: Rig, kind: str, index: int, t0: float) -> Attempt | FaultRecord:
    job = rig.job
    before = {w.pid for w in job.workers()}
    exits_before = len(job.exits)
    rec = FaultRecord(index=index, kind=kind, at_s=round(time.time() - t0, 1),
                      at_step=job.metrics.last_step)
    try:
        inj: Injected = FAULTS[kind](rig)
    except SoakError as e:
        rec.problems.append(f"not injected: {e}")
        return rec
    rec.injected, rec.detail, rec.problems = True, inj.detail, list(inj.problems)
    rec.at_s = round(inj.t - t0, 1)
    return Attempt(rec, inj, before, exits_before)


def await_recovery(job: Job, a: Attempt, strike_after: float | None = None):
    """Waits for the next completed step (returns it), or, with `strike_after`, until
    that many seconds after the last worker of the fault's moment was gone (returns
    "strike"): the new workers are then not yet started, or starting."""

    def cond():
        if a.inj.restarts and a.gone is None:
            if any(alive(pid) for pid in a.before):
                return None
            a.gone = time.time()
        seen = job.metrics.first_after(a.gone if a.inj.restarts else a.inj.t)
        if seen is not None:
            return seen
        if strike_after is not None and time.time() - a.gone >= strike_after:
            return "strike"
        return None

    return job.wait(cond, RECOVERY_S, f"fault {a.rec.index} ({a.rec.kind}): a step after it")


def settle(job: Job, a: Attempt, seen, exits_end: int | None = None) -> None:
    """Fills the record of `a` once `seen` (a StepSeen) completed; its launcher exits are
    those up to `exits_end` (a struck fault: until the next one struck)."""
    rec = a.rec
    rec.recovered_s = round(seen.t - a.inj.t, 2)
    rec.next_step = seen.step
    if a.inj.after is not None:
        rec.detail |= a.inj.after()
    exits = job.exits[a.exits_before:exits_end]
    rec.unplanned_exits = [f"machine {e.machine}: exit {e.code}" for e in exits if not e.planned]
    rec.relaunches = len(exits)
    if a.inj.restarts:
        rec.phases = phases(job, a.inj.t, seen.t)
    rec.recovered = not rec.unplanned_exits and not rec.problems
    for m in job.machines:  # a plan lasts one fault
        m.planned_exit = False


def phases(job: Job, t_fault: float, t_step: float) -> dict[str, float]:
    """Where the time from the fault to the next step went:
    detect_s: until a launcher reported a worker's end (or ended itself);
    restart_s: until the last worker of the attempt that trained the step was spawned
        (the other workers stopped, the agents' rendezvous, any failed attempts);
    startup_s: until rank 0 printed `resumed from` (interpreter and imports, preflight:
        the shard index from S3, process group, models, data, checkpoint loaded; rank 0's
        own `start-up` line splits it: startup_parts);
    first_step_s: the rest (tracking start, the step itself, its metrics row)."""
    out: dict[str, float] = {}
    noticed = [ln.t for ln in job.lines_since(t_fault) if ln.t <= t_step and (
        "failed (exitcode" in ln.text or "launcher exited" in ln.text
        or "death signal" in ln.text)]
    spawned = job.spawn_times()
    t_spawn = max(spawned) if spawned else None
    if noticed:
        out["detect_s"] = round(noticed[0] - t_fault, 2)
    if t_spawn is None or not t_fault <= t_spawn <= t_step:
        return out
    out["restart_s"] = round(t_spawn - (noticed[0] if noticed else t_fault), 2)
    resumed = [ln.t for ln in job.lines_since(t_spawn, "resumed from") if ln.t <= t_step]
    if resumed:
        out["startup_s"] = round(resumed[0] - t_spawn, 2)
        out["first_step_s"] = round(t_step - resumed[0], 2)
    said = [ln.text for ln in job.lines_since(t_spawn, "start-up ") if ln.t <= t_step]
    if said:  # rank 0's own account (infogan_dist/startup.py): "start-up T s: part t, ..."
        out["startup_parts"] = startup_parts(said[-1])
    return out


def startup_parts(line: str) -> dict[str, float]:
    """{'interpreter and imports': 7.6, 'checks': 0.2, ...} from rank 0's start-up line."""
    parts = {}
    for item in line.split(": ", 1)[-1].split(", "):
        name, _, value = item.rpartition(" ")
        try:
            parts[name] = float(value)
        except ValueError:
            continue
    return parts


def run_schedule(rig: Rig, kinds: list[str], more: Callable[[list[FaultRecord]], bool],
                 t0: float, records: list[FaultRecord], log: Callable[[str], None],
                 strike_p: float = STRIKE_RECOVERY_P) -> None:
    job, rng = rig.job, rig.rng
    job.wait(lambda: job.metrics.seen, RECOVERY_S, "the first step of the soak's training")
    order: list[str] = []

    def next_kind() -> str:
        if not order:
            order.extend(kinds)
            rng.shuffle(order)
        return order.pop()

    kind = next_kind()
    struck: Attempt | None = None  # the fault whose recovery this one strikes
    last_ok = time.time()
    while more(records):
        if struck is None:
            k, delay = rng.randint(2, 8), rng.uniform(0, 2)
            job.wait(lambda k=k, since=last_ok: sum(s.t > since for s in job.metrics.seen) >= k,
                     RECOVERY_S, f"{k} steps before fault {len(records) + 1}")
            ready = time.time()
            job.wait(lambda d=delay, r=ready: time.time() - r >= d, delay + 10, "delay")
        a = inject(rig, kind, len(records) + 1, t0)
        rec = a if isinstance(a, FaultRecord) else a.rec
        records.append(rec)
        kind = next_kind()
        if isinstance(a, FaultRecord):  # not injected
            log(rec.line())
            continue
        if struck is not None:
            rec.detail["during_recovery_of"] = struck.rec.index
        strike = (struck is None and a.inj.restarts and kind in COMPOSABLE and more(records)
                  and rng.random() < strike_p)
        try:
            seen = await_recovery(job, a, rng.uniform(0, 5) if strike else None)
        except SoakError as e:
            rec.problems.append(str(e))
            seen = None
        if seen == "strike":  # the next fault now, while this one's workers start
            a.rec.detail["struck_by"] = rec.index + 1
            a.exits_end = len(job.exits)
            struck = a
            continue
        if seen is not None:
            settle(job, a, seen)
        if struck is not None:  # settled with its striker: no time sample of its own
            if seen is not None:
                settle(job, struck, seen, struck.exits_end)
            struck.rec.recovered = seen is not None and struck.rec.recovered and rec.recovered
            struck.rec.recovered_s = None
            log(struck.rec.line())
            struck = None
        log(rec.line())
        if seen is None:  # not recovered: start the whole job again, once
            job.stop_everything()
            job.finished = False
            job.start()
            restarted = time.time()
            job.wait(lambda r=restarted: job.metrics.first_after(r), RECOVERY_S,
                     "a step after restarting the whole job")
        last_ok = time.time()


def final_stop(rig: Rig) -> int:
    """STOP: every rank stops after the same step S with a checkpoint; returns S."""
    job = rig.job
    job.hold = True
    for m in job.machines:
        m.planned_exit = True
    (rig.run_dir / "STOP").touch()
    job.wait(job.all_exited, RECOVERY_S, "the job to stop at the end")
    job.finished = True
    job.metrics.poll()
    return job.metrics.last_step
