"""Part `environment` (GPU, driver, versions, missing modules, data) and the set-up
before any part: wheels for missing modules, the MNIST shards."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import ROOT, Ctx, PartFailed

OPTIONAL_MODULES = ("webdataset", "braceexpand", "wandb")


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
