"""GPU tests: the parts of benchmarks/gpu_check.py, asserted one by one.

They run the trainer as users do (`python train.py`, on the machine's one GPU) except
the host-sync probe, which drives the Trainer in-process in its own subprocess (see
gpu_check.probe_syncs). Data: MNIST=DIR (shards or IDX files), else data/mnist/test10k,
else ../shared/data/mnist. Skipped with a reason where there is no CUDA."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def gpu_ctx(tmp_path_factory):
    from benchmarks import gpu_check

    scratch = tmp_path_factory.mktemp("gpu")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env |= {"WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    mnist = os.environ.get("MNIST")
    shards, note = gpu_check.resolve_mnist(Path(mnist) if mnist else None, scratch, env)
    if shards is None:
        pytest.fail(f"no MNIST data for the gpu tests: {note}")
    return gpu_check.Ctx(out=Path(tempfile.mkdtemp()), scratch=scratch, shards=shards,
                         cuda=torch.cuda.is_available(), env=env, report={})


@pytest.fixture
def ctx(gpu_ctx):
    gpu_ctx.deadline = time.monotonic() + 300  # each test: five minutes at most
    return gpu_ctx

