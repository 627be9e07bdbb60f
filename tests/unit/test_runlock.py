"""The run-directory lock (issue 12): one training per run directory, stale locks taken
over, race-free between contenders. Holders are real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from infogan_dist import runlock
from infogan_dist.runlock import LOCK_NAME, STALE_S, RunLock, RunLockError, _boot_id

ROOT = Path(__file__).parents[2]
BOUND_S = 60  # generous upper bound on "eventually"

HOLDER = """\
import sys
from infogan_dist.runlock import RunLock, RunLockError
lock = RunLock(sys.argv[1], heartbeat_s=float(sys.argv[2]))
go = sys.argv[3] if len(sys.argv) > 3 else None
if go:  # contenders start together: each waits for the go file
    import os, time
    while not os.path.exists(go):
        time.sleep(0.001)
try:
    warnings = lock.acquire()
except RunLockError as e:
    print("refused", e, flush=True)
    sys.exit(2)
print("won", *warnings, flush=True)
sys.stdin.read()  # hold until the test closes our stdin; atexit releases the lock
"""


def start_holder(run_dir: Path, heartbeat_s: float = 0.2, go: Path | None = None):
    args = [sys.executable, "-c", HOLDER, str(run_dir), str(heartbeat_s)]
    if go is not None:
        args.append(str(go))
    return subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(cond, what: str):
    end = time.monotonic() + BOUND_S
    while not cond():
        assert time.monotonic() < end, f"no {what} within {BOUND_S} s"
        time.sleep(0.02)


def held_by(proc) -> dict:
    line = proc.stdout.readline()
    assert line.startswith("won"), line + proc.stderr.read()
    return line


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def test_a_live_holder_refuses_a_second_training(tmp_path, procs):
    run = tmp_path / "run"
    procs.append(holder := start_holder(run))
    held_by(holder)
    info = json.loads((run / LOCK_NAME).read_text())
    assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
    with pytest.raises(RunLockError) as e:
        RunLock(run).acquire()
    msg = str(e.value)
    assert "\n" not in msg
    assert f"run directory {run} is in use by another training (host {socket.gethostname()}, " \
           f"pid {holder.pid}, started {info['started']};" in msg
    assert "use another run.name" in msg
    # the refusal left the holder's lock as it was
    assert json.loads((run / LOCK_NAME).read_text())["token"] == info["token"]


def test_the_heartbeat_refreshes_the_lock_and_exit_releases_it(tmp_path, procs):
    run = tmp_path / "run"
    procs.append(holder := start_holder(run, heartbeat_s=0.2))
    held_by(holder)
    first = json.loads((run / LOCK_NAME).read_text())["heartbeat"]
    wait_for(lambda: json.loads((run / LOCK_NAME).read_text())["heartbeat"] > first,
             "refreshed heartbeat")
    holder.stdin.close()  # the holder exits normally
    assert holder.wait(timeout=BOUND_S) == 0
    # the lock made the run directory and nothing else wrote to it: no lock, no
    # temporary file, not even the directory is left
    assert not run.exists()


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path, procs):
    run = tmp_path / "run"
    procs.append(holder := start_holder(run))
    held_by(holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=BOUND_S)
    assert (run / LOCK_NAME).exists()  # nothing released it
    lock = RunLock(run)
    warnings = lock.acquire()
    try:
        assert len(warnings) == 1 and f"pid {holder.pid}" in warnings[0]
        assert f"process {holder.pid} is not running" in warnings[0]
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (run / LOCK_NAME).exists()


def _fake_lock(run: Path, **fields) -> None:
    run.mkdir(parents=True, exist_ok=True)
    info = {"host": "othernode", "boot_id": "x", "pid": 12345, "pid_start": 0.0,
            "started": "2026-01-01 00:00:00", "heartbeat": time.time(), "token": "t0"} | fields
    (run / LOCK_NAME).write_text(json.dumps(info))


def test_another_node_is_judged_by_its_heartbeat(tmp_path):
    run = tmp_path / "run"
    _fake_lock(run, heartbeat=time.time() - 5)  # another node, recent heartbeat: alive
    with pytest.raises(RunLockError, match="host othernode, pid 12345"):
        RunLock(run).acquire()
    _fake_lock(run, heartbeat=time.time() - STALE_S - 5)  # silent for over STALE_S: stale
    lock = RunLock(run)
    warnings = lock.acquire()
    lock.release()
    assert len(warnings) == 1 and "stale after 60 s" in warnings[0], warnings


def test_a_reused_pid_on_this_machine_is_stale(tmp_path):
    run = tmp_path / "run"
    parent = psutil.Process(os.getppid())  # alive, but not the process that took the lock
    _fake_lock(run, host=socket.gethostname(), boot_id=_boot_id(), pid=parent.pid,
               pid_start=parent.create_time() - 1000)
    lock = RunLock(run)
    warnings = lock.acquire()
    lock.release()
    assert warnings and f"pid {parent.pid} now belongs to another process" in warnings[0]


def test_two_contenders_for_a_stale_lock_one_wins(tmp_path, procs):
    """Six processes start together on a stale lock: exactly one takes it over, the
    others are refused naming the winner."""
    run, go = tmp_path / "run", tmp_path / "go"
    _fake_lock(run, heartbeat=time.time() - STALE_S - 5)
    procs += [start_holder(run, go=go) for _ in range(6)]
    go.touch()
    lines = {p.pid: p.stdout.readline() for p in procs}
    winners = [pid for pid, line in lines.items() if line.startswith("won")]
    assert len(winners) == 1, lines
    for pid, line in lines.items():
        if pid != winners[0]:
            assert line.startswith("refused") and f"pid {winners[0]}," in line, line
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == winners[0]


# --- two writers: the lock file deleted or replaced under a live holder (issue 29) ------

def test_a_deleted_lock_file_still_refuses_a_second_training(tmp_path, procs):
    """The holder keeps an flock on the run directory: deleting train.lock releases
    nothing, a contender is refused naming the holder, and the holder writes its lock
    file again at its next heartbeat."""
    run = tmp_path / "run"
    procs.append(holder := start_holder(run))
    held_by(holder)
    (run / LOCK_NAME).unlink()
    with pytest.raises(RunLockError, match=f"in use by another training .*pid {holder.pid},"):
        RunLock(run).acquire()
    wait_for(lambda: (run / LOCK_NAME).exists(), "lock file written again")
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == holder.pid
    holder.stdin.close()
    assert holder.wait(timeout=BOUND_S) == 0
    assert "was removed while this training held it" in holder.stderr.read()
    assert not (run / LOCK_NAME).exists()


def test_a_lock_taken_by_another_training_stops_the_holder_before_it_writes(tmp_path):
    """Another node's training took the lock (the file was deleted, then created by it):
    the holder's next check before a write raises, and its release leaves that lock."""
    run = tmp_path / "run"
    lock = RunLock(run, heartbeat_s=3600)  # no heartbeat during the test: the check alone
    lock.acquire()
    try:
        (run / LOCK_NAME).unlink()
        _fake_lock(run, host="node9", pid=777, token="other")
        with pytest.raises(RunLockError, match="taken over by another training "
                                               r"\(host node9, pid 777,"):
            runlock.ensure_held()
        with pytest.raises(RunLockError):  # and stays lost
            lock.ensure_held()
    finally:
        lock.release()
    assert json.loads((run / LOCK_NAME).read_text())["token"] == "other"
    runlock.ensure_held()  # no lock held in this process any more: a no-op
