"""One metrics reporter: collects scalars as device tensors every step, and at the log
interval averages them over steps and over ranks (one all-reduce, one host sync), then
writes `metrics.jsonl` and W&B on the main process with an explicit step."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch


class Reporter:
    def __init__(self, accelerator: Any, metrics_path: Path, global_batch: int):
        self.acc = accelerator
        self.path = metrics_path
        self.global_batch = global_batch
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0  # steps added since the last flush
        self.t0 = time.perf_counter()

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.steps += 1

    def flush(self, step: int, extra: dict[str, float] | None = None) -> dict[str, float]:
        """Collective: every rank calls it at the same steps."""
        keys = sorted(self.sums)
        values: dict[str, float] = {}
        if keys:
            vec = torch.stack([self.sums[k] for k in keys]) / max(self.steps, 1)
            vec = self.acc.reduce(vec, reduction="mean")
            values = dict(zip(keys, vec.tolist(), strict=True))  # the one host sync
        elapsed = time.perf_counter() - self.t0
        if self.steps:
            values["perf/images_per_s"] = self.global_batch * self.steps / elapsed
            values["perf/s_per_step"] = elapsed / self.steps
        values |= extra or {}
        self.sums, self.steps = {}, 0
        self.t0 = time.perf_counter()
        if self.acc.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
            self.acc.log(values, step=step)
        return values


def truncate_metrics(path: Path, step: int) -> int:
    """Drops entries after `step` (a resume from an older checkpoint replays them), so
    metrics.jsonl never holds two entries for one step. Returns how many were dropped."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a crash
            dropped += 1
            continue
        if entry.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".partial")
        tmp.write_text("".join(k + "\n" for k in kept))
        tmp.replace(path)
    return dropped
