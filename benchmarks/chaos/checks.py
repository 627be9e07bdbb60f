"""The invariants the soak checks at the end, each a function returning a Check: passed,
the figure that says so, and what failed.

- bitwise: the final G, D, optimizer and EMA states equal those of the reference run
  (the same training without faults), every bit;
- steps: every step 1..S exactly once in metrics.jsonl, in order, no gap;
- checkpoints: every checkpoint complete (COMPLETE, state, whole files) and finite;
- milestones: every multiple of checkpoint.keep_every up to S kept;
- processes: none of the run left (children of the soak, anything naming the run dir);
- temporaries: no `.tmp-*` (a save), `.*.tmp-<pid>` (a picture), `*.partial`, `*.part`
  (a cache fill), lock scratch file in the run directory or the node caches;
- lock: train.lock released;
- secrets: the fake S3 secret in no file of the run directory (binary too), nor in the
  launchers' logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

from infogan_dist.checkpoint import ABANDONED_PREFIX, PREFIX, checkpoint_problem

# the state files of a checkpoint that the bitwise check compares: G, D, the optimizers
# (D's, G's, and the info optimizer where the update rule has one), the generators
# sampled from (raw and EMA)
STATE_FILES = ("model.safetensors", "model_1.safetensors", "optimizer.bin", "optimizer_1.bin",
               "optimizer_2.bin", "generator.safetensors", "generator_ema.safetensors")


@dataclass
class Check:
    name: str
    passed: bool
    figure: str  # the number(s) that show it, for the report
    failures: list[str] = field(default_factory=list)


def _flatten(prefix: str, obj, out: dict[str, torch.Tensor]) -> None:
    if torch.is_tensor(obj):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = torch.tensor([hash(repr(obj))])  # hyper-parameters: equal or not


def state_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the state files, by file and key; never unpickles code."""
    out: dict[str, torch.Tensor] = {}
    for name in STATE_FILES:
        f = checkpoint / name
        if not f.exists():
            continue
        if f.suffix == ".safetensors":
            for k, v in load_file(str(f)).items():
                out[f"{name}:{k}"] = v
        else:
            _flatten(name, torch.load(f, map_location="cpu", weights_only=True), out)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def bitwise(final: Path, reference: Path) -> Check:
    a, b = state_tensors(final), state_tensors(reference)
    failures = []
    if a.keys() != b.keys():
        failures.append(f"different entries: only in the soak {sorted(a.keys() - b.keys())[:5]}, "
                        f"only in the reference {sorted(b.keys() - a.keys())[:5]}")
    common = sorted(a.keys() & b.keys())
    differ = [k for k in common if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype
              or not torch.equal(_bits(a[k]), _bits(b[k]))]
    failures += [f"{k} differs" for k in differ[:10]]
    if len(differ) > 10:
        failures.append(f"... and {len(differ) - 10} more")
    nbytes = sum(a[k].numel() * a[k].element_size() for k in common)
    files = sorted({k.split(":")[0].split(".")[0] for k in common})
    return Check("final state bitwise equal to the reference", not failures,
                 f"{len(common) - len(differ)}/{len(common)} tensors equal ({nbytes / 1e6:.2f} MB "
                 f"in {len(files)} files: {', '.join(files)}; step {final.name[len(PREFIX):]})",
                 failures)


def steps_once(rows: list[dict], last: int) -> Check:
    steps = [r["step"] for r in rows if "event" not in r]
    events = [r for r in rows if "event" in r]
    failures = []
    if steps != list(range(1, last + 1)):
        seen: dict[int, int] = {}
        for s in steps:
            seen[s] = seen.get(s, 0) + 1
        twice = sorted(s for s, n in seen.items() if n > 1)
        missing = sorted(set(range(1, last + 1)) - set(seen))
        disorder = sum(1 for x, y in zip(steps, steps[1:], strict=False) if y <= x)
        failures.append(f"{len(twice)} step(s) logged twice {twice[:10]}, {len(missing)} "
                        f"missing {missing[:10]}, {disorder} out of order")
    if events:
        failures.append(f"{len(events)} event row(s): {events[:2]}")
    return Check("every step exactly once in metrics.jsonl", not failures,
                 f"{len(steps)} rows for steps 1..{last}", failures)


