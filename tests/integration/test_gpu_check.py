"""`make gpu-check` on a machine without CUDA: the report says so, every part's CPU
self-test passes (compile is skipped: train.compile does not exist yet), exit 0."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from tests.helpers import ROOT, launch_env, make_shards

pytestmark = pytest.mark.integration


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA self-test")
def test_make_gpu_check_without_cuda_runs_the_self_test(tmp_path):
    shards = make_shards(tmp_path / "mnist512", limit=512, shard_size=128)
    out = tmp_path / "report"
    r = subprocess.run(
        ["make", "-s", "gpu-check", f"OUT={out}", f"MNIST={shards}",
         f"GPU_CHECK_ARGS=--scratch {tmp_path / 'scratch'}"],
        cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    report = json.loads((out / "gpu-check.json").read_text())
    md = (out / "gpu-check.md").read_text()
    assert report["cuda"] is False and "no CUDA" in md
    status = {p["name"]: p["status"] for p in report["parts"]}
    assert list(status) == ["environment", "precisions", "fp16_overflow", "fp16_resume",
                            "host_syncs", "compile", "time_to_95", "throughput"]
    expected = {name: "passed" for name in status} | {"compile": "skipped"}
    errors = {p["name"]: p.get("error", "")[:1500] for p in report["parts"]
              if p["status"] != expected[p["name"]]}
    assert status == expected, json.dumps(errors, indent=1)
    # the self-test exercised the fault hook and the bitwise resume comparison
    by = {p["name"]: p["result"] for p in report["parts"]}
    assert all(by["fp16_overflow"]["checks"].values())
    assert by["fp16_resume"]["differences"] == []
    assert {pt["config"] for pt in by["throughput"]["points"]} == {
        "configs/mnist_mlp.yaml", "configs/mnist.yaml"}
    assert "gpu-check:" in r.stdout and "8 of 8 parts passed" in r.stdout
