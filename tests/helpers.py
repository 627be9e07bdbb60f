"""Shared by the integration tests: real shards from the real MNIST digits, real
`accelerate launch` processes, and a reader for W&B's offline `.wandb` files."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def digits_idx() -> tuple[Path, Path]:
    """The real MNIST test digits (beside the repo), else Fashion-MNIST's test split."""
    for d in (MNIST_DIR, FASHION_DIR):
        images, labels = d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz"
        if images.exists() and labels.exists():
            return images, labels
    raise FileNotFoundError(
        f"no MNIST digits at {MNIST_DIR} and no Fashion-MNIST at {FASHION_DIR}: "
        "run launch/setup.sh (it installs dataset-fashion-mnist)"
    )


def make_shards(out: Path, limit: int, shard_size: int) -> Path:
    """`infogan prepare-data` through the real CLI, on the first `limit` digits."""
    if (out / "index.json").exists():
        return out
    images, labels = digits_idx()
    run_ok([str(VENV_BIN / "infogan"), "prepare-data", "--out", str(out), "--images",
            str(images), "--labels", str(labels), "--limit", str(limit),
            "--shard-size", str(shard_size)])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TORCHELASTIC_SIGNALS_TO_HANDLE="SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        PET_SIGNALS_TO_HANDLE="SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )
    env.pop("WANDB_API_KEY", None)
    return env


def train_cmd(launch: str, config: str, *overrides: str, port: int | None = None,
              extra_launch: tuple[str, ...] = ()) -> list[str]:
    return [str(VENV_BIN / "accelerate"), "launch", "--config_file", str(ROOT / launch),
            "--main_process_port", str(port or free_port()), *extra_launch,
            str(ROOT / "train.py"), "--config", str(ROOT / config), *overrides]


def two_machines(config: str, *overrides: str, env: dict[str, str], timeout: float = 300,
                 launch: tuple[str, ...] = ()) -> list[str]:
    """Machine 0 and machine 1 as two concurrent launchers on one host, one process each,
    meeting at 127.0.0.1 on one port; `launch`: more launcher flags, where "{is_main}"
    becomes 1 on machine 0 and 0 on machine 1. Returns both outputs; asserts both exit 0."""
    port = free_port()
    procs = []
    for machine in (0, 1):
        flags = tuple(f.replace("{is_main}", str(int(machine == 0))) for f in launch)
        cmd = train_cmd("launch/cpu_ddp.yaml", config, *overrides, port=port, extra_launch=(
            "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(machine),
            "--main_process_ip", "127.0.0.1", *flags))
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for machine, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"machine {machine}: exit {p.returncode}\n{out[-6000:]}"
    return outs


def run_ok(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env=kw.pop("env", launch_env()), **kw)
    assert r.returncode == 0, (
        f"{' '.join(cmd)}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    )
    return r


def train(launch: str, config: str, *overrides: str, timeout: float = 600,
          **kw) -> subprocess.CompletedProcess:
    return run_ok(train_cmd(launch, config, *overrides), timeout=timeout, **kw)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_wandb_records(path: Path):
    """Every protobuf Record of a `.wandb` file: a leveldb-style log (7-byte file header,
    32 KiB blocks, 7-byte record headers: crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B datastore file"
    pos, block, payload = 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # block trailer
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        payload = chunk if kind in (1, 2) else payload + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(payload)
            yield rec


def read_wandb_history(path: Path) -> list[dict]:
    """History rows of a `.wandb` file, as {key: value} dicts (with `_step`)."""
    rows = []
    for rec in read_wandb_records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in rec.history.item})
    return rows


def assert_trained_alike(a: dict[str, object], b: dict[str, object], label: str = "",
                         atol: float = 1e-5) -> None:
    """Two trainings of one model that differ only in the order of float sums (another world
    size, a resume on another world size): all but 1 element in 1,000 of the floating
    tensors agree within `atol`; other tensors and plain values are equal. Not every element: Adam
    divides by sqrt(v) + 1e-8, so a gradient that is 0 up to rounding (~1e-10) becomes a
    move of ~1e-5 whose sign follows the summation order, and how far such an element goes
    depends on the CPU's rounding (one element of InfoGAN-CR's CR discriminator: 7.1e-5 on
    an Intel Xeon and in CI, 1.4e-5 on an AMD EPYC). A rank that trains on the wrong rows
    of the global batch moves nearly every element (93-99.6% beyond 1e-5, measured
    2026-12-05)."""
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    far, total, worst, where = 0, 0, 0.0, None
    for k in a:
        x, y = a[k], b[k]
        if not (torch.is_tensor(x) and x.is_floating_point()):
            same = torch.equal(x, y) if torch.is_tensor(x) else x == y
            assert same, f"{label}{k}"
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, f"{label}{k}"
        d = (x.double() - y.double()).abs().flatten()
        far, total = far + int((d > atol).sum()), total + d.numel()
        if d.numel() and d.max().item() > worst:
            worst, where = d.max().item(), k
    assert far <= total // 1000, (f"{label}{far} of {total} elements differ by more than "
                                  f"{atol:g} (largest {worst:.3g} in {where})")
