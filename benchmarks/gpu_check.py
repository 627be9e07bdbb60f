"""The whole GPU verification in one command (issue 15), at most 8 minutes on one GPU.

    make gpu-check OUT=runs/gpu-check [WHEELS=.whl] [MNIST=data/mnist/test10k]
    PYTHONPATH=. python3 benchmarks/gpu_check.py --out DIR [--wheels DIR] [--mnist DIR]
        [--budget-s 480] [--parts a,b] [--self-test]

Writes DIR/gpu-check.json (after every part) and DIR/gpu-check.md (rendered from the
JSON, after every part and at the end). Each part runs in try/except with its own time
budget inside the global one; a failed part is recorded with its error and the next part
runs. Exit status 0 when the check ran (read the report for failed parts), 2 for bad
arguments. On a machine without CUDA the report says "no CUDA" and the parts run as a
CPU self-test (tiny sizes, fp32/bf16 in place of fp16) that exercises their code.

Parts (GPU sizes; budget in seconds):
  environment    GPU, driver, versions, missing modules, data                     10
  precisions     configs/mnist.yaml, 40 steps each of fp32, bf16, fp16: finite     75
                 losses (and the batch-128 throughput points of the trainer)
  fp16_overflow  INFOGAN_FAULT=overflow_D:0:4: exactly D's step 4 is skipped, the    45
                 scale halves once, D's weights and Adam state unchanged at step 4,
                 G's changed; training goes on with finite losses
  fp16_resume    configs/mnist_mlp.yaml fp16: 20 steps == 10 + resume to 20, bitwise  50
                 (G, D, the three Adams, the GradScaler)
  host_syncs     torch.cuda.set_sync_debug_mode over steady-state steps: syncs per    45
                 step and where (bf16, fp16); one step under "error"
  compile        train.compile on vs off (only if the config has the key)           40
  time_to_95     configs/mnist.yaml fp32, one seed: seconds and images until          120
                 eval/acc/c1 >= 0.95 (first 2,000 digits), then STOP
  throughput     configs/mnist_mlp.yaml and configs/mnist.yaml, global batch 64, 128, rest
                 512, 2048 x fp32/bf16/fp16: the trainer (python train.py, images/s
                 from metrics.jsonl after a warm-up interval) against
                 benchmarks/eager_loop.py on the same GPU; the plan is printed with
                 estimated seconds, points that do not fit are listed as not run

Needs: torch, accelerate, numpy, scipy, pillow, safetensors, pyyaml, tqdm; the trainer's
data layer also imports webdataset and braceexpand (from --wheels when missing; without
them only the environment and eager parts can run). W&B is always off (log.wandb=off).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GLOBAL_BUDGET_S = 480.0
RESERVE_S = 10.0  # kept back for the report
PART_BUDGETS = {  # seconds, GPU mode; the self-test uses the same parts at tiny sizes
    "environment": 10, "precisions": 75, "fp16_overflow": 45, "fp16_resume": 50,
    "host_syncs": 45, "compile": 40, "time_to_95": 120, "throughput": 10_000,
}
PARTS = list(PART_BUDGETS)
# The CPU self-test (no CUDA; `make test` runs it) has no time budget: it runs tiny sizes
# whose time says nothing, and a budget there would make its verdict depend on the
# machine's load (a compile part was once killed after 79 s on a busy 2-core machine).
# It waits for each part's outcome. Budgets are for the real GPU run, where the device
# time is what is rationed; `--budget-s` still sets one explicitly.
NO_BUDGET = math.inf
OPTIONAL_MODULES = ("webdataset", "braceexpand", "wandb")
CONFIGS = ("configs/mnist_mlp.yaml", "configs/mnist.yaml")
BATCHES = (64, 128, 512, 2048)
PRECISIONS = ("no", "bf16", "fp16")  # "no" = fp32
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class PartFailed(RuntimeError):
    """A check inside a part did not hold; the message says which."""


# --- the context every part gets ---------------------------------------------------------
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


# --- comparing checkpoint files ------------------------------------------------------------
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


# --- parts -------------------------------------------------------------------------------
def part_environment(ctx: Ctx) -> dict:
    import accelerate
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "accelerate": accelerate.__version__, "cuda_available": ctx.cuda,
        "torch_cuda": torch.version.cuda, "host": platform.node(),
        "cpu_count": os.cpu_count(), "shards": str(ctx.shards) if ctx.shards else None,
        "missing_modules": [m for m in OPTIONAL_MODULES if not _importable(m)],
        "wandb": "off (log.wandb=off in every run)",
    }
    if ctx.cuda:
        p = torch.cuda.get_device_properties(0)
        env |= {"gpu": torch.cuda.get_device_name(0), "gpu_count": torch.cuda.device_count(),
                "capability": f"{p.major}.{p.minor}",
                "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                "cudnn": torch.backends.cudnn.version(),
                "bf16_supported": torch.cuda.is_bf16_supported()}
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(Exception):
            r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=10)
            env["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
    need = [m for m in ("webdataset", "braceexpand") if m in env["missing_modules"]]
    if need:
        raise PartFailed(f"the trainer cannot start: {', '.join(need)} not importable "
                         "(carry wheels: WHEELS=DIR; see docs/gpu-check.md)")
    if ctx.shards is None:
        raise PartFailed("no MNIST data: give MNIST=DIR (shards with index.json, or the "
                         "IDX files t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz)")
    ctx.report["machine"] = env
    return env


THROUGHPUT_STEPS = (10, 30)  # warm-up interval (discarded), measured steps (GPU)


def throughput_overrides(ctx: Ctx, batch: int, precision: str) -> tuple[list[str], int, int]:
    warm, measure = THROUGHPUT_STEPS if ctx.gpu else (1, 2)
    steps = warm + measure
    o = [f"train.global_batch_size={batch}", f"train.precision={precision}",
         f"train.max_steps={steps}", f"log.every={warm}", f"checkpoint.every={steps}",
         "log.images_every=0", "log.eval_every=0"]
    if not ctx.gpu:
        o.append("model.width=0.125")
    return o, warm, measure


def trainer_images_per_s(rows: list[dict], warm: int) -> float:
    """Images/s over the rows after the first (warm-up) interval."""
    timed = [r for r in rows if r["step"] > warm and "perf/s_per_step" in r]
    if not timed:
        raise PartFailed("no timed metrics rows after the warm-up interval")
    images = seconds = 0.0
    prev = warm
    for r in timed:
        n = r["step"] - prev
        seconds += r["perf/s_per_step"] * n
        images += r["perf/images_per_s"] * r["perf/s_per_step"] * n
        prev = r["step"]
    return images / seconds


def trainer_point(ctx: Ctx, config: str, batch: int, precision: str,
                  timeout: float | None = None) -> dict:
    overrides, warm, measure = throughput_overrides(ctx, batch, precision)
    name = f"tp-{Path(config).stem}-{batch}-{precision}"
    run_dir, wall = ctx.train(name, config, overrides, timeout=timeout)
    rows = metrics(run_dir)
    ips = trainer_images_per_s(rows, warm)
    ctx.startup_s.append(max(0.0, wall - (warm + measure) * batch / ips))
    ok, bad = finite_losses(rows)
    point = {"config": config, "batch": batch, "precision": precision,
             "trainer_images_per_s": ips, "trainer_wall_s": wall, "finite": ok,
             "final": {k: v for k, v in rows[-1].items() if k.startswith(("loss/", "amp/"))}}
    if not ok:
        point["nonfinite"] = bad[:5]
    ctx.trainer_points[f"{config}|{batch}|{precision}"] = point
    return point


def part_precisions(ctx: Ctx) -> dict:
    """configs/mnist.yaml at its batch (128) in fp32, bf16 and fp16: finite losses."""
    precs = PRECISIONS if ctx.gpu else ("bf16",)  # self-test: one run (start-up costs)
    batch = 128 if ctx.gpu else 16
    out, failures = {}, []
    for p in precs:
        try:
            pt = trainer_point(ctx, "configs/mnist.yaml", batch, p)
            out[p] = pt
            if not pt["finite"]:
                failures.append(f"{p}: non-finite {pt.get('nonfinite')}")
        except PartFailed as e:
            out[p] = {"error": str(e)[:2000]}
            failures.append(f"{p}: {str(e).splitlines()[0]}")
    if failures:
        raise PartFailed("; ".join(failures), out)
    return out


def part_fp16_overflow(ctx: Ctx) -> dict:
    """INFOGAN_FAULT=overflow_D:0:K (faults.poison_grads, called between the D phase's
    backward and its optimizer step). Under fp16 Accelerate's shared GradScaler finds the
    inf and skips D's step, and update() halves the scale before G's backward; on the CPU
    self-test (no scaler) the inf reaches D's weights instead."""
    k, steps = (4, 6) if ctx.gpu else (2, 3)
    prec = ctx.fp16()
    overrides = [f"train.precision={prec}", f"train.max_steps={steps}", "log.every=1",
                 "checkpoint.every=1", "checkpoint.keep=20", "log.images_every=0",
                 "log.eval_every=0", *(["model.width=0.5"] if ctx.gpu else ctx.tiny())]
    run_dir, wall = ctx.train("fp16-overflow", "configs/mnist.yaml", overrides,
                              fault=f"overflow_D:0:{k}")
    rows = {r["step"]: r for r in metrics(run_dir)}
    d_prev = load_params(ckpt_dir(run_dir, k - 1) / "model_1.safetensors")
    d_k = load_params(ckpt_dir(run_dir, k) / "model_1.safetensors")
    g_prev = load_params(ckpt_dir(run_dir, k - 1) / "model.safetensors")
    g_k = load_params(ckpt_dir(run_dir, k) / "model.safetensors")
    res: dict[str, Any] = {"fault": f"overflow_D:0:{k}", "precision": prec, "steps": steps,
                           "wall_s": wall}
    checks: list[tuple[str, bool]] = []
    if ctx.gpu:
        amp = {s: (r.get("amp/scale"), r.get("amp/skipped_steps")) for s, r in rows.items()}
        res["amp_by_step"] = amp
        scale_prev, skip_prev = amp[k - 1]
        scale_k, skip_k = amp[k]
        res["natural_skips_before_fault"] = skip_prev
        d_opt_prev = torch_load(ckpt_dir(run_dir, k - 1) / "optimizer.bin")
        d_opt_k = torch_load(ckpt_dir(run_dir, k) / "optimizer.bin")
        g_opt_prev = torch_load(ckpt_dir(run_dir, k - 1) / "optimizer_1.bin")
        g_opt_k = torch_load(ckpt_dir(run_dir, k) / "optimizer_1.bin")
        d_last = load_params(ckpt_dir(run_dir, steps) / "model_1.safetensors")
        ok, bad = finite_losses(list(rows.values()))
        checks += [
            (f"amp/skipped_steps +1 at step {k} ({skip_prev} -> {skip_k})",
             skip_k == skip_prev + 1),
            (f"amp/scale halves once at step {k} ({scale_prev} -> {scale_k})",
             scale_k == scale_prev / 2),
            (f"D's parameters unchanged by step {k}", not same_tensors(d_prev, d_k)),
            (f"D's Adam state unchanged by step {k}", not same_obj(d_opt_prev, d_opt_k)),
            (f"G's parameters changed at step {k}", bool(same_tensors(g_prev, g_k))),
            (f"G's Adam state changed at step {k}", bool(same_obj(g_opt_prev, g_opt_k))),
            (f"D trains again after step {k}", bool(same_tensors(d_k, d_last))),
            ("finite losses in every row", ok),
            ("no further skipped step after the fault",
             all(amp[s][1] == skip_k for s in amp if s > k)),
        ]
        if not ok:
            res["nonfinite"] = bad[:5]
    else:
        import torch

        has_amp = any(key.startswith("amp/") for r in rows.values() for key in r)
        # No scaler to skip the step: the inf reaches D's weights, the divergence guard
        # (train.nonfinite=rollback) sees it at the step's log, rolls back to step k-1 and
        # replays step k without the fault (it fires once per process); no checkpoint
        # ever holds the inf.
        events = [r for r in metrics(run_dir) if r.get("event") == "rollback"]
        d_last = load_params(ckpt_dir(run_dir, steps) / "model_1.safetensors")
        checks += [
            ("no amp/* metrics without a scaler", not has_amp),
            (f"D finite at step {k - 1}", all(torch.isfinite(v).all() for v in d_prev.values())),
            (f"the inf reached D's weights at step {k}: one rollback to step {k - 1}",
             [(e["step"], e["diverged_step"]) for e in events] == [(k - 1, k)]),
            ("every checkpoint finite, the run finished",
             all(torch.isfinite(v).all() for d in (d_k, d_last) for v in d.values())),
        ]
    res["checks"] = {name: ok for name, ok in checks}
    failed = [name for name, ok in checks if not ok]
    if failed:
        raise PartFailed("; ".join(failed), res)
    return res


