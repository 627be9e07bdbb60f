"""What the soak reads from the run directory while the job runs: completed steps.

A step is complete when its row reaches metrics.jsonl (the soak trains with log.every=1,
so every step has one). The trainer appends rows, and on resume rewrites the file
without the rows after the checkpoint (a prefix of the old content); a replayed step
gets a new row (its wall-clock figures differ). So a row that was not in the file at the
previous look is a step completed since then, and a look that only found the file cut
back is no step at all.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StepSeen:
    t: float  # wall clock (time.time()) of the look that found it
    step: int


@dataclass
class MetricsWatch:
    path: Path
    content: bytes = b""  # the complete lines seen at the last look
    stamp: tuple[int, int, int] | None = None  # (inode, size, mtime) at the last look
    seen: list[StepSeen] = field(default_factory=list)  # every new row, in order

    def poll(self) -> list[StepSeen]:
        """New complete rows since the last look (a line being written waits). The whole
        file is read (about 0.5 kB a step): no guess about how it changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self.stamp:
            return []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        self.stamp = stamp
        data = data[: data.rfind(b"\n") + 1]  # complete lines only
        common = _common_prefix(data, self.content)
        common = data.rfind(b"\n", 0, common) + 1  # back to a line start
        self.content = data
        now, new = time.time(), []
        for line in data[common:].splitlines():  # empty when the file was only cut back
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "event" not in row:
                new.append(StepSeen(now, int(row["step"])))
        self.seen.extend(new)
        return new

    @property
    def last_step(self) -> int:
        lines = self.content.splitlines()
        for line in reversed(lines):
            try:
                return int(json.loads(line)["step"])
            except (ValueError, KeyError):
                continue
        return 0

    def first_after(self, t: float) -> StepSeen | None:
        return next((s for s in self.seen if s.t >= t), None)


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix (bisection over slice comparisons: C speed)."""
    if a.startswith(b):
        return len(b)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
