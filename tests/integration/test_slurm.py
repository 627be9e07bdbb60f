"""slurm/infogan.sh on a private two-node Slurm cluster (see slurm_cluster.py): a run to
the end, preemption (USR1 -> checkpoint -> requeue -> resume), and a failing run.

Each test submits the real script with the real trainer:
    sbatch --nodes=2 --gpus-per-node=0 --cpus-per-task=1 --time=10 --output=TMP/slurm-%j.log \
        slurm/infogan.sh
with CONFIG=configs/smoke.yaml GPUS_PER_NODE=0 RUN_DIR=TMP/runs OVERRIDES="data.shards=..."
exported into the job (sbatch --export=ALL, the default).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, make_shards, metrics
from tests.integration.slurm_cluster import TERMINAL_STATES, SlurmCluster

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

SCRIPT = "slurm/infogan.sh"
# The test nodes have one CPU each and no GPU: override the script's GPU-cluster defaults.
SBATCH_ARGS = ("--nodes=2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("slurm-digits") / "shards", limit=2000,
                       shard_size=500)


def submit(cluster: SlurmCluster, tmp_path: Path, shards: Path,
           *overrides: str) -> tuple[int, Path, Path]:
    """Submits slurm/infogan.sh from the repo root; returns (job id, run dir, job log)."""
    runs = tmp_path / "runs"
    train_overrides = [f"data.shards={shards}", "log.wandb=off", "log.progress=false",
                       *overrides]
    env = {"CONFIG": "configs/smoke.yaml", "GPUS_PER_NODE": "0", "RUN_DIR": str(runs),
           "OVERRIDES": " ".join(train_overrides), "WANDB_SILENT": "true"}
    job = cluster.sbatch(SCRIPT, *SBATCH_ARGS, f"--output={tmp_path}/slurm-%j.log", cwd=ROOT,
                         env=env)
    return job, runs / str(job), tmp_path / f"slurm-{job}.log"


def read_metrics(run: Path) -> list[dict]:
    try:
        return metrics(run)
    except (FileNotFoundError, json.JSONDecodeError):  # not there yet, or a line half-written
        return []


def test_two_nodes_train_to_the_end(slurm_cluster, shards, tmp_path):
    job, run, log = submit(slurm_cluster, tmp_path, shards, "train.max_steps=20",
                           "checkpoint.every=10", "log.every=5")
    info = slurm_cluster.wait_for_end(job, timeout=180, log=log)
    text = log.read_text()
    diag = slurm_cluster.diagnostics(log)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "0", diag

    final = run / "checkpoints" / "step-00000020"
    assert (final / "COMPLETE").is_file(), diag
    state = json.loads((final / "train_state.json").read_text())
    assert state["step"] == 20 and state["world_size"] == 2
    assert [r["step"] for r in metrics(run)] == [5, 10, 15, 20]

    # Each node's shell expanded its own $SLURM_NODEID (escaped in srun bash -c '...').
    assert re.search(r"^0: infogan\.sh: node 0 of 2 \(node1, 127\.0\.0\.1\): machine_rank 0",
                     text, re.M), diag
    assert re.search(r"^1: infogan\.sh: node 1 of 2 \(node2, 127\.0\.0\.1\): machine_rank 1",
                     text, re.M), diag
    # The trainer: two processes, one per machine, machines 0 and 1. (The c10d rendezvous
    # decides which node becomes machine 0; it need not be Slurm's node 0.)
    ranks = dict(re.findall(r"\[?rank (\d)/2\]? machine (\d)", text))
    assert sorted(ranks) == ["0", "1"] and sorted(ranks.values()) == ["0", "1"], diag
    assert "training ended (exit 0" in text and "requeueing" not in text
    assert slurm_cluster.jobcomp_records(job)[-1]["JobState"] == "COMPLETED"


def test_usr1_checkpoints_requeues_and_resumes(slurm_cluster, shards, tmp_path):
    max_steps = 300
    job, run, log = submit(slurm_cluster, tmp_path, shards, f"train.max_steps={max_steps}",
                           "checkpoint.every=100", "log.every=5")

    # Preempt once training is under way: poll metrics.jsonl, no fixed sleep.
    deadline = time.monotonic() + 150
    while not any(r["step"] >= 10 for r in read_metrics(run)):
        state = slurm_cluster.job(job)["JobState"]
        assert state not in TERMINAL_STATES, f"job ended ({state}) before step 10\n" + \
            slurm_cluster.diagnostics(log)
        assert time.monotonic() < deadline, "no step 10 in metrics.jsonl after 150 s\n" + \
            slurm_cluster.diagnostics(log)
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", str(job))

    slurm_cluster.wait_for(job, "the requeue (Restarts=1)",
                           lambda i: i.get("Restarts") != "0" or i["JobState"] in TERMINAL_STATES,
                           timeout=120, log=log)
    info = slurm_cluster.wait_for_end(job, timeout=180, log=log)
    text = log.read_text()
    diag = slurm_cluster.diagnostics(log)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", diag

    # The batch shell turned USR1 into a STOP file; every rank stopped after the same step
    # and checkpointed there; the shell requeued; the next segment resumed from that step.
    assert "got SIGUSR1" in text and f"requeueing job {job}" in text, diag
    stopped = re.search(r"stopped \(stop file [^)]*\) at step (\d+)", text)
    assert stopped, diag
    stop_step = int(stopped.group(1))
    assert 10 <= stop_step < max_steps
    assert re.search(rf"resumed from \S*step-{stop_step:08d} at step {stop_step}\b", text), diag
    assert f"job {job} restart 1 on" in text
    assert not (run / "STOP").exists()

    # No step trained twice, none skipped; the run ends at the configured step.
    steps = [r["step"] for r in metrics(run)]
    assert steps == sorted(set(steps)), steps
    assert stop_step in steps and steps[-1] == max_steps
    final = run / "checkpoints" / f"step-{max_steps:08d}"
    assert (final / "COMPLETE").is_file(), diag
    state = json.loads((final / "train_state.json").read_text())
    assert state["step"] == max_steps and state["images_seen"] == max_steps * 16
    # two segments ended: the requeued one and the finished one
    records = slurm_cluster.jobcomp_records(job)
    assert len(records) == 2 and records[-1]["JobState"] == "COMPLETED", records


def test_failing_job_exits_nonzero_and_is_not_requeued(slurm_cluster, shards, tmp_path):
    job, run, log = submit(slurm_cluster, tmp_path, shards, "train.nonsense=1")
    info = slurm_cluster.wait_for_end(job, timeout=120, log=log)
    text = log.read_text()
    diag = slurm_cluster.diagnostics(log)
    assert info["JobState"] == "FAILED", diag
    assert info["Restarts"] == "0" and info["ExitCode"] != "0:0", info
    assert "unknown config key 'train.nonsense'" in text, diag  # train.py's one-line error
    assert "not requeued" in text
    # ended exactly once, as FAILED (the job-completion log keeps every end, requeues too)
    assert [r["JobState"] for r in slurm_cluster.jobcomp_records(job)] == ["FAILED"]
    assert not (run / "checkpoints").exists()


def test_script_refuses_to_run_outside_slurm():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "not inside a Slurm job" in r.stderr, r.stderr


# A stand-in for train.py (TRAIN_SCRIPT): the first segment ends as an outage does (the
# run directory's OUTAGE file, exit 75); a requeued segment trains. The trainer's side
# (exit 75 and OUTAGE when the real S3 server is stopped) is
# test_remote_shards::test_an_outage_is_not_bad_input; this is the script's side.
OUTAGE_STANDIN = """\
import os, sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
run = Path(args["run.output_dir"]) / args["run.name"]
segment = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
if segment == 0:
    if os.environ.get("RANK", "0") == "0":
        run.mkdir(parents=True, exist_ok=True)
        (run / "OUTAGE").write_text("shard index s3://b/p/index.json: still failing after "
                                    "30 s of retries; an outage\\n")
    print("error: stand-in: an outage", file=sys.stderr, flush=True)
    sys.exit(75)
