"""Stop requests: SIGTERM / SIGUSR1 to any rank, or a STOP file in the run directory.

A handler only sets a flag; the training loop asks every rank once per step
(`dist.agree`), so all ranks stop after the same step, save a checkpoint there and exit
0. The launcher (torchrun, under `accelerate launch` with several processes) forwards
SIGTERM to the workers; it forwards SIGUSR1 only when started with
TORCHELASTIC_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 (the Makefile and
slurm/infogan.sh set it). Slurm's batch shell uses the STOP file instead.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Exit status of a run that stopped on request after saving its checkpoint.
EXIT_STOPPED = 0


class StopRequest:
    def __init__(self, stop_file: Path, is_main: bool):
        self.stop_file = stop_file
        self.is_main = is_main
        self.reason: str | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.reason = signal.Signals(signum).name

    def local(self) -> bool:
        """This rank's view; the loop combines all ranks' views."""
        if self.reason is None and self.is_main and self.stop_file.exists():
            self.reason = f"stop file {self.stop_file}"
        return self.reason is not None

    def clear_file(self) -> None:
        if self.is_main:
            self.stop_file.unlink(missing_ok=True)
