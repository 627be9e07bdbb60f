"""Issue 4, stop requests: SIGTERM / SIGUSR1 to the launcher or to one rank, and the STOP
file. All ranks stop after the same step, save a checkpoint there, exit 0, and
`train.resume=auto` continues from exactly that step.

Launcher exit status (torch 2.14, observed): 0 when a rank was signalled or the STOP
file was used. When the launcher itself was signalled every worker still stops cleanly
and exits 0, and torchrun forwards the signal, waits for the workers, then re-raises it
as a SignalException: accelerate 1.15 lets it escape (exit 1 with that traceback), 1.16
catches it and exits 128 + the signal (LAUNCHER_EXITS_128_PLUS).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import accelerate
import psutil
import pytest
from packaging.version import Version

from infogan_dist.stop import STOP_SIGNALS, StopRequest
from tests.helpers import ROOT, launch_env, make_shards, metrics, train, train_cmd

SMOKE, LAUNCH = "configs/smoke.yaml", "launch/cpu_ddp.yaml"
DEADLINE_S = 240  # a hang fails the test instead of blocking the suite
SIGNAL_LIST = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
# accelerate >= 1.16 exits 128 + the signal, without a traceback, when it is signalled;
# its one-process launcher first ends the trainer itself (SIGTERM, SIGKILL 5 s later).
LAUNCHER_EXITS_128_PLUS = Version(accelerate.__version__) >= Version("1.16")

# Runs train.py unchanged in the worker process and records how it exited: torchrun does
# not report the exit status of workers it shut down itself.
_RUN_AND_RECORD = """\
sys.path.insert(0, {root!r})
sys.argv[0] = {train!r}
code = "exception"
try:
    runpy.run_path({train!r}, run_name="__main__")
    code = 0
except SystemExit as e:
    code = 0 if e.code is None else e.code
    raise
finally:
    with open(os.path.join(os.environ["INFOGAN_EXIT_DIR"], "rank" + rank), "w") as f:
        f.write(str(code))
"""
WRAPPER = """\
import os, runpy, sys
rank = os.environ.get("RANK", "0")  # the one-process launcher sets none
""" + _RUN_AND_RECORD


def signal_env() -> dict[str, str]:
    """helpers.launch_env plus PET_SIGNALS_TO_HANDLE. torch 2.14's launcher takes its list
    of signals to forward from --signals-to-handle, default $PET_SIGNALS_TO_HANDLE, and
    overwrites TORCHELASTIC_SIGNALS_TO_HANDLE with it: without PET_..., SIGUSR1 kills the
    launcher itself and leaves the workers running (test_torchrun_signal_list_comes_from_pet)."""
    env = launch_env()
    assert "SIGUSR1" in env["TORCHELASTIC_SIGNALS_TO_HANDLE"]
    env.setdefault("PET_SIGNALS_TO_HANDLE", env["TORCHELASTIC_SIGNALS_TO_HANDLE"])
    return env


# --- in-process ---------------------------------------------------------------------------

@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_a_signal_only_sets_a_flag(tmp_path, restore_handlers, sig):
    stop = StopRequest(tmp_path / "STOP", is_main=False)
    assert not stop.local() and stop.reason is None
    os.kill(os.getpid(), sig)  # handled synchronously at the next bytecode
    assert stop.local() and stop.reason == signal.Signals(sig).name


def test_stop_file_is_read_by_the_main_process_only(tmp_path, restore_handlers):
    (tmp_path / "STOP").touch()
    assert not StopRequest(tmp_path / "STOP", is_main=False).local()
    main = StopRequest(tmp_path / "STOP", is_main=True)
    assert main.local() and main.reason == f"stop file {tmp_path / 'STOP'}"
    main.clear_file()
    assert not (tmp_path / "STOP").exists()
    main.clear_file()  # no file: no error


def test_torchrun_signal_list_comes_from_pet(monkeypatch):
    from torch.distributed.run import get_args_parser

    monkeypatch.delenv("PET_SIGNALS_TO_HANDLE", raising=False)
    monkeypatch.setenv("TORCHELASTIC_SIGNALS_TO_HANDLE", SIGNAL_LIST)
    assert "SIGUSR1" not in get_args_parser().parse_args(["train.py"]).signals_to_handle
    monkeypatch.setenv("PET_SIGNALS_TO_HANDLE", SIGNAL_LIST)
    assert get_args_parser().parse_args(["train.py"]).signals_to_handle == SIGNAL_LIST
    assert signal_env()["PET_SIGNALS_TO_HANDLE"] == SIGNAL_LIST


# --- real processes -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("digits") / "shards", limit=256, shard_size=64)


def opts(shards: Path, out: Path, *more: str) -> list[str]:
    return [f"data.shards={shards}", f"run.output_dir={out}", "run.name=stop",
            "train.resume=auto", "log.every=1", "log.images_every=0", *more]


def wrapped_run(seg: Path, wrapper: str, launch: str, shards: Path, out: Path,
                *more: str) -> tuple[list[str], dict[str, str]]:
    """Command and environment of a run that trains until it is stopped, train.py run
    through `wrapper` (WRAPPER or LOGGING_WRAPPER, written to seg/worker.py), which records
    each rank's exit in seg. `more`: further overrides."""
    worker = seg / "worker.py"
    worker.write_text(wrapper.format(root=str(ROOT), train=str(ROOT / "train.py")))
    cmd = train_cmd(launch, SMOKE, *opts(shards, out, "train.max_steps=100000",
                                         "checkpoint.every=100000", *more))
    cmd[cmd.index(str(ROOT / "train.py"))] = str(worker)
    return cmd, signal_env() | {"INFOGAN_EXIT_DIR": str(seg)}


