"""Where a rank's start-up goes, said in one line by the main process once the
checkpoint is loaded: a restart after a fault is mostly start-up (docs/soak.md). Marks
are wall-clock times; each names what took the time since the one before, the first
since the process was created."""

from __future__ import annotations

import time

import psutil

_marks: list[tuple[str, float]] = []


def mark(what: str) -> None:
    """`what` took the time since the previous mark (or since the process began)."""
    _marks.append((what, time.time()))


def summary() -> str:
    """e.g. 'start-up 15.2 s: interpreter and imports 8.1, checks 0.6, ...'."""
    try:
        prev = start = psutil.Process().create_time()
    except psutil.Error:
        return ""
    parts = []
    for what, t in _marks:
        parts.append(f"{what} {t - prev:.1f}")
        prev = t
    return f"start-up {prev - start:.1f} s: {', '.join(parts)}"