print(f"stand-in: segment {segment} trained", flush=True)
"""


def test_an_outage_requeues_the_job_and_no_secret_reaches_its_log(slurm_cluster, tmp_path):
    """Issue 29: training that ends in an outage (OUTAGE written, exit 75) is requeued by
    the script, and the next segment runs; a password in OVERRIDES is masked in the log
    line that shows the launch (it was written there as given)."""
    standin = tmp_path / "standin.py"
    standin.write_text(OUTAGE_STANDIN)
    runs = tmp_path / "runs"
    env = {"CONFIG": "configs/smoke.yaml", "GPUS_PER_NODE": "0", "RUN_DIR": str(runs),
           "TRAIN_SCRIPT": str(standin), "MAX_RESTARTS": "0",
           "OVERRIDES": "data.shards=https://alice:slurmPw-31c7@data.example.org/shards"}
    job = slurm_cluster.sbatch(SCRIPT, *SBATCH_ARGS, f"--output={tmp_path}/slurm-%j.log",
                               cwd=ROOT, env=env)
    log = tmp_path / f"slurm-{job}.log"
    info = slurm_cluster.wait_for_end(job, timeout=400, log=log)
    text, diag = log.read_text(), slurm_cluster.diagnostics(log)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", diag
    assert "training stopped for an outage: shard index s3://b/p/index.json" in text, diag
    assert f"requeueing job {job} after the outage (requeue 1 of at most 10)" in text, diag
    assert "stand-in: segment 1 trained" in text, diag
    assert not (runs / str(job) / "OUTAGE").exists()
    assert "slurmPw-31c7" not in text and "data.shards=https://***@data.example.org" in text