def last_step(run: Path) -> int:
    """Last step in metrics.jsonl (0 if none); ignores a line still being written."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    step = 0
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line)["step"]
        except ValueError:
            break
    return step


def poll(cond: Callable[[], object], what: str, proc: subprocess.Popen, log: Path):
    """Polls `cond` until it is truthy; fails if the launcher exits or the deadline passes."""
    end = time.monotonic() + DEADLINE_S
    while True:
        value = cond()
        if value:
            return value
        assert proc.poll() is None, (
            f"launcher exited {proc.returncode} while waiting for {what}:\n"
            f"{log.read_text()[-4000:]}")
        assert time.monotonic() < end, f"no {what} after {DEADLINE_S} s"
        time.sleep(0.05)


def workers(proc: subprocess.Popen) -> dict[int, psutil.Process]:
    """The training processes: children of the launcher (torchrun's agent), by RANK."""
    found = {}
    for child in psutil.Process(proc.pid).children():
        try:
            rank = child.environ().get("RANK")
        except psutil.Error:
            continue
        if rank is not None:
            found[int(rank)] = child
    return found


@contextmanager
def launched(cmd: list[str], env: dict, log: Path,
             output: int | None = None) -> Iterator[tuple[subprocess.Popen, list]]:
    """Starts the launcher, its output into `log` (or into the descriptor `output`, whose
    reader keeps `log`); yields it and a list the caller adds the workers it finds to.
    On the way out (a failed test) ends what is still running of these, by pid: also
    workers a launcher that died left behind."""
    if output is not None:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=output, stderr=output,
                                start_new_session=True)
    else:
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    seen: list[psutil.Process] = []
    try:
        yield proc, seen
    finally:
        if proc.poll() is None:
            try:
                seen += psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            proc.kill()
            proc.wait(timeout=60)
        for p in seen:
            try:
                if p.is_running():  # also checks that the pid was not reused
                    p.kill()
            except psutil.Error:
                pass


