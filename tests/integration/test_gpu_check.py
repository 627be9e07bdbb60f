"""`make gpu-check` on a machine without CUDA: the report says so, every part's CPU
self-test passes (compile is skipped: train.compile does not exist yet), exit 0. The
self-test has no time budget, so its verdict never depends on the machine's load."""

from __future__ import annotations

import dataclasses
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
        cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    report = json.loads((out / "gpu-check.json").read_text())
    md = (out / "gpu-check.md").read_text()
    assert report["cuda"] is False and "no CUDA" in md
    # no budget anywhere: a part waits for its outcome however slow the machine is
    assert report["budget_s"] is None
    assert [p["budget_s"] for p in report["parts"]] == [None] * len(report["parts"])
    status = {p["name"]: p["status"] for p in report["parts"]}
    assert list(status) == ["environment", "precisions", "fp16_overflow", "fp16_resume",
                            "host_syncs", "compile", "time_to_95", "throughput"]
    from infogan_dist.config import TrainConfig

    has_compile = "compile" in {f.name for f in dataclasses.fields(TrainConfig)}
    expected = {name: "passed" for name in status} | (
        {} if has_compile else {"compile": "skipped"})
    errors = {p["name"]: p.get("error", "")[:1500] for p in report["parts"]
              if p["status"] != expected[p["name"]]}
    assert status == expected, json.dumps(errors, indent=1)
    # the self-test exercised the fault hook and the bitwise resume comparison
    by = {p["name"]: p["result"] for p in report["parts"]}
    assert all(by["fp16_overflow"]["checks"].values())
    assert by["fp16_resume"]["differences"] == []
    assert {pt["config"] for pt in by["throughput"]["points"]} == {
        "configs/mnist_mlp.yaml", "configs/mnist.yaml"}
    assert "gpu-check:" in r.stdout and "8 of 8 parts passed or skipped" in r.stdout


def test_sync_probe_counts_per_iteration_and_stops_at_the_error_step(tmp_path, monkeypatch):
    """The host-sync probe's bookkeeping, on CPU: torch.cuda.set_sync_debug_mode is faked
    so that, in "warn" mode, every Latent.to() warns as a blocking host-to-device copy
    does on CUDA, and in "error" mode raises. Counted per steady-state iteration (one
    Latent.to per step in update=paper: the D phase's fake batch), located by the file:line
    that called it (the fake warns at its caller; on CUDA the flagged line is inside
    Latent.to, three copies),
    and the "error" step is reported with where it raised."""
    from accelerate.state import AcceleratorState

    from benchmarks import gpu_check
    from infogan_dist import latent

    shards = make_shards(tmp_path / "mnist256", limit=256, shard_size=128)
    mode = {"now": "default"}
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda m: mode.update(now=m))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    real_to = latent.Latent.to

    def to(self, device):
        if mode["now"] == "error":
            raise RuntimeError("called a synchronizing CUDA operation")
        if mode["now"] == "warn":
            import warnings

            warnings.warn("called a synchronizing CUDA operation", stacklevel=2)
        return real_to(self, device)

    monkeypatch.setattr(latent.Latent, "to", to)
    out = tmp_path / "probe.json"
    args = {"config": "configs/mnist.yaml", "precision": "no", "out": str(out), "steps": 8,
            "first": 3, "overrides": ["model.width=0.125", "train.global_batch_size=16"],
            "shards": str(shards), "scratch": str(tmp_path), "sync_debug": True}
    try:
        assert gpu_check.probe_syncs(args) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    res = json.loads(out.read_text())
    assert res["steady_steps"] == [3, 4, 5, 6]
    assert res["syncs_per_iteration"] == {"3": 1, "4": 1, "5": 1, "6": 1}
    (site, count), = res["sites"].items()  # one site: the trainer's ctx.sample(...).to()
    assert site.startswith("trainer.py:") and count == 4
    assert res["error_mode_step"]["step"] == 7
    assert "synchronizing" in res["error_mode_step"]["raised"]
    assert any("updates.py" in a for a in res["error_mode_step"]["at"])
