"""Golden loss traces: the cases, the CPU types that have pinned traces, and the tolerance
for a CPU type that has none. Used by tests/integration/test_golden.py; run as
`python -m tests.golden spread` to measure kernel-set differences on this machine.

Layout of tests/assets/losses/:
- `<cpu type>/<case>.json` (+ `machine.json`): a recorded set, pinned bitwise on that type.
  The CPU type is what picks the float kernels: the vendor (MKL dispatches on it) and the
  SIMD level torch runs at (`cpu_kernels()`, e.g. `AuthenticAMD-AVX2`).
- `spread/<kernel set>/<case>.json`: the same cases run on one machine with other float
  kernels forced (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), to
  measure how far other kernels move the numbers. Never compared against; they only widen
  the measured spread.

The tolerance for a type without a recorded set (stated, derived from measurements): at
step s, |got - pinned| <= SAFETY x the largest difference between any two measured sets
(recorded types and kernel sets) over the four keys at steps <= s, and at least SAFETY
float32 ulps of the step's largest value (the last bit, which every pair of kernel sets
differs in somewhere). The got trace must be within it of at least one recorded type.
GAN training amplifies last-bit differences step by step (the conv cases reach about 1%
by step 10 between CPU types), so the envelope grows with the step: tight early, where a
numeric change shows first, loose late.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets" / "losses"
SPREAD = ASSETS / "spread"
KEYS = ("loss/D", "loss/G", "loss/info", "mi/c1")
STEPS = 20
SAFETY = 3.0
ULP32 = 2.0 ** -23  # float32 spacing relative to a value's magnitude (at most)
RECORD_COMMAND = ("INFOGAN_RECORD_GOLDEN=1 .venv/bin/python -m pytest "
                  "tests/integration/test_golden.py")

# configs/mnist.yaml at a quarter of its width and at the paper's lr_d, the rate the mnist
# traces were recorded with (the config's is 4e-4 since 2026-12-03: a config choice, not a
# numeric change, so the pinned traces stay)
MNIST_W025 = ["model.width=0.25", "optim.lr_d=2e-4"]
CASES = {
    "smoke": ("configs/smoke.yaml", []),
    # the recipe without its real_iic term (configs/mnist.yaml has it since 2026-12-02)
    "mnist_w025": ("configs/mnist.yaml", [*MNIST_W025, "model.ema_half_life_images=0",
                                          "loss.extra={}"]),
    # the EMA generator must not touch training: the same pinned trace as without it
    "mnist_w025_ema": ("configs/mnist.yaml", [*MNIST_W025, "loss.extra={}",
                                              "model.ema_half_life_images=500"]),
    "mnist_w025_iic": ("configs/mnist.yaml", [*MNIST_W025, "loss.extra={real_iic: 2.0}"]),
}
ASSET = {"mnist_w025_ema": "mnist_w025"}  # cases that share another case's trace
TRACES = sorted({ASSET.get(n, n) for n in CASES})  # the distinct trace files of a set

# Float-kernel sets this machine can be forced into (python -m tests.golden spread): torch's
# own kernels at a lower SIMD level, oneDNN's convolutions at SSE4.1, both together with
# MKL's BLAS at SSE4.2 (MKL's alone changed nothing on AMD: not kept as a set).
KERNEL_SETS = {
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "all-low": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def cpu_kernels() -> str:
    """What picks the CPU's float kernels: the vendor (MKL dispatches on it) and the SIMD
    level torch runs at, e.g. `GenuineIntel-AVX512`."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    vendor = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("vendor_id")),
                  "unknown")
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}"


def machine() -> dict:
    """This machine as a recorded set's machine.json describes it."""
    info: dict = {"cpu_type": cpu_kernels(), "torch": torch.__version__}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        fields = dict(ln.split(":", 1) for ln in cpuinfo.read_text().splitlines() if ":" in ln)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info |= {k: fields.get(f) for k, f in (("model_name", "model name"),
                                                ("family", "cpu family"), ("model", "model"))}
    return info


def recorded_types() -> dict[str, Path]:
    """CPU type -> its directory of pinned traces."""
    return {d.name: d for d in sorted(ASSETS.iterdir())
            if d.is_dir() and d != SPREAD and all((d / f"{t}.json").exists() for t in TRACES)}