def stop_segment(shards: Path, out: Path, how: str, sig: signal.Signals | None = None,
                 rank: int | None = None, more: tuple[str, ...] = ()) -> dict:
    """One launch with train.resume=auto: wait until it has trained past where it resumed,
    ask it to stop (`how`: launcher, rank or file), and collect what happened. `more`:
    further overrides."""
    run = out / "stop"
    start = last_step(run)  # the step the launch will resume from (0: fresh)
    seg = out / f"segment-{how}-{sig.name if sig else 'file'}"
    seg.mkdir()
    cmd, env = wrapped_run(seg, WRAPPER, LAUNCH, shards, out, *more)
    log = seg / "launcher.log"
    with launched(cmd, env, log) as (proc, seen):
        ranks = poll(lambda: len(workers(proc)) == 2 and workers(proc), "2 workers", proc, log)
        seen += ranks.values()
        poll(lambda: last_step(run) > start, f"a step after {start}", proc, log)
        if how == "launcher":
            os.kill(proc.pid, sig)
        elif how == "rank":
            ranks[rank].send_signal(sig)
        else:
            (run / "STOP").touch()
        rc = proc.wait(timeout=DEADLINE_S)
    return {
        "start": start, "rc": rc, "log": log.read_text(), "run": run,
        "exits": {int(p.name[4:]): p.read_text() for p in seg.glob("rank*")},
    }


def check_stopped(seg: dict, reasons: set[str]) -> int:
    """All ranks stopped after one step S, saved step-S, exited 0. Returns S."""
    run, log = seg["run"], seg["log"]
    assert seg["exits"] == {0: "0", 1: "0"}, f"worker exits {seg['exits']}\n{log[-4000:]}"
    steps = [m["step"] for m in metrics(run)]
    S = steps[-1]
    assert S > seg["start"]
    assert steps == list(range(1, S + 1)), "metrics must continue without gaps or repeats"
    if seg["start"]:
        ck = run / "checkpoints" / f"step-{seg['start']:08d}"
        assert f"resumed from {ck} at step {seg['start']}" in log
    ck = run / "checkpoints" / f"step-{S:08d}"
    assert (ck / "COMPLETE").is_file(), sorted(p.name for p in ck.parent.iterdir())
    assert json.loads((ck / "train_state.json").read_text())["step"] == S
    newest = max(p.name for p in ck.parent.iterdir() if not p.name.startswith("."))
    assert newest == ck.name and not list(ck.parent.glob(".tmp-*"))
    said = {r for r in reasons if f"stopped ({r}) at step {S}" in log}
    assert said, f"no 'stopped (...) at step {S}' with a reason in {reasons}:\n{log[-3000:]}"
    assert not (run / "STOP").exists()
    return S


def check_torchrun_exit(rc: int, log: str, sig: signal.Signals) -> None:
    """The workers exited 0, yet torchrun re-raises the signal it forwarded."""
    if LAUNCHER_EXITS_128_PLUS:  # accelerate >= 1.16 catches it
        assert rc == 128 + sig and "Traceback" not in log, (rc, log[-2000:])
    else:  # accelerate 1.15 lets torchrun's SignalException escape
        assert rc == 1 and "SignalException: Process" in log, (rc, log[-2000:])


def finish(shards: Path, out: Path, S: int, more: tuple[str, ...] = ()) -> None:
    """`train.resume=auto` continues from exactly S: the first new metrics step is S + 1."""
    run = out / "stop"
    r = train(LAUNCH, SMOKE, *opts(shards, out, f"train.max_steps={S + 2}", *more),
              env=signal_env())
    assert f"resumed from {run / 'checkpoints' / f'step-{S:08d}'} at step {S}" in r.stdout
    assert [m["step"] for m in metrics(run)] == list(range(1, S + 3))
    assert f"complete at step {S + 2}" in r.stdout


@pytest.mark.integration
def test_signals_to_the_launcher(shards, tmp_path):
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        seg = stop_segment(shards, tmp_path, "launcher", sig)
        # torchrun forwarded the signal to both workers
        assert f"closing signal {sig.name}" in seg["log"]
        # rank 0 names the signal, or "another rank" if rank 1 got it first
        S = check_stopped(seg, {sig.name, "another rank"})
        check_torchrun_exit(seg["rc"], seg["log"], sig)
    finish(shards, tmp_path, S)


