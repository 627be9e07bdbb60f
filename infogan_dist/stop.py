"""Stop requests: SIGTERM / SIGINT / SIGUSR1 to any rank, a STOP file in the run directory,
or the launcher going away.

A handler only sets a flag; the training loop hands every rank's flag to
`ranks.StopAgreement` once per step, an asynchronous all-reduce read one step later (no
host sync), so all ranks stop after the same step (one step after the first rank saw the
request), save a checkpoint there and exit 0. The main process looks for the STOP file
at most once per second (STOP_FILE_POLL_S), not every step.
SIGINT (Ctrl-C) is a stop request like SIGTERM: no KeyboardInterrupt, no traceback.
`install()` (train.py, first thing) takes the signals over before anything slow starts, so
a request made while the trainer is still starting is kept and acted on after step 1.

The launcher (torchrun, under `accelerate launch` with several processes) forwards
SIGTERM and SIGINT to the workers; it forwards SIGUSR1 only when its signal list includes it.
torch 2.14's launcher takes that list from `--signals-to-handle`, default
$PET_SIGNALS_TO_HANDLE, and overwrites TORCHELASTIC_SIGNALS_TO_HANDLE with it, so set
PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 (older torch read
TORCHELASTIC_SIGNALS_TO_HANDLE; setting both is harmless). After forwarding a signal
torchrun re-raises it although the workers stopped cleanly and exited 0: `accelerate
launch` exits 1 (1.15) or 128 + the signal (1.16). Slurm's batch shell uses the STOP
file instead.

When the launcher dies. Neither launcher guarantees its workers go with it: the simple
launcher of a one-process `accelerate launch` 1.15 dies of SIGTERM without passing it on
(1.16 passes it on, but nothing can pass on its SIGKILL), and torchrun starts each worker
in its own session, so a SIGKILL of torchrun (or of its process group) reaches no worker.
Either way the worker is reparented and would train on alone. `watch_launcher()` makes a
worker started by a launcher (not a plain `python train.py`) stop by itself, by two means:

- `prctl(PR_SET_PDEATHSIG, SIGTERM)`: the kernel sends SIGTERM the moment the parent
  *thread* that forked us exits. Under both launchers that thread is the launcher's main
  thread (`subprocess.Popen` in `simple_launcher`, and in torchrun's agent loop), which
  lives as long as the launcher, so the signal means "the launcher is gone" and arrives
  at once. Linux only.
- a daemon thread that polls `os.getppid()` every POLL_S seconds and, when the parent
  changed (we were reparented), sends this process SIGTERM. It covers what PDEATHSIG
  cannot: a parent that died before the prctl call (the parent pid is read when this
  module is imported, before torch), a parent that spawned us from a short-lived thread
  (PDEATHSIG would not mean "launcher gone" there, the poll does), and other systems.

Both end in the ordinary SIGTERM path: the ranks agree, save a checkpoint at the step
reached and exit 0 (after a SIGKILL of torchrun every worker gets its SIGTERM, so they
can still agree). If they cannot agree (another rank is gone too), the next collective
times out after dist.timeout_s and the process exits 1. As a last resort the watchdog
ends the process (exit 1) ORPHAN_GRACE_S seconds after the launcher went away, so no
orphan keeps writing into the run directory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import psutil

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
POLL_S = 1.0  # how often the watchdog looks for a new parent
ORPHAN_GRACE_S = 120.0  # launcher gone this long and still alive: exit 1 without a checkpoint
PR_SET_PDEATHSIG = 1
LAUNCHER_ENV = ("TORCHELASTIC_RUN_ID", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_CPU")

_PARENT_AT_IMPORT = os.getppid()
_pending: str | None = None  # a request made before the Trainer built its StopRequest
_current: StopRequest | None = None
STOP_FILE_POLL_S = 1.0  # seconds between looks for the STOP file (a stat each)


def _process_start_time() -> float:
    """Wall-clock start of this process."""
    try:
        return psutil.Process().create_time()
    except psutil.Error:
        return time.time()


def _segment_start_time() -> float:
    """Wall-clock start of this segment of the run: the launcher's under a launcher, else
    this process's. A STOP file written after it is a live request. The launcher outlives
    torchrun's in-job restarts: a STOP written between a dead rank 0 and its successor
    was meant for this job, and is no leftover of an earlier one."""
    if under_launcher():
        try:
            return psutil.Process(_PARENT_AT_IMPORT).create_time()
        except psutil.Error:
            pass
    return _process_start_time()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _pending
    name = signal.Signals(signum).name
    if _current is not None:
        if _current.reason is None:
            _current.reason = name
    elif _pending is None:
        _pending = name


def install() -> None:
    """Turn the stop signals into a request from now on (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)


