"""Set-up and tear-down of the soak: the shards, the run directory's tmpfs, host names,
and the reference run (the same training without faults)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from .job import ROOT, SoakError, environment

BIN = Path(sys.executable).parent


def digits(mnist: Path, count: int, out: Path) -> Path:
    """Shards of the first `count` real MNIST digits (Fashion-MNIST where they are absent)."""
    for d in (mnist, Path("/usr/share/datasets/fashion-mnist")):
        images, labels = d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz"
        if images.exists() and labels.exists():
            break
    else:
        raise SoakError(f"no t10k MNIST files in {mnist} (nor Fashion-MNIST); pass --mnist")
    shards = out / "digits"
    subprocess.run([str(BIN / "infogan"), "prepare-data", "--out", str(shards), "--images",
                    str(images), "--labels", str(labels), "--limit", str(count),
                    "--shard-size", "500"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return shards


def mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text()
               .splitlines() if len(line.split()) > 1)


def mount_disk(path: Path) -> Path | None:
    """A tmpfs for the run directory (the full-disk fault fills it); None without root."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return path if r.returncode == 0 else None


def holders(path: Path) -> list[str]:
    """Processes with an open file or their working directory under `path`."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            files = [f.path for f in p.open_files()] + [p.cwd()]
        except psutil.Error:
            continue
        if any(f == str(path) or f.startswith(f"{path}/") for f in files):
            out.append(f"pid {p.pid}: {' '.join(p.info['cmdline'] or [])[:150]}")
    return out


def unmount(path: Path) -> str:
    """Unmounts the run directory's tmpfs; '' or why not (who holds it)."""
    if not mounted(path):
        return ""
    r = subprocess.run(["umount", str(path)], capture_output=True, text=True)
    if r.returncode == 0:
        return ""
    return f"{r.stderr.strip()}; held by: {'; '.join(holders(path)) or 'no process found'}"


def own_host_names() -> bool:
    """Whether each machine can have its own host name (a UTS namespace: root)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


def fresh_dir(out: Path) -> None:
    if out.exists():
        unmount(out / "disk")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def reference_run(out: Path, shards: Path, steps: int, config: str,
                  training: list[str]) -> Path:
    """The same training without faults to `steps`: one machine, two processes (bitwise
    the same as two machines of one), local shards (the bytes S3 serves)."""
    from tests.helpers import free_port

    run = out / "reference"
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "launch/cpu_ddp.yaml"),
           "--main_process_port", str(free_port()), str(ROOT / "train.py"),
           "--config", str(ROOT / config), *training, f"data.shards={shards}",
           f"run.output_dir={out}", "run.name=reference", f"train.max_steps={steps}",
           f"checkpoint.every={steps}", "log.wandb=off"]
    env = environment(dict(os.environ), {"TMPDIR": str(out / "tmp")})
    with open(out / "logs" / "reference.log", "w") as log:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SoakError(f"the reference run failed (exit {r.returncode}); see "
                        f"{out / 'logs' / 'reference.log'}")
    return run / "checkpoints" / f"step-{steps:08d}"