@pytest.mark.integration
def test_sigterm_to_the_launcher_in_stream_mode_with_data_workers(shards, tmp_path):
    """torchrun signals each rank's whole process group, DataLoader workers included; they
    must leave the stop to the trainer (stop.ignore_in_data_workers), or a rank's next
    batch raises 'DataLoader worker ... killed by signal: Terminated' (a traceback, no
    checkpoint) instead of the step that the stop agreement needs."""
    stream = ("data.mode=stream", "data.num_workers=2")  # 4 shards: 2 ranks x 2 workers
    seg = stop_segment(shards, tmp_path, "launcher", signal.SIGTERM, more=stream)
    assert "closing signal SIGTERM" in seg["log"]
    S = check_stopped(seg, {"SIGTERM", "another rank"})
    assert "killed by signal" not in seg["log"], seg["log"][-3000:]
    finish(shards, tmp_path, S, more=stream)


@pytest.mark.integration
def test_signals_to_one_rank(shards, tmp_path):
    # SIGTERM to rank 1 (the main process learns of it only through the agreement),
    # then SIGUSR1 to rank 0
    for sig, rank in ((signal.SIGTERM, 1), (signal.SIGUSR1, 0)):
        seg = stop_segment(shards, tmp_path, "rank", sig, rank)
        S = check_stopped(seg, {sig.name, "another rank"})
        assert seg["rc"] == 0, seg["log"][-3000:]
    finish(shards, tmp_path, S)


@pytest.mark.integration
def test_stop_file(shards, tmp_path):
    seg = stop_segment(shards, tmp_path, "file")
    S = check_stopped(seg, {f"stop file {tmp_path / 'stop' / 'STOP'}"})
    assert seg["rc"] == 0, seg["log"][-3000:]
    finish(shards, tmp_path, S)


# --- issue 12: SIGINT, and a launcher that goes away ---------------------------------------
# Launcher exit status (torch 2.14, observed and asserted below; the trainer stops with a
# checkpoint and exits 0 in every case):
# - one process (launch/cpu.yaml, the simple launcher, same process group as the trainer):
#   SIGINT to the group: accelerate 1.15 dies of the KeyboardInterrupt raised in its
#   Popen.wait() (status -SIGINT, with that traceback); 1.16 ends the trainer (SIGTERM,
#   which it already treats as a stop) and exits 130. SIGTERM to the launcher: 1.15 dies of
#   it at once (-SIGTERM) without passing it on, and the trainer notices its launcher is
#   gone (stop.watch_launcher); 1.16 passes SIGTERM on and exits 143.
# - two processes (torchrun, workers in their own sessions): SIGINT to the launcher's
#   group reaches torchrun only; it forwards SIGINT, the workers stop and exit 0, it exits
#   1 / 130 (check_torchrun_exit). SIGKILL of torchrun: -SIGKILL; the workers notice and
#   stop by themselves, with a checkpoint (they can still agree).

ORPHAN_BOUND_S = 120  # launcher gone -> every worker gone, at most (generous)

# Like WRAPPER, and each worker's own output goes to rank<R>.log, apart from the launcher's.
LOGGING_WRAPPER = """\
import os, runpy, sys
rank = os.environ.get("RANK", "0")
log = os.open(os.path.join(os.environ["INFOGAN_EXIT_DIR"], "rank" + rank + ".log"),
              os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.dup2(log, 1)
os.dup2(log, 2)
""" + _RUN_AND_RECORD


def wait_gone(procs: list[psutil.Process], bound: float) -> float:
    """Polls until none of `procs` is alive (zombies count as gone); returns the seconds."""
    start = time.monotonic()
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return time.monotonic() - start
        assert time.monotonic() - start < bound, f"processes {alive} still running {bound} s " \
                                                 "after their launcher went away"
        time.sleep(0.1)