def part_fp16_resume(ctx: Ctx) -> dict:
    """20 steps uninterrupted vs 10 + resume to 20 (configs/mnist_mlp.yaml: no conv and
    no grid_sample, whose CUDA backward kernels are not deterministic), bitwise: G, D,
    every Adam, the GradScaler (scaler.pt) and train_state.json. If they differ, a second
    uninterrupted run tells GPU non-determinism from a resume bug."""
    n = 10 if ctx.gpu else 2
    prec = ctx.fp16()
    base = [f"train.precision={prec}", "log.every=5", f"checkpoint.every={n}",
            "log.images_every=0", "log.eval_every=0", *ctx.tiny()]
    a, _ = ctx.train("resume-straight", "configs/mnist_mlp.yaml",
                     [*base, f"train.max_steps={2 * n}"])
    b, _ = ctx.train("resume-split", "configs/mnist_mlp.yaml", [*base, f"train.max_steps={n}"])
    b, _ = ctx.train("resume-split", "configs/mnist_mlp.yaml",
                     [*base, f"train.max_steps={2 * n}"], resume="auto")
    diffs = compare_checkpoints(ckpt_dir(a, 2 * n), ckpt_dir(b, 2 * n))
    res: dict[str, Any] = {"precision": prec, "steps": f"{2 * n} vs {n} + {n}",
                           "differences": diffs[:20]}
    has_scaler = (ckpt_dir(a, 2 * n) / "scaler.pt").exists()
    res["scaler_state_compared"] = has_scaler
    if has_scaler:
        res["scaler"] = torch_load(ckpt_dir(a, 2 * n) / "scaler.pt")
    if ctx.gpu and not has_scaler:
        raise PartFailed("fp16 checkpoint without scaler.pt", res)
    if diffs:
        try:
            c, _ = ctx.train("resume-straight-2", "configs/mnist_mlp.yaml",
                             [*base, f"train.max_steps={2 * n}"])
            control = compare_checkpoints(ckpt_dir(a, 2 * n), ckpt_dir(c, 2 * n))
            res["control_two_straight_runs_differ"] = control[:20]
            said = f"{len(control)} (non-determinism of the GPU if > 0)"
        except PartFailed as e:
            said = f"unknown (the control run failed: {str(e).splitlines()[0]})"
        raise PartFailed(f"resumed run differs from the uninterrupted one in {len(diffs)} "
                         f"entries (first: {diffs[:3]}); two uninterrupted runs differ in "
                         f"{said}", res)
    return res


