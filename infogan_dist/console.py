"""Console output that outlives its reader.

A trainer's stdout and stderr are often pipes: accelerate >= 1.16's one-process launcher
reads the trainer's stderr to tee it, and `accelerate launch ... | tee log` reads both.
When the reader dies (the launcher SIGKILLed, tee ended by the same Ctrl-C that asked the
run to stop), Python ignores the SIGPIPE and the next write raises BrokenPipeError in
whatever was printing: the progress bar, a warning, the "stopped at step S" line. The run
then dies without the checkpoint its stop was about to save (observed with accelerate
1.16: SIGKILL of the launcher, `log.progress=true`, no checkpoint).

`keep_writing()` wraps sys.stdout and sys.stderr: the first write or flush that fails
with a broken pipe points that descriptor at /dev/null (what the Python docs suggest for
SIGPIPE) and training goes on. What is printed after that is lost, as the dead reader
would have lost it; metrics.jsonl, the checkpoints and the pictures keep the record.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TextIO


def _broken(e: OSError) -> bool:
    return isinstance(e, BrokenPipeError) or e.errno in (errno.EPIPE, errno.ECONNRESET)


class SurvivingStream:
    """A text stream whose writes never fail because the reading end went away."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.broken = False  # True once the descriptor points at /dev/null

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            if not _broken(e):
                raise
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            if not _broken(e):
                raise
            self._to_devnull()

    def _to_devnull(self) -> None:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._stream.fileno())
        finally:
            os.close(null)
        self.broken = True
        try:  # what is still buffered goes to /dev/null now, not at exit (status 120)
            self._stream.flush()
        except OSError:
            pass

    def __getattr__(self, name: str):  # fileno, isatty, encoding, ... of the real stream
        return getattr(self._stream, name)


def keep_writing() -> None:
    """Wrap sys.stdout and sys.stderr (once); call before anything keeps a reference to
    them (tqdm takes sys.stderr when a bar is made)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, SurvivingStream):
            setattr(sys, name, SurvivingStream(stream))