def signal_run(shards: Path, launch: str, out: Path, how: str, sig: signal.Signals,
               world: int) -> dict:
    """A fresh run with pictures at the stop; once it trained a step, `how`: "group"
    (sig to the launcher's process group, like Ctrl-C in a terminal) or "launcher" (sig to
    the launcher alone). Waits until the launcher and every process of the run are gone."""
    run = out / "stop"
    seg = out / f"segment-{how}-{sig.name}"
    seg.mkdir()
    cmd, env = wrapped_run(seg, LOGGING_WRAPPER, launch, shards, out)
    log = seg / "launcher.log"
    with launched(cmd, env, log) as (proc, seen):
        poll(lambda: last_step(run) >= 1, "a step", proc, log)
        procs = psutil.Process(proc.pid).children(recursive=True)
        assert len([p for p in procs if "worker.py" in " ".join(p.cmdline())]) == world
        seen += procs
        if how == "group":
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        rc = proc.wait(timeout=DEADLINE_S)
        took = wait_gone(procs, ORPHAN_BOUND_S)
    return {"rc": rc, "took": took, "run": run, "launcher": log.read_text(),
            "exits": {int(p.name[4:]): p.read_text() for p in seg.glob("rank[0-9]")},
            "ranks": {int(p.name[4:-4]): p.read_text() for p in seg.glob("rank*.log")}}


def check_clean_stop(seg: dict, world: int, reasons: set[str]) -> int:
    """Every worker exited 0 without a traceback after 'stopped (...) at step S'; step-S
    is a complete checkpoint, metrics end at S, the pictures of S are whole PNGs."""
    from PIL import Image

    run, ranks = seg["run"], seg["ranks"]
    assert seg["exits"] == {r: "0" for r in range(world)}, (seg["exits"], ranks)
    for r, text in ranks.items():
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, f"rank {r}:\n{text}"
    steps = [m["step"] for m in metrics(run)]
    S = steps[-1]
    assert steps == list(range(1, S + 1))  # and no row after the stop
    said = [r for r in reasons if f"stopped ({r}) at step {S}" in ranks[0]]
    assert said, f"no 'stopped (...) at step {S}' with a reason in {reasons}:\n{ranks[0]}"
    ck = run / "checkpoints" / f"step-{S:08d}"
    assert (ck / "COMPLETE").is_file()
    assert json.loads((ck / "train_state.json").read_text())["step"] == S
    pictures = sorted((run / "samples").glob(f"step-{S:08d}*.png"))
    # categories, c2, c3, and the codes one row each (step-N-codes.png)
    assert len(pictures) == 4, sorted((run / "samples").iterdir())
    for p in pictures:
        with Image.open(p) as im:
            im.verify()  # a partial PNG fails here
    assert sorted(p.name for p in (run / "samples").iterdir()) == [p.name for p in pictures]
    return S


@pytest.mark.integration
@pytest.mark.parametrize("launch,world", [("launch/cpu.yaml", 1), (LAUNCH, 2)],
                         ids=["1-process", "2-process"])
def test_sigint_to_the_process_group_stops_with_a_checkpoint(shards, tmp_path, launch, world):
    seg = signal_run(shards, launch, tmp_path, "group", signal.SIGINT, world)
    check_clean_stop(seg, world, {"SIGINT", "another rank"})
    if world == 1 and LAUNCHER_EXITS_128_PLUS:  # the simple launcher ended the trainer
        assert seg["rc"] == 130 and "Traceback" not in seg["launcher"], seg["launcher"][-3000:]
    elif world == 1:  # it died of the KeyboardInterrupt in its Popen.wait()
        assert seg["rc"] == -signal.SIGINT, (seg["rc"], seg["launcher"][-3000:])
        assert seg["launcher"].rstrip().endswith("KeyboardInterrupt")
    else:  # torchrun forwarded SIGINT, then re-raised it
        assert "closing signal SIGINT" in seg["launcher"]
        check_torchrun_exit(seg["rc"], seg["launcher"], signal.SIGINT)