def measured_sets() -> dict[str, Path]:
    """Every measured set: the recorded types and the kernel sets of spread/."""
    spread = {f"spread/{d.name}": d for d in sorted(SPREAD.iterdir())} if SPREAD.is_dir() else {}
    return recorded_types() | spread


def read_trace(directory: Path, case: str) -> list[dict]:
    return json.loads((directory / f"{ASSET.get(case, case)}.json").read_text())


def envelope(case: str) -> list[float]:
    """The tolerance of each step (index = step - 1) for a CPU type without a recorded set,
    as the module docstring states it."""
    traces = [read_trace(d, case) for d in measured_sets().values()]
    widest, out = 0.0, []
    for i in range(STEPS):
        for a, b in itertools.combinations(traces, 2):
            widest = max(widest, *(abs(a[i][k] - b[i][k]) for k in KEYS))
        last_bit = ULP32 * max(abs(t[i][k]) for t in traces for k in KEYS)
        out.append(SAFETY * max(widest, last_bit))
    return out


def worst_ratio(got: list[dict], pinned: list[dict], env: list[float]) -> tuple[float, str]:
    """The largest |got - pinned| / tolerance over steps and keys, and where it is."""
    worst, where = 0.0, ""
    for g, w, tol in zip(got, pinned, env, strict=True):
        for k in KEYS:
            r = abs(g[k] - w[k]) / tol
            if r > worst:
                worst, where = r, (f"step {w['step']} {k}: got {g[k]!r}, pinned {w[k]!r}, "
                                   f"tolerance {tol:.3g}")
    return worst, where


def run_case(name: str, shards: Path, out_dir: Path, env: dict[str, str] | None = None,
             extra: tuple[str, ...] = ()) -> list[dict]:
    """20 steps of the case on one CPU process, every step logged; its trace."""
    from tests.helpers import launch_env, metrics, train

    config, overrides = CASES[name]
    train("launch/cpu.yaml", config, f"data.shards={shards}", f"run.output_dir={out_dir}",
          "run.name=golden", "run.seed=0", f"train.max_steps={STEPS}", "train.resume=none",
          "log.every=1", "log.eval_every=0", "log.images_every=0", "log.wandb=off",
          "log.progress=false", f"checkpoint.every={STEPS}", *overrides, *extra,
          env=launch_env() | (env or {}))
    return [{"step": r["step"], **{k: r[k] for k in KEYS}} for r in metrics(out_dir / "golden")]


GOLDEN_DIGITS = Path(__file__).resolve().parent / "assets" / "mnist-first1024"


def golden_shards(root: Path) -> Path:
    """The first 1,024 real MNIST test digits, kept with the traces in
    tests/assets/mnist-first1024/ (IDX files cut from ../shared/data/mnist: the same
    bytes, a header that counts 1,024): the traces were recorded on them, and a clone
    that is not beside ../shared (e.g. /tmp/fresh) must replay them too."""
    from tests.helpers import VENV_BIN, run_ok

    out = root / "shards"
    if not (out / "index.json").exists():
        run_ok([str(VENV_BIN / "infogan"), "prepare-data", "--out", str(out),
                "--images", str(GOLDEN_DIGITS / "t10k-images-idx3-ubyte.gz"),
                "--labels", str(GOLDEN_DIGITS / "t10k-labels-idx1-ubyte.gz"),
                "--shard-size", "256"])
    return out


def write_trace(path: Path, trace: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trace, indent=1) + "\n")


def spread(sets: list[str]) -> None:
    """Runs every trace under each forced kernel set into spread/<set>/ (this machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        shards = golden_shards(Path(tmp))
        for label in sets:
            for name in TRACES:
                run = Path(tmp) / f"{label}-{name}"
                write_trace(SPREAD / label / f"{name}.json",
                            run_case(name, shards, run, env=KERNEL_SETS[label]))
                print(f"spread/{label}/{name}.json", flush=True)
            (SPREAD / label / "machine.json").write_text(json.dumps(
                machine() | {"forced": KERNEL_SETS[label], "recorded": _commit()}, indent=1)
                + "\n")


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip()


if __name__ == "__main__":
    if sys.argv[1:2] != ["spread"] or not set(sys.argv[2:]) <= set(KERNEL_SETS):
        sys.exit(f"usage: python -m tests.golden spread [{' '.join(KERNEL_SETS)}]")
    spread(sys.argv[2:] or list(KERNEL_SETS))