def compare_checkpoints(x: Path, y: Path) -> list[str]:
    diffs: list[str] = []
    for f in sorted(p.name for p in x.iterdir()):
        if f.endswith(".safetensors"):
            diffs += [f"{f}:{k}" for k in same_tensors(load_params(x / f, buffers=True),
                                                      load_params(y / f, buffers=True))]
        elif f.startswith("optimizer") or f == "scaler.pt":
            diffs += [f"{f}{d}" for d in same_obj(torch_load(x / f), torch_load(y / f))]
        elif f == "train_state.json":
            sx, sy = json.loads((x / f).read_text()), json.loads((y / f).read_text())
            diffs += [f"{f}/{k}" for k in sorted(set(sx) | set(sy)) if sx.get(k) != sy.get(k)]
    return diffs


def part_host_syncs(ctx: Ctx) -> dict:
    """Counts host syncs per steady-state iteration in a subprocess that drives the
    Trainer in-process (`--probe-syncs`, below)."""
    precs = ("bf16", "fp16") if ctx.gpu else ("no",)
    out: dict[str, Any] = {}
    failures = []
    for p in precs:
        probe_out = ctx.scratch / f"syncs-{p}.json"
        args = {"config": "configs/mnist.yaml", "precision": p, "out": str(probe_out),
                "steps": 12 if ctx.gpu else 5, "first": 3 if ctx.gpu else 2,
                "overrides": ctx.tiny()}
        try:
            out[p] = run_probe(ctx, args)
        except PartFailed as e:
            out[p] = {"error": str(e)[:2000]}
            failures.append(f"{p}: {str(e).splitlines()[0]}")
    if failures:
        raise PartFailed("; ".join(failures), out)
    return out