@pytest.mark.integration
def test_sigterm_to_the_one_process_launcher_stops_the_trainer(shards, tmp_path):
    """accelerate 1.15's simple launcher dies of SIGTERM without passing it on: the
    trainer notices that its launcher is gone; 1.16's passes it on, then exits 143. Either
    way the trainer stops with a checkpoint and no process is left."""
    seg = signal_run(shards, "launch/cpu.yaml", tmp_path, "launcher", signal.SIGTERM, 1)
    assert seg["rc"] == (128 + signal.SIGTERM if LAUNCHER_EXITS_128_PLUS else -signal.SIGTERM)
    check_clean_stop(seg, 1, {"SIGTERM"})


@pytest.mark.integration
def test_workers_of_a_killed_torchrun_stop_by_themselves(shards, tmp_path):
    """SIGKILL of torchrun reaches no worker (own sessions): they notice, agree, save a
    checkpoint at the step reached and exit 0, within ORPHAN_BOUND_S."""
    seg = signal_run(shards, LAUNCH, tmp_path, "launcher", signal.SIGKILL, 2)
    assert seg["rc"] == -signal.SIGKILL
    S = check_clean_stop(seg, 2, {"SIGTERM", "another rank"})
    assert last_step(seg["run"]) == S  # nothing was written after the workers exited


class PipeReader(threading.Thread):
    """Copies a pipe into `path` until close(), which then closes the pipe's reading end:
    a reader like `| tee` that goes away."""

    def __init__(self, fd: int, path: Path):
        super().__init__(daemon=True)
        self.fd, self.path, self.done = fd, path, threading.Event()
        self.start()

    def run(self) -> None:
        with open(self.path, "wb") as f:
            while not self.done.is_set():
                if select.select([self.fd], [], [], 0.1)[0]:
                    data = os.read(self.fd, 1 << 16)
                    if not data:
                        break
                    f.write(data)
                    f.flush()
        os.close(self.fd)

    def close(self) -> None:
        self.done.set()
        self.join()


@pytest.mark.integration
def test_a_dead_output_reader_does_not_cost_the_stop_checkpoint(shards, tmp_path):
    """SIGKILL of the one-process launcher whose output went to a pipe, whose reader then
    goes away too (Ctrl-C on `accelerate launch ... | tee log` ends both). The trainer's
    stdout and stderr (accelerate 1.16 tees its stderr through the launcher) are broken
    pipes: its progress bar's next write raises BrokenPipeError unless
    console.keep_writing() is in place. It must stop with a checkpoint and exit 0."""
    run, seg = tmp_path / "stop", tmp_path / "segment"
    seg.mkdir()
    cmd, env = wrapped_run(seg, WRAPPER, "launch/cpu.yaml", shards, tmp_path,
                           "log.progress=true")
    read, write = os.pipe()
    reader = PipeReader(read, seg / "launcher.log")
    try:
        with launched(cmd, env, reader.path, output=write) as (proc, seen):
            os.close(write)  # the launcher and the trainer hold the writing end
            poll(lambda: last_step(run) >= 1, "a step", proc, reader.path)
            seen += psutil.Process(proc.pid).children(recursive=True)
            assert len(seen) == 1, seen
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=DEADLINE_S)
            reader.close()
            wait_gone(seen, ORPHAN_BOUND_S)
    finally:
        reader.close()
    assert {p.name: p.read_text() for p in seg.glob("rank*")} == {"rank0": "0"}
    steps = [m["step"] for m in metrics(run)]
    S = steps[-1]
    assert steps == list(range(1, S + 1))
    ck = run / "checkpoints" / f"step-{S:08d}"
    assert (ck / "COMPLETE").is_file(), sorted((run / "checkpoints").iterdir())
    assert json.loads((ck / "train_state.json").read_text())["step"] == S