def ignore_in_data_workers(worker_id: int) -> None:
    """worker_init_fn of the DataLoader workers (stream mode): ignore the stop signals.

    A launcher stops a rank by signalling its whole process group (torchrun: os.killpg on
    the session it started the rank in; Slurm: every process of the job), so the rank's
    DataLoader workers get the SIGTERM too. torch's worker handler dies of a SIGTERM its
    parent did not send, and the rank's next batch then raises "DataLoader worker ...
    killed by signal: Terminated" (a traceback, no checkpoint) instead of training the one
    step the stop agreement needs. Ignored here, a stop request is the trainer's alone; it
    ends its workers itself (their queues; a worker that outlives the trainer sees it gone
    through torch's watchdog and exits)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopRequest:
    def __init__(self, stop_file: Path, is_main: bool):
        global _current, _pending
        self.stop_file = stop_file
        self.is_main = is_main
        self.reason: str | None = _pending
        _pending = None
        _current = self
        install()
        self.next_look = 0.0  # time.monotonic() of the next look for the STOP file

    def local(self) -> bool:
        """This rank's view; the loop combines all ranks' views."""
        if self.reason is None and self.is_main and time.monotonic() >= self.next_look:
            self.next_look = time.monotonic() + STOP_FILE_POLL_S
            if self.stop_file.exists():
                self.reason = f"stop file {self.stop_file}"
        return self.reason is not None

    def clear_file(self) -> None:
        if self.is_main:
            _remove_stop(self.stop_file)

    def clear_stale_file(self) -> None:
        """At start: drop a STOP left by an earlier segment, but keep one written since
        this segment's launcher started: while this process was starting (Slurm's USR1
        can arrive during start-up), or while torchrun restarted the workers."""
        if self.is_main and self.stop_file.exists():
            if self.stop_file.stat().st_mtime < _segment_start_time() - 1:
                _remove_stop(self.stop_file)


def _remove_stop(path: Path) -> None:
    """Deletes the STOP file. Anything else made under its name (a directory) is a stop
    request too, but not ours to delete: a warning says what to remove."""
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:
        try:
            path.rmdir()  # an empty directory holds nothing
        except OSError:
            print(f"warning: {path} is a directory, not a STOP file; remove it, or every "
                  "launch stops after its first step", file=sys.stderr, flush=True)


# --- the launcher going away ------------------------------------------------------------

def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, poll_s: float, grace_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    print(f"warning: the launcher (pid {parent}) is gone; stopping at the next step "
          f"(exit without a checkpoint in {grace_s:.0f} s if the ranks cannot agree)",
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    print(f"error: still running {grace_s:.0f} s after the launcher (pid {parent}) went "
          "away; exiting without a checkpoint", file=sys.stderr, flush=True)
    os._exit(1)


def under_launcher() -> bool:
    """Started by `accelerate launch` (either launcher sets ACCELERATE_*) or torchrun."""
    return any(k in os.environ for k in LAUNCHER_ENV)


def watch_launcher(poll_s: float = POLL_S, grace_s: float = ORPHAN_GRACE_S) -> None:
    """Stop (SIGTERM to ourselves) when the launcher that started us goes away. Call once,
    from the main thread, after `install()`; the parent is the one seen at import. A plain
    `python train.py` has no launcher: its parent is a shell, which may well exit first
    (`nohup python train.py &`), so nothing is watched then."""
    if not under_launcher():
        return
    _set_pdeathsig(signal.SIGTERM)
    threading.Thread(target=_watch, args=(_PARENT_AT_IMPORT, poll_s, grace_s),
                     name="launcher-watchdog", daemon=True).start()
