"""What every part of the GPU check shares: the context a part gets (Ctx: sizes for
the GPU run or the CPU self-test, trainer subprocesses under the part's budget), its
failure (PartFailed), metrics.jsonl and checkpoint readers, bitwise comparisons."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class PartFailed(RuntimeError):
    """A check inside a part did not hold; the message says which."""


@dataclasses.dataclass
class Ctx:
    out: Path
    scratch: Path
    shards: Path | None
    cuda: bool
    env: dict[str, str]  # for subprocesses
    report: dict[str, Any]
    deadline: float = 0.0  # monotonic; this part's
    startup_s: list[float] = dataclasses.field(default_factory=list)  # trainer start costs
    trainer_points: dict[str, dict] = dataclasses.field(default_factory=dict)
    trainer_ok: bool = True  # False once the environment part found the trainer cannot run

    @property
    def gpu(self) -> bool:
        return self.cuda

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # sizes: GPU run vs CPU self-test
    def tiny(self) -> list[str]:
        return [] if self.gpu else ["model.width=0.125", "train.global_batch_size=16"]

    def fp16(self) -> str:
        return "fp16" if self.gpu else "no"

    def train(self, name: str, config: str, overrides: list[str], fault: str | None = None,
              resume: str = "none", timeout: float | None = None,
              watch: Callable[[Path], bool] | None = None) -> tuple[Path, float]:
        """python train.py --config CONFIG ... into scratch/runs/NAME. Returns (run dir,
        wall seconds). `watch(run_dir)` is polled every 0.5 s; when it returns True the
        run is asked to stop (STOP file)."""
        if self.shards is None:
            raise PartFailed("no MNIST shards (see the environment part)")
        run_dir = self.scratch / "runs" / name
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / config),
               f"data.shards={self.shards}", "data.eval_shards=",
               f"run.output_dir={self.scratch / 'runs'}", f"run.name={name}",
               f"train.resume={resume}", "log.wandb=off", "log.progress=false", *overrides]
        env = dict(self.env)
        if fault:
            env["INFOGAN_FAULT"] = fault
        limit = self.left() if timeout is None else min(timeout, self.left())
        if limit <= 1:
            raise PartFailed(f"no time left in this part's budget to start {name}")
        log = self.scratch / f"{name}.log"
        t0 = time.monotonic()
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            stop_asked = False
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - t0 > limit:
                    _kill(proc)
                    raise PartFailed(f"{name}: killed after {limit:.0f} s (budget); "
                                     f"log {log}:\n{_tail(log)}") from None
                if watch is not None and not stop_asked and watch(run_dir):
                    (run_dir / "STOP").touch()
                    stop_asked = True
        wall = time.monotonic() - t0
        if rc != 0:
            raise PartFailed(f"{name}: train.py exited {rc}; log {log}:\n{_tail(log)}")
        return run_dir, wall


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def ckpt_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def finite_losses(rows: list[dict]) -> tuple[bool, list[str]]:
    bad = [f"step {r['step']} {k}={v}" for r in rows for k, v in r.items()
           if k.startswith(("loss/", "mi/")) and not math.isfinite(v)]
    return not bad and bool(rows), bad


def load_params(path: Path, buffers: bool = False) -> dict:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items()
            if buffers or not k.endswith(BN_BUFFERS)}


def same_tensors(a: dict, b: dict) -> list[str]:
    """Names that differ (bitwise), missing on one side included."""
    import torch

    diff = sorted(set(a) ^ set(b))
    for k in sorted(set(a) & set(b)):
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k]):
            diff.append(k)
    return diff


def same_obj(a: Any, b: Any, path: str = "") -> list[str]:
    """Recursive bitwise comparison of torch.load'ed objects."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
              and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))
        return [] if ok else [path or "."]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += same_obj(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [path]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in same_obj(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def torch_load(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