def run_probe(ctx: Ctx, args: dict) -> dict:
    if ctx.shards is None:
        raise PartFailed("no MNIST shards")
    args = dict(args, shards=str(ctx.shards), scratch=str(ctx.scratch))
    log = ctx.scratch / f"probe-{args['precision']}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe-syncs", json.dumps(args)]
    limit = ctx.left()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=ctx.env, stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(limit, 1) if math.isfinite(limit) else None
                                ).returncode
        except subprocess.TimeoutExpired:
            raise PartFailed(f"probe killed after {limit:.0f} s; log {log}:\n{_tail(log)}"
                             ) from None
    if rc != 0 or not Path(args["out"]).exists():
        raise PartFailed(f"probe exited {rc}; log {log}:\n{_tail(log)}")
    return json.loads(Path(args["out"]).read_text())


def probe_syncs(args: dict) -> int:
    """In a fresh process: builds the Trainer, wraps its train_step, and records every
    call torch's sync-debug mode flags. "warn" mode (every flagged call is a warning,
    recorded with the Python line that made it) is on from the first iteration measured
    to the end of the loop; the iterations counted are those that do no logging,
    checkpoint, picture or evaluation work. The last train_step runs under "error"."""
    import torch

    from infogan_dist.config import load_config
    from infogan_dist.preflight import preflight
    from infogan_dist.trainer import Trainer

    steps, first = args["steps"], args["first"]
    overrides = [f"data.shards={args['shards']}", "data.eval_shards=",
                 f"run.output_dir={Path(args['scratch']) / 'runs'}",
                 f"run.name=syncs-{args['precision']}-{os.getpid()}", "train.resume=none",
                 "log.wandb=off",
                 "log.progress=false", f"train.precision={args['precision']}",
                 f"train.max_steps={steps}", f"log.every={steps}", f"checkpoint.every={steps}",
                 "log.images_every=0", "log.eval_every=0", *args["overrides"]]
    cfg = load_config(args["config"], overrides)
    trainer = Trainer(cfg, preflight(cfg))
    # "sync_debug": False skips the CUDA calls (CPU self-test); True forces them (a CPU
    # test of this bookkeeping fakes torch.cuda.set_sync_debug_mode).
    cuda = bool(args.get("sync_debug", torch.cuda.is_available()))
    inner = trainer.train_step
    records: list[warnings.WarningMessage] = []
    marks: dict[int, int] = {}  # step -> index into records at its train_step's entry
    error_step = steps - 1  # not the last step (that one logs and saves)
    result: dict[str, Any] = {"precision": args["precision"], "cuda": cuda,
                              "steady_steps": list(range(first, error_step))}

    def wrapped(images):
        step = trainer.state.step + 1
        marks[step] = len(records)
        if not cuda:
            return inner(images)
        if step == first:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        if step == error_step:
            torch.cuda.set_sync_debug_mode("error")
            try:
                out = inner(images)
                result["error_mode_step"] = {"step": step, "raised": None}
            except RuntimeError as e:
                tb = traceback.extract_tb(e.__traceback__)
                ours = [f"{Path(fr.filename).name}:{fr.lineno} {fr.line}" for fr in tb
                        if "infogan_dist" in fr.filename or "accelerate" in fr.filename]
                result["error_mode_step"] = {"step": step, "raised": str(e)[:300],
                                             "at": ours[-3:]}
                raise
            finally:
                torch.cuda.set_sync_debug_mode("warn")
            return out
        return inner(images)

    trainer.train_step = wrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = caught  # the list catch_warnings appends to
        try:
            trainer.fit()
        except RuntimeError:
            pass  # the "error" step raised: recorded above
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    per_iter: dict[int, list[str]] = {}
    for s in result["steady_steps"]:
        lo, hi = marks.get(s), marks.get(s + 1)
        if lo is None or hi is None:
            continue
        per_iter[s] = [f"{Path(w.filename).name}:{w.lineno}" for w in records[lo:hi]
                       if "synchroniz" in str(w.message)]
    result["syncs_per_iteration"] = {s: len(v) for s, v in per_iter.items()}
    sites: dict[str, int] = {}
    for v in per_iter.values():
        for site in v:
            sites[site] = sites.get(site, 0) + 1
    result["sites"] = dict(sorted(sites.items(), key=lambda kv: -kv[1]))
    Path(args["out"]).write_text(json.dumps(result, indent=1))
    return 0