# Rank 1 of the first attempt writes STOP and dies at step 15, in one go: the stop request
# is then outstanding when torchrun starts the workers again (rank 0 cannot finish a stop
# without rank 1, so it cannot have taken the file away either). The file is dated 5 s
# back: a restart that took that long after it (two machines, a slow exit), where on one
# idle machine the new rank 0 may start within the second the old check tolerated.
STOP_THEN_DIE = """\
import os, pathlib, runpy, signal, sys, time
from infogan_dist import faults
inject = faults.inject

def stop_then_die(where, rank, step):
    if (where, rank, step) == ("step", 1, 15) and \\
            os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        stop = pathlib.Path(os.environ["STOP_FILE"])
        stop.touch()
        os.utime(stop, (time.time() - 5, time.time() - 5))
        os.kill(os.getpid(), signal.SIGKILL)
    inject(where, rank, step)

faults.inject = stop_then_die
sys.path.insert(0, {root!r})
sys.argv[0] = {train!r}
runpy.run_path({train!r}, run_name="__main__")
"""


@pytest.mark.integration
def test_a_stop_file_written_during_an_in_job_restart_is_honoured(shards, tmp_path):
    """A STOP written while torchrun restarts the workers (the soak's STOP striking the
    recovery of a dead rank; a Slurm USR1 arriving then) is for this job: the restarted
    rank 0 stops with a checkpoint instead of dropping it as a leftover of an earlier
    segment, which it is only when older than the launcher."""
    run = tmp_path / "stop"
    worker = tmp_path / "worker.py"
    worker.write_text(STOP_THEN_DIE.format(root=str(ROOT), train=str(ROOT / "train.py")))
    cmd = train_cmd(LAUNCH, SMOKE, *opts(shards, tmp_path, "train.max_steps=40",
                                         "checkpoint.every=10", "dist.timeout_s=20"),
                    extra_launch=("--max_restarts", "1", "--monitor_interval", "0.5"))
    cmd[cmd.index(str(ROOT / "train.py"))] = str(worker)
    env = signal_env() | {"STOP_FILE": str(run / "STOP")}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=DEADLINE_S)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert f"resumed from {run / 'checkpoints' / f'step-{10:08d}'} at step 10" in log
    steps = [m["step"] for m in metrics(run)]
    S = steps[-1]
    assert f"stopped (stop file {run / 'STOP'}) at step {S}" in log, log[-3000:]
    assert S < 40 and steps == list(range(1, S + 1))
    assert (run / "checkpoints" / f"step-{S:08d}" / "COMPLETE").is_file()
    assert not (run / "STOP").exists()


@pytest.mark.integration
def test_a_preemption_that_ends_the_wandb_service_still_stops_with_a_checkpoint(shards,
                                                                              tmp_path):
    """Slurm preempts by signalling every process of the job, W&B's service process
    (wandb-core, a child of rank 0) too, which then drops its connection to the trainer
    at once: in the soak, the stop's last metrics row went to a dead W&B, a traceback, no
    stop checkpoint. Here the service is killed outright before the trainer's SIGTERM (the
    same dead connection, in a fixed order): training must still stop with its
    checkpoint, W&B left off with one warning."""
    run = tmp_path / "stop"
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE),
           *opts(shards, tmp_path, "train.max_steps=100000", "checkpoint.every=100000",
                 "log.wandb=offline")]
    log = tmp_path / "train.log"
    with launched(cmd, signal_env(), log) as (proc, seen):
        poll(lambda: last_step(run) >= 2, "two steps", proc, log)
        service = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if p.name() == "wandb-core"]
        assert len(service) == 1, psutil.Process(proc.pid).children(recursive=True)
        seen += service
        service[0].kill()
        wait_gone(service, 60)  # a zombie until the trainer reaps it
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=DEADLINE_S)
    text = log.read_text()
    assert rc == 0 and "Traceback" not in text, text[-4000:]
    assert text.count("warning: W&B failed while ") == 1, text[-3000:]
    steps = [m["step"] for m in metrics(run)]
    S = steps[-1]
    assert f"stopped (SIGTERM) at step {S}" in text and steps == list(range(1, S + 1))
    assert (run / "checkpoints" / f"step-{S:08d}" / "COMPLETE").is_file()
