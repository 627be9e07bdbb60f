"""The communication-lean step, counted: benchmarks/collectives.py runs the trainer on 2
real gloo ranks and counts, per step, the collectives by call site and the host syncs
(.item(), .tolist(), float(t), ...) called from infogan_dist/.

Per steady-state step (neither a log step nor the first or last):
- one DDP gradient all-reduce per optimizer update and module it moves (each module
  here fits one bucket): paper = D phase (D) + G phase (G) = 2; three_optimizers =
  D + G + info (G and D) = 4;
- one collective per CrossRankBatchNorm forward and one per backward;
- with loss.extra.real_iic: its view's BatchNorm layers, and one all-reduce of its joint
  (ranks.global_mean) forward and one backward;
- one stop agreement (asynchronous), no metrics reduction, no host sync.
A log step adds the metrics reduction and its one host sync.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, make_shards

pytestmark = pytest.mark.integration

# Training-mode BatchNorm forwards (= backwards) per step of the paper update on
# infogan_mnist (BN: 3 in G, 2 in D's trunk, 1 in the Q head):
#   D phase: G once (the fakes), D on real (trunk), fake and augmented (trunk + Q)
#   G phase: the frozen D on fake and augmented (trunk + Q); G's backward
# loss.extra.real_iic adds a view of the D phase: real with its moved copy (trunk + Q).
PAPER_BN = 3 + 2 + 3 + 3 + 3 + 3
IIC_BN = 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("digits") / "shards", limit=256, shard_size=64)


def count(tmp_path, config: str, *overrides: str) -> dict:
    out = tmp_path / "counts.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/collectives.py"), "--config", config,
         "--steps", "5", "--log-every", "2", "--json", str(out), *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("iic", [0, 1], ids=["recipe", "real_iic"])
def test_paper_step_on_conv_nets(shards, tmp_path, iic):
    s = count(tmp_path, "configs/mnist.yaml", f"data.shards={shards}", "model.width=0.125",
              "train.global_batch_size=16", f"loss.extra={{real_iic: {iic}}}")["summary"]
    steady, log = s["steady"], s["log"]
    assert steady["ddp_grads/calls"] == 2, steady  # one per optimizer step
    # one forward, one backward
    assert steady["batchnorm/calls"] == 2 * (PAPER_BN + iic * IIC_BN), steady
    assert steady.get("global_mean/calls", 0) == iic, steady  # real_iic's joint (forward)
    assert steady.get("other/calls", 0) == iic, steady  # ... and its backward, in autograd
    assert steady["stop/calls"] == 1, steady
    assert steady.get("metrics/calls", 0) == 0, steady
    assert steady.get("host_syncs", 0) == 0, steady
    assert log["metrics/calls"] == 1 and log["host_syncs"] == 1, log


def test_three_optimizers_step(shards, tmp_path):
    counted = count(tmp_path, "configs/smoke.yaml", f"data.shards={shards}")
    steady = counted["summary"]["steady"]
    assert steady["ddp_grads/calls"] == 4, steady  # D, G, info (G and D)
    # BN only in G (3 layers): the D phase's fakes (backward in the G phase), info's fakes
    assert steady["batchnorm/calls"] == 2 * (3 + 3), steady
    assert steady.get("host_syncs", 0) == 0, steady
    assert steady["stop/calls"] == 1, steady
    # the step metrics of every log interval (values not judged: this is no benchmark)
    logged = counted["metrics"]
    assert [m["step"] for m in logged] == [2, 4, 5]
    for m in logged:
        assert m["perf/step_s"] > 0 and 0 <= m["perf/data_wait_s"] <= m["perf/step_s"], m
        assert "perf/max_mem_gb" not in m  # CUDA only