def part_compile(ctx: Ctx) -> dict:
    from infogan_dist.config import TrainConfig

    if "compile" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return {"skipped": "train.compile does not exist in this version of the config"}
    n = 5 if ctx.gpu else 2
    base = ["log.every=1", f"train.max_steps={n}", f"checkpoint.every={n}",
            "log.images_every=0", "log.eval_every=0", *ctx.tiny()]
    off, _ = ctx.train("compile-off", "configs/mnist.yaml", [*base, "train.compile=false"])
    on, _ = ctx.train("compile-on", "configs/mnist.yaml", [*base, "train.compile=true"])
    tol = 1e-3
    worst = 0.0
    for ra, rb in zip(metrics(off), metrics(on), strict=True):
        for k in ra:
            if k.startswith("loss/"):
                worst = max(worst, abs(ra[k] - rb[k]) / max(1.0, abs(ra[k])))
    res = {"steps": n, "max_relative_loss_difference": worst, "tolerance": tol}
    if worst > tol:
        raise PartFailed(f"compiled losses differ by {worst:.2e} > {tol}", res)
    return res


def part_time_to_95(ctx: Ctx) -> dict:
    """configs/mnist.yaml fp32 seed 0; eval/acc/c1 every 100 steps on the first 2,000
    digits; the run is stopped (STOP file) once it is >= 0.95."""
    every = 100 if ctx.gpu else 2
    overrides = ["train.precision=no", f"log.eval_every={every}", f"log.every={every}",
                 "log.images_every=0", "checkpoint.every=100000", "run.seed=0"]
    if not ctx.gpu:
        overrides += [*ctx.tiny(), "train.max_steps=4"]
    reached: dict[str, Any] = {}

    def watch(run_dir: Path) -> bool:
        for r in metrics(run_dir):
            if r.get("eval/acc/c1", 0.0) >= 0.95:
                reached.setdefault("row", r)
                return True
        return False

    run_dir, wall = ctx.train("time-to-95", "configs/mnist.yaml", overrides, watch=watch)
    rows = metrics(run_dir)
    seconds, first = 0.0, None
    prev, batch = 0, 128 if ctx.gpu else 16
    best = 0.0
    for r in rows:
        seconds += r.get("perf/s_per_step", 0.0) * (r["step"] - prev)
        prev = r["step"]
        acc = r.get("eval/acc/c1")
        if acc is not None:
            best = max(best, acc)
            if acc >= 0.95 and first is None:
                first = {"step": r["step"], "train_s": seconds,
                         "images": int(r.get("progress/images_seen", r["step"] * batch)),
                         "acc": acc}
    res = {"reached": first is not None, "first": first, "best_acc": best,
           "wall_s_process": wall, "eval_every": every,
           "note": "train_s: sum of perf/s_per_step up to that row (training, evaluation "
                   "every eval_every steps and the flushes; not process start-up)"}
    if ctx.gpu and first is None:
        raise PartFailed(f"95% not reached (best {best:.4f}) within the budget", res)
    return res