def checkpoints_sound(run_dir: Path) -> Check:
    root = run_dir / "checkpoints"
    dirs = sorted(p for p in root.iterdir() if p.name.startswith((PREFIX, ABANDONED_PREFIX)))
    failures = []
    for p in dirs:
        problem = checkpoint_problem(p)
        if problem:
            failures.append(f"{p.name}: {problem}")
            continue
        bad = [k for k, t in state_tensors(p).items()
               if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            failures.append(f"{p.name}: non-finite {bad[:3]}")
        if p.name.startswith(ABANDONED_PREFIX):
            failures.append(f"{p.name}: set aside (a resume from an older checkpoint)")
    return Check("every checkpoint complete and finite", not failures,
                 f"{len(dirs) - len(failures)}/{len(dirs)} complete and finite "
                 f"({', '.join(p.name[len(PREFIX):].lstrip('0') for p in dirs)})", failures)


def milestones_kept(run_dir: Path, keep_every: int, last: int) -> Check:
    want = list(range(keep_every, last + 1, keep_every)) if keep_every else []
    missing = [s for s in want if checkpoint_problem(
        run_dir / "checkpoints" / f"{PREFIX}{s:08d}") is not None]
    return Check("milestones kept", not missing,
                 f"{len(want) - len(missing)}/{len(want)} (every {keep_every} steps)",
                 [f"step {s} missing or incomplete" for s in missing])


def no_processes(run_dir: Path, soak_pid: int) -> Check:
    """Nothing under the soak (its servers are stopped by then) and nothing whose command
    line names the run directory."""
    left = []
    try:
        children = psutil.Process(soak_pid).children(recursive=True)
    except psutil.Error:
        children = []
    for p in children:
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
            left.append(p)
    needle = str(run_dir)
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != soak_pid and any(needle in a for a in (p.info["cmdline"] or [])):
                if p.status() != psutil.STATUS_ZOMBIE and p not in left:
                    left.append(p)
        except psutil.Error:
            continue
    failures = []
    for p in left:
        try:
            failures.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            continue
    return Check("no process of the run left", not failures,
                 f"{len(failures)} left", failures)


def no_temporaries(dirs: list[Path]) -> Check:
    left = []
    for d in dirs:
        for dirpath, dirnames, filenames in os.walk(d):
            for name in dirnames + filenames:
                if ".tmp-" in name or name.startswith((".train.lock.", ".old-best")) or \
                        name.endswith((".partial", ".part")):
                    left.append(str(Path(dirpath, name)))
    return Check("no temporary file or directory left", not left,
                 f"{len(left)} left in {len(dirs)} directories", left[:20])


def lock_released(run_dir: Path) -> Check:
    lock = run_dir / "train.lock"
    return Check("train.lock released", not lock.exists(),
                 "absent" if not lock.exists() else "present",
                 [] if not lock.exists() else [f"{lock}: {lock.read_text()[:200]}"])


def no_secret(dirs: list[Path], secret: str) -> Check:
    needle = secret.encode()
    files, found = 0, []
    for d in dirs:
        for dirpath, _, filenames in os.walk(d):
            for name in filenames:
                f = Path(dirpath, name)
                if f.is_symlink() or not f.is_file():
                    continue
                files += 1
                with open(f, "rb") as fh:
                    tail = b""
                    while chunk := fh.read(1 << 20):
                        if needle in tail + chunk:
                            found.append(str(f))
                            break
                        tail = chunk[-len(needle):]
    return Check("no secret in any file", not found,
                 f"{len(found)} of {files} files hold it", found[:20])
