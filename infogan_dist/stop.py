"""Stop requests: SIGTERM / SIGUSR1 to any rank, or a STOP file in the run directory.

A handler only sets a flag; the training loop hands every rank's flag to
`ranks.StopAgreement` once per step, an asynchronous all-reduce read one step later (no
host sync), so all ranks stop after the same step (one step after the first rank saw the
request), save a checkpoint there and exit 0. The main process looks for the STOP file
at most once per second (STOP_FILE_POLL_S), not every step.

The launcher (torchrun, under `accelerate launch` with several processes) forwards
SIGTERM to the workers; it forwards SIGUSR1 only when its signal list includes it.
torch 2.14's launcher takes that list from `--signals-to-handle`, default
$PET_SIGNALS_TO_HANDLE, and overwrites TORCHELASTIC_SIGNALS_TO_HANDLE with it, so set
PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 (older torch read
TORCHELASTIC_SIGNALS_TO_HANDLE; setting both is harmless). Without it, SIGUSR1 kills the
launcher and leaves the workers training. After forwarding a signal the launcher exits 1
(torchrun re-raises it) although the workers stopped cleanly and exited 0. Slurm's batch
shell uses the STOP file instead.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOP_FILE_POLL_S = 1.0  # seconds between looks for the STOP file (a stat each)


def _process_start_time() -> float:
    """Wall-clock start of this process (a STOP file written after it is a live request)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class StopRequest:
    def __init__(self, stop_file: Path, is_main: bool):
        self.stop_file = stop_file
        self.is_main = is_main
        self.reason: str | None = None
        self.next_look = 0.0  # time.monotonic() of the next look for the STOP file
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.reason = signal.Signals(signum).name

    def local(self) -> bool:
        """This rank's view; the loop combines all ranks' views."""
        if self.reason is None and self.is_main and time.monotonic() >= self.next_look:
            self.next_look = time.monotonic() + STOP_FILE_POLL_S
            if self.stop_file.exists():
                self.reason = f"stop file {self.stop_file}"
        return self.reason is not None

    def clear_file(self) -> None:
        if self.is_main:
            self.stop_file.unlink(missing_ok=True)

    def clear_stale_file(self) -> None:
        """At start: drop a STOP left by an earlier segment, but keep one written while
        this process was starting (Slurm's USR1 can arrive during start-up)."""
        if self.is_main and self.stop_file.exists():
            if self.stop_file.stat().st_mtime < _process_start_time() - 1:
                self.stop_file.unlink(missing_ok=True)