def part_throughput(ctx: Ctx) -> dict:
    """Trainer vs eager loop. Priority: batch 64 fp32 first (the 0.9x target), then the
    rest of fp32, bf16, fp16. A point runs only if its estimate fits the time left."""
    from benchmarks.eager_loop import eager_throughput

    if ctx.gpu:
        order = [(c, b, p) for p in PRECISIONS for b in BATCHES for c in CONFIGS]
        warm, measure = THROUGHPUT_STEPS
    else:
        order = [("configs/mnist_mlp.yaml", 16, "no"), ("configs/mnist.yaml", 16, "bf16")]
        warm, measure = 1, 2
    startup = (sorted(ctx.startup_s)[len(ctx.startup_s) // 2] if ctx.startup_s else 10.0)
    plan = []
    for c, b, p in order:
        key = f"{c}|{b}|{p}"
        est = 0.0 if key in ctx.trainer_points else startup + 3.0
        est += 2.0 + (warm + measure) * b / 20000.0  # eager, and a guess of step time
        plan.append({"config": c, "batch": b, "precision": p, "estimate_s": round(est, 1)})
    total = sum(x["estimate_s"] for x in plan)
    print(f"throughput plan: {len(plan)} points, about {total:.0f} s estimated "
          f"(trainer start-up about {startup:.1f} s each), {ctx.left():.0f} s left", flush=True)
    for x in plan:
        print(f"  {x['config']} batch {x['batch']} {x['precision']}: ~{x['estimate_s']} s",
              flush=True)
    points, not_run = [], []
    device = "cuda" if ctx.gpu else "cpu"
    for x in plan:
        if x["estimate_s"] > ctx.left():
            not_run.append(x)
            continue
        c, b, p = x["config"], x["batch"], x["precision"]
        key = f"{c}|{b}|{p}"
        pt: dict[str, Any] = {"config": c, "batch": b, "precision": p}
        try:
            if not ctx.trainer_ok:
                raise PartFailed("not run: the environment part failed")
            tp = ctx.trainer_points.get(key) or trainer_point(ctx, c, b, p)
            pt["trainer_images_per_s"] = tp["trainer_images_per_s"]
        except Exception as e:  # noqa: BLE001 - recorded, next point
            pt["trainer_error"] = str(e).splitlines()[0][:300]
        try:
            width = [] if ctx.gpu else ["model.width=0.125"]
            er = eager_throughput(ROOT / c, b, steps=measure, warmup=warm, device=device,
                                  precision=p, overrides=width)
            pt["eager_images_per_s"] = er["images_per_s"]
        except Exception as e:  # noqa: BLE001
            pt["eager_error"] = str(e).splitlines()[0][:300]
        finally:
            if ctx.gpu:
                import torch

                torch.cuda.empty_cache()
        if "trainer_images_per_s" in pt and "eager_images_per_s" in pt:
            pt["ratio"] = pt["trainer_images_per_s"] / pt["eager_images_per_s"]
        points.append(pt)
        print(f"  done {c} {b} {p}: {pt}", flush=True)
    res = {"warmup_steps": warm, "measured_steps": measure, "plan": plan, "points": points,
           "not_run_budget": not_run, "compiled": "not measured: train.compile does not exist"}
    errors = [p for p in points if "trainer_error" in p or "eager_error" in p]
    if errors:
        raise PartFailed(f"{len(errors)} of {len(points)} points failed", res)
    return res


PART_FUNCS: dict[str, Callable[[Ctx], dict]] = {
    "environment": part_environment, "precisions": part_precisions,
    "fp16_overflow": part_fp16_overflow, "fp16_resume": part_fp16_resume,
    "host_syncs": part_host_syncs, "compile": part_compile,
    "time_to_95": part_time_to_95, "throughput": part_throughput,
}


# --- set-up: wheels, data ----------------------------------------------------------------
def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def install_wheels(wheels: Path | None, scratch: Path) -> dict:
    """pip install --no-index --no-deps --target scratch/site for the missing modules."""
    missing = [m for m in OPTIONAL_MODULES if not _importable(m)]
    info: dict[str, Any] = {"missing_before": missing, "wheels": str(wheels) if wheels else None}
    if not missing or wheels is None:
        return info
    files = sorted(str(p) for p in Path(wheels).glob("*.whl"))
    if not files:
        info["error"] = f"no .whl files in {wheels}"
        return info
    site = scratch / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--no-cache-dir", "--target", str(site), *files],
                       capture_output=True, text=True)
    info["pip_rc"] = r.returncode
    if r.returncode != 0:
        info["error"] = (r.stderr or r.stdout)[-1500:]
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    info["site"] = str(site)
    info["missing_after"] = [m for m in OPTIONAL_MODULES if not _importable(m)]
    return info


def resolve_mnist(mnist: Path | None, scratch: Path, env: dict[str, str]
                  ) -> tuple[Path | None, str]:
    """MNIST=DIR: shards (index.json) as they are, or IDX files prepared into scratch.
    Default: data/mnist/test10k, else ../shared/data/mnist."""
    candidates = ([mnist] if mnist
                  else [ROOT / "data/mnist/test10k", ROOT.parent / "shared/data/mnist"])
    for d in candidates:
        d = Path(d)
        if (d / "index.json").exists():
            return d, f"shards {d}"
        images = sorted(d.glob("*images-idx3-ubyte*"))
        labels = sorted(d.glob("*labels-idx1-ubyte*"))
        if images and labels:
            out = scratch / "mnist"
            r = subprocess.run([sys.executable, "-m", "infogan_dist.cli", "prepare-data",
                                "--out", str(out), "--shard-size", "1000", "--images",
                                str(images[0]), "--labels", str(labels[0])],
                               cwd=ROOT, env=env, capture_output=True, text=True)
            if r.returncode == 0 and (out / "index.json").exists():
                return out, f"prepared {out} from {images[0].name}, {labels[0].name}"
            return None, f"prepare-data failed: {(r.stderr or r.stdout)[-500:]}"
    return None, f"no shards (index.json) or IDX files in {', '.join(map(str, candidates))}"


def pack_logs(scratch: Path, out: Path) -> str:
    """OUT/gpu-check-logs.tar.gz: every run's log, metrics.jsonl and config.yaml (small;
    the run directories themselves stay in scratch)."""
    import tarfile

    dest = out / "gpu-check-logs.tar.gz"
    try:
        with tarfile.open(dest, "w:gz") as tar:
            for f in sorted(scratch.rglob("*")):
                if f.is_file() and (f.suffix in (".log", ".json") or f.name in (
                        "metrics.jsonl", "config.yaml")) and not {"checkpoints", "site"} & set(
                        f.relative_to(scratch).parts):
                    tar.add(f, arcname=str(f.relative_to(scratch)))
        return str(dest)
    except Exception as e:  # noqa: BLE001 - the report matters more than the logs
        return f"not written: {e}"


# --- the report ----------------------------------------------------------------------------
def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu-check.json.partial"
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(out / "gpu-check.json")
    (out / "gpu-check.md").write_text(render_markdown(report))


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return "" if v is None else str(v)


def render_markdown(r: dict) -> str:
    m = r.get("machine") or {}
    lines = [f"# gpu-check ({r['mode']})", ""]
    if not r["cuda"]:
        lines += ["**no CUDA**: this machine has no CUDA GPU, so no GPU figure was taken. "
                  "The parts ran as a CPU self-test (tiny sizes; fp32 in place of fp16) to "
                  "exercise their code.", ""]
    budget = (f"of a {r['budget_s']:.0f} s budget" if r.get("budget_s") is not None
              else "(no budget: the self-test waits for every part)")
    lines += [f"- date: {r['started']} (UTC), {r.get('elapsed_s', 0):.0f} s {budget}",
              f"- GPU: {m.get('gpu', 'none')}; nvidia-smi: {m.get('nvidia_smi', 'n/a')}",
              f"- torch {m.get('torch', '?')} (CUDA {m.get('torch_cuda')}), accelerate "
              f"{m.get('accelerate', '?')}, Python {m.get('python', '?')}, host "
              f"{m.get('host', '?')}",
              f"- data: {r.get('data', '?')}; wheels: {r.get('wheels', {})}",
              f"- command: `{r['command']}`", "",
              "| part | status | seconds | budget | note |", "| --- | --- | ---: | ---: | --- |"]
    for p in r["parts"]:
        note = (p.get("error") or "").splitlines()[0][:160] if p.get("error") else ""
        if not note and isinstance(p.get("result"), dict) and "skipped" in p["result"]:
            note = p["result"]["skipped"]
        lines.append(f"| {p['name']} | {p['status']} | {_fmt(p.get('seconds'))} | "
                     f"{_fmt(p.get('budget_s'), 0)} | {note} |")
    lines.append("")
    by = {p["name"]: p for p in r["parts"]}
    lines += _targets(r, by)
    tp = (by.get("throughput") or {}).get("result") or {}
    if tp.get("points"):
        lines += ["## Throughput (images/s, global batch, one device)", "",
                  f"Trainer: `python train.py`, `perf/images_per_s` of metrics.jsonl after "
                  f"a {tp['warmup_steps']}-step warm-up interval, {tp['measured_steps']} steps "
                  "timed. Eager: `benchmarks/eager_loop.py` (no Accelerate, no data layer), "
                  "same networks and update, same device, same run.", "",
                  "| config | batch | precision | trainer | eager | trainer / eager |",
                  "| --- | ---: | --- | ---: | ---: | ---: |"]
        for pt in tp["points"]:
            prec = "fp32" if pt["precision"] == "no" else pt["precision"]
            lines.append(f"| {pt['config']} | {pt['batch']} | {prec} | "
                         f"{_fmt(pt.get('trainer_images_per_s')) or pt.get('trainer_error')} | "
                         f"{_fmt(pt.get('eager_images_per_s')) or pt.get('eager_error')} | "
                         f"{_fmt(pt.get('ratio'), 3)} |")
        if tp.get("not_run_budget"):
            lines.append("")
            lines.append(f"Not run (budget): {len(tp['not_run_budget'])} points: " + ", ".join(
                f"{Path(x['config']).stem}/{x['batch']}/{x['precision']}"
                for x in tp["not_run_budget"]))
        lines.append("")
    for name in ("time_to_95", "fp16_overflow", "fp16_resume", "host_syncs", "precisions",
                 "compile", "environment"):
        p = by.get(name)
        if not p:
            continue
        lines += [f"## {name}: {p['status']}", ""]
        if p.get("error"):
            lines += ["```", p["error"][:3000], "```", ""]
        if p.get("result") is not None:
            lines += ["```json", json.dumps(p["result"], indent=1, default=str)[:6000], "```",
                      ""]
    return "\n".join(lines) + "\n"


def _targets(r: dict, by: dict) -> list[str]:
    if not r["cuda"]:
        return ["Targets (trainer >= 0.9x eager at batch 64 fp32; time to 95% < 60 s; fp16 "
                "and bf16 in the accuracy band of fp32): not measured, no CUDA.", ""]
    out = ["## Targets", ""]
    tp = (by.get("throughput") or {}).get("result") or {}
    r64 = [p for p in tp.get("points", []) if p["batch"] == 64 and p["precision"] == "no"]
    for p in r64:
        ratio = p.get("ratio")
        out.append(f"- trainer / eager, {p['config']} batch 64 fp32: {_fmt(ratio, 3)} "
                   f"(target >= 0.9: {'met' if ratio and ratio >= 0.9 else 'NOT met'})")
    t95 = (by.get("time_to_95") or {}).get("result") or {}
    first = t95.get("first")
    if first:
        out.append(f"- time to 95% (c1, configs/mnist.yaml fp32, seed 0): {first['train_s']:.1f}"
                   f" s, {first['images']:,} images, step {first['step']} (target < 60 s: "
                   f"{'met' if first['train_s'] < 60 else 'NOT met'})")
    else:
        out.append(f"- time to 95%: not reached (best {t95.get('best_acc')})")
    out.append("- fp16 / bf16 accuracy band: only time_to_95 in fp32 is run in this budget; "
               "precisions checks that every precision trains with finite losses")
    return [*out, ""]


# --- main --------------------------------------------------------------------------------
def run_parts(ctx: Ctx, names: list[str], budget_s: float, t_start: float) -> None:
    report = ctx.report
    global_deadline = t_start + budget_s - RESERVE_S
    for name in names:
        entry: dict[str, Any] = {"name": name, "status": "running"}
        report["parts"].append(entry)
        left = global_deadline - time.monotonic()
        part_budget = min(PART_BUDGETS[name] if ctx.gpu else NO_BUDGET, left)
        entry["budget_s"] = part_budget if math.isfinite(part_budget) else None
        if part_budget < 2:
            entry |= {"status": "not run", "error": "no time left in the global budget"}
            write_report(ctx.out, report)
            continue
        needs_trainer = name not in ("environment", "throughput")
        env_part = next((p for p in report["parts"] if p["name"] == "environment"), None)
        if needs_trainer and env_part and env_part["status"] == "failed":
            entry |= {"status": "not run", "error": "the environment part failed: "
                      + env_part["error"].splitlines()[0]}
            write_report(ctx.out, report)
            continue
        print(f"== {name} (budget {part_budget:.0f} s)" if math.isfinite(part_budget)
              else f"== {name} (no budget: self-test)", flush=True)
        ctx.deadline = time.monotonic() + part_budget
        t0 = time.monotonic()
        try:
            entry["result"] = PART_FUNCS[name](ctx)
            entry["status"] = "skipped" if "skipped" in entry["result"] else "passed"
        except PartFailed as e:
            entry["status"] = "failed"
            entry["error"] = str(e.args[0])
            if len(e.args) > 1:
                entry["result"] = e.args[1]
        except Exception:  # noqa: BLE001 - any failure is reported, the next part runs
            entry["status"] = "failed"
            entry["error"] = traceback.format_exc()[-4000:]
        if name == "environment" and entry["status"] == "failed":
            ctx.trainer_ok = False
        entry["seconds"] = time.monotonic() - t0
        report["elapsed_s"] = time.monotonic() - t_start
        print(f"   {name}: {entry['status']} in {entry['seconds']:.1f} s"
              + (f": {entry['error'].splitlines()[0][:200]}" if entry.get("error") else ""),
              flush=True)
        write_report(ctx.out, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="report directory")
    p.add_argument("--wheels", default="", help="directory of .whl files for missing modules")
    p.add_argument("--mnist", default="", help="shards (index.json) or IDX files")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"global budget (default {GLOBAL_BUDGET_S:.0f} s on a GPU; "
                        "none for the CPU self-test, which waits for every part)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    p.add_argument("--self-test", action="store_true",
                   help="run the CPU self-test even where CUDA exists")
    p.add_argument("--scratch", default="", help="run directories (default: a new temp dir)")
    p.add_argument("--probe-syncs", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.probe_syncs:
        return probe_syncs(json.loads(a.probe_syncs))
    names = [n for n in a.parts.split(",") if n]
    unknown = [n for n in names if n not in PART_FUNCS]
    if unknown:
        print(f"error: unknown part(s) {unknown}; known: {PARTS}", file=sys.stderr)
        return 2
    if "environment" not in names:
        names.insert(0, "environment")

    t_start = time.monotonic()
    import torch

    cuda = torch.cuda.is_available() and not a.self_test
    if a.budget_s is None:
        a.budget_s = GLOBAL_BUDGET_S if cuda else NO_BUDGET
    out = Path(a.out).resolve()
    scratch = (Path(a.scratch).resolve() if a.scratch
               else Path(tempfile.mkdtemp(prefix="gpu-check-")))
    scratch.mkdir(parents=True, exist_ok=True)
    wheels = install_wheels(Path(a.wheels) if a.wheels else None, scratch)
    env = dict(os.environ)
    pypath = [str(ROOT)] + ([wheels["site"]] if wheels.get("site") else [])
    env["PYTHONPATH"] = os.pathsep.join(pypath + [x for x in [env.get("PYTHONPATH")] if x])
    env |= {"WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # --self-test on a GPU machine: the CPU path
    shards, data_note = resolve_mnist(Path(a.mnist) if a.mnist else None, scratch, env)
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "mode": "gpu" if cuda else "cpu-self-test (no CUDA)", "cuda": cuda,
        "budget_s": a.budget_s if math.isfinite(a.budget_s) else None,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "scratch": str(scratch), "data": data_note, "wheels": wheels, "parts": [],
    }
    if not cuda:
        print("no CUDA: running the CPU self-test of each part (tiny sizes)", flush=True)
    ctx = Ctx(out=out, scratch=scratch, shards=shards, cuda=cuda, env=env, report=report)
    write_report(out, report)
    run_parts(ctx, names, a.budget_s, t_start)
    report["logs"] = pack_logs(scratch, out)
    report["elapsed_s"] = time.monotonic() - t_start
    report["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    write_report(out, report)
    failed = [x["name"] for x in report["parts"] if x["status"] not in ("passed", "skipped")]
    bad = f" (failed or not run: {', '.join(failed)})" if failed else ""
    print(f"gpu-check: {len(report['parts']) - len(failed)} of {len(report['parts'])} parts "
          f"passed or skipped{bad}; {report['elapsed_s']:.0f} s; report "
          f"{out / 'gpu-check.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
