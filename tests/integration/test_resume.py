"""Issue 4 through real `accelerate launch` processes: exact continuation (bitwise), across
world sizes, stream mode, a crash inside a save, frozen and safe config changes, W&B
continuity with the metrics rollback rule, and refusing pickled code in a checkpoint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from infogan_dist import checkpoint as ckpt
from infogan_dist.config import load_config
from infogan_dist.data import read_index
from infogan_dist.data.stream import plan_epoch
from tests.helpers import (
    ROOT,
    assert_trained_alike,
    free_port,
    launch_env,
    make_shards,
    metrics,
    read_wandb_history,
    read_wandb_records,
    train,
    train_cmd,
)

pytestmark = pytest.mark.integration

SMOKE = "configs/smoke.yaml"
LAUNCH = {1: "launch/cpu.yaml", 2: "launch/cpu_ddp.yaml"}
N = 10  # checkpoint.every of configs/smoke.yaml; the runs go to 2N
BATCH = 16  # train.global_batch_size of configs/smoke.yaml
# the EMA generator is on in these runs: exact resume covers it too
MODEL_FILES = ("model.safetensors", "model_1.safetensors", "generator.safetensors",
               "generator_ema.safetensors")
OPTIMIZER_FILES = ("optimizer.bin", "optimizer_1.bin", "optimizer_2.bin")


# --- helpers --------------------------------------------------------------------------------

def opts(shards: Path, out: Path, name: str, *more: str) -> list[str]:
    return [f"data.shards={shards}", f"run.output_dir={out}", f"run.name={name}",
            "log.images_every=0", "model.ema_half_life_images=100", *more]


def launch(ranks: int, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A launch that may fail (the caller checks returncode)."""
    return subprocess.run(train_cmd(LAUNCH[ranks], SMOKE, *overrides), capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env or launch_env())


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def listing(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def read_state(run: Path, step: int) -> dict:
    return json.loads((step_dir(run, step) / "train_state.json").read_text())


def saved_tensors(ck: Path, model_files: tuple[str, ...] = MODEL_FILES) -> dict[str, object]:
    """Every entry of G, D (and the sampling copy of G) and of the three Adams, by name:
    tensors, and the plain values of param_groups (lr, betas, ...). `model_files`: the
    model files the run writes (these runs: the EMA generator too)."""
    named: dict[str, object] = {}
    for f in model_files:
        for k, t in load_file(str(ck / f)).items():
            named[f"{f}:{k}"] = t
    for f in OPTIMIZER_FILES:
        sd = torch.load(ck / f, weights_only=True, map_location="cpu")
        assert set(sd) == {"state", "param_groups"}, (f, sorted(sd))
        assert sd["state"], f"{ck / f}: empty optimizer state"
        for i, entry in sd["state"].items():
            for k, v in entry.items():
                named[f"{f}:state[{i}].{k}"] = v
        for g, group in enumerate(sd["param_groups"]):
            for k, v in group.items():
                named[f"{f}:param_groups[{g}].{k}"] = v
    return named


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (so -0.0 != 0.0 and NaN payloads count)."""
    if t.is_floating_point():
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
        return t.contiguous().view(ints[t.element_size()])
    return t


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    differ = []
    for k in a:
        x, y = a[k], b[k]
        if torch.is_tensor(x):
            same = (torch.is_tensor(y) and x.dtype == y.dtype and x.shape == y.shape
                    and torch.equal(_bits(x), _bits(y)))
        else:
            same = x == y
        if not same:
            differ.append(k)
    assert not differ, f"{len(differ)} of {len(a)} entries differ, e.g. {differ[:5]}"


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # 256 digits, batch 16: an epoch is 16 steps, so 2N = 20 steps cross an epoch boundary
    return make_shards(tmp_path_factory.mktemp("digits") / "shards", limit=256, shard_size=64)


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory):
    """On 1 and on 2 ranks: `full{r}` trained to 2N at once, `half{r}` to N (a checkpoint
    at N). `live` holds them; `copies` holds copies of the half runs, same run.name."""
    live = tmp_path_factory.mktemp("runs")
    for r in (1, 2):
        train(LAUNCH[r], SMOKE, *opts(shards, live, f"full{r}"), f"train.max_steps={2 * N}")
        train(LAUNCH[r], SMOKE, *opts(shards, live, f"half{r}"), f"train.max_steps={N}")
    copies = tmp_path_factory.mktemp("copies")
    for r in (1, 2):
        shutil.copytree(live / f"half{r}", copies / f"half{r}")
    return SimpleNamespace(shards=shards, live=live, copies=copies)


# --- 1. exact continuation ------------------------------------------------------------------

@pytest.mark.parametrize("ranks", [1, 2])
def test_exact_continuation_is_bitwise(runs, ranks):
    run = runs.live / f"half{ranks}"
    assert listing(run) == [f"step-{N:08d}"]
    r = train(LAUNCH[ranks], SMOKE, *opts(runs.shards, runs.live, f"half{ranks}"),
              "train.resume=auto", f"train.max_steps={2 * N}")
    assert f"resumed from {step_dir(run, N)} at step {N}" in out(r)

    full = runs.live / f"full{ranks}"
    assert_bitwise_equal(saved_tensors(step_dir(full, 2 * N)), saved_tensors(step_dir(run, 2 * N)))
    assert read_state(run, 2 * N) == read_state(full, 2 * N)  # step, epoch, data position
    assert [m["step"] for m in metrics(run)] == [5, 10, 15, 20]


# --- 2. across world sizes --------------------------------------------------------------------

@pytest.mark.parametrize("saved, resumed", [(2, 1), (1, 2)])
def test_resume_across_world_sizes(runs, saved, resumed):
    run = runs.copies / f"half{saved}"
    before = read_state(run, N)
    assert before["step"] == N and before["world_size"] == saved
    assert [d["position"] for d in before["data"]] == [N * BATCH] * saved

    r = train(LAUNCH[resumed], SMOKE, *opts(runs.shards, runs.copies, f"half{saved}"),
              "train.resume=auto", f"train.max_steps={2 * N}")
    assert f"resumed from {step_dir(run, N)} at step {N}" in out(r)
    assert f"{resumed} process(es)" in out(r)

    after = read_state(run, 2 * N)
    assert after["step"] == 2 * N and after["world_size"] == resumed
    assert after["images_seen"] == 2 * N * BATCH
    assert after["data"] == [{"mode": "memory", "position": 2 * N * BATCH, "epoch": 1}] * resumed
    rows = {m["step"]: m for m in metrics(run)}
    assert sorted(rows) == [5, 10, 15, 20]
    # the first segment after the resume continued the data position of step N
    assert rows[15]["progress/images_seen"] == 15 * BATCH
    assert rows[20]["progress/epoch"] == 1.0

    resumed_state = saved_tensors(step_dir(run, 2 * N))
    for ref in (1, 2):  # world-size invariant: matches the uninterrupted run on either
        assert_trained_alike(saved_tensors(step_dir(runs.live / f"full{ref}", 2 * N)),
                             resumed_state, f"full{ref}: ")


# --- 3. stream mode -----------------------------------------------------------------------------

def test_stream_mode_resumes_from_the_saved_data_state(tmp_path_factory, tmp_path):
    shards = make_shards(tmp_path_factory.mktemp("stream") / "shards", limit=512, shard_size=64)
    # blocks of 16 samples < 64 per shard, so the first shard of each rank is done by step 12
    name, stop = "stream", 12
    common = opts(shards, tmp_path, name, "data.mode=stream", "data.shuffle_buffer=16")
    train(LAUNCH[2], SMOKE, *common, f"train.max_steps={stop}")
    run = tmp_path / name

    saved = read_state(run, stop)
    assert len(saved["data"]) == 2
    for d in saved["data"]:
        assert (d["mode"], d["epoch"], d["batches_in_epoch"]) == ("stream", 0, stop)
    done = sorted(set().union(*(d["done_shards"] for d in saved["data"])))
    assert done, saved["data"]

    index, seed, b = read_index(str(shards)), load_config(SMOKE).run.seed, BATCH // 2
    per_epoch = plan_epoch(index, seed, 0, [], 2, b).batches
    left = plan_epoch(index, seed, 0, [index.names.index(n) for n in done], 2, b).batches
    assert stop < per_epoch, "the stop must be mid-epoch"
    # epoch 0 ends after the shards not done, re-split over the ranks: sooner than a
    # fresh epoch would (stop + per_epoch), and not at the uninterrupted boundary
    boundary = stop + left
    assert boundary < stop + per_epoch and boundary != per_epoch
    end = boundary + 2

    r = train(LAUNCH[2], SMOKE, *common, "train.resume=auto", f"train.max_steps={end}",
              "log.every=1")
    assert f"resumed from {step_dir(run, stop)} at step {stop}" in out(r)
    rows = [m for m in metrics(run) if m["step"] > stop]
    assert [m["step"] for m in rows] == list(range(stop + 1, end + 1))
    epochs = {m["step"]: m["progress/epoch"] for m in rows}
    assert {s for s, e in epochs.items() if e == 1.0} == set(range(boundary, end + 1)), epochs
    assert {s for s, e in epochs.items() if e == 0.0} == set(range(stop + 1, boundary))
    final = read_state(run, end)
    for d in final["data"]:
        assert (d["mode"], d["epoch"], d["batches_in_epoch"]) == ("stream", 1, end - boundary)


# --- 4. crash inside a save ----------------------------------------------------------------------

def test_crash_inside_a_save_keeps_the_previous_checkpoint(runs, tmp_path):
    name = "crash"
    common = opts(runs.shards, tmp_path, name, f"train.max_steps={2 * N}", "dist.timeout_s=20")
    env = launch_env() | {"INFOGAN_FAULT": f"kill_in_save:0:{2 * N}"}
    r = launch(2, *common, env=env)
    run = tmp_path / name
    assert r.returncode != 0, out(r)[-3000:]
    tmp = run / "checkpoints" / f".tmp-step-{2 * N:08d}"
    assert listing(run) == [tmp.name, f"step-{N:08d}"]
    assert (tmp / "model.safetensors").is_file()  # Accelerate's files were written...
    assert not (tmp / "COMPLETE").exists()  # ...but the save never completed
    assert ckpt.is_complete(step_dir(run, N))
    assert read_state(run, N)["step"] == N

    r = train(LAUNCH[2], SMOKE, *common, "train.resume=auto")
    assert f"removed the remains of an interrupted save: {tmp}" in out(r)
    assert f"resumed from {step_dir(run, N)} at step {N}" in out(r)
    assert f"dropped 2 entries after step {N}" in out(r)  # 15 and 20 of the dead run
    assert listing(run) == [f"step-{N:08d}", f"step-{2 * N:08d}"]
    assert read_state(run, 2 * N)["step"] == 2 * N
    assert [m["step"] for m in metrics(run)] == [5, 10, 15, 20]
    # the recovered run is the uninterrupted one, bit for bit
    assert_bitwise_equal(saved_tensors(step_dir(runs.live / "full2", 2 * N)),
                         saved_tensors(step_dir(run, 2 * N)))


# --- 6. frozen and safe changes ------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    ["model.arch=infogan_mnist"],
    ["latent.continuous=1"],
    ["model.arch=infogan_mnist", "latent.continuous=1"],
])
def test_resume_refuses_frozen_changes_before_any_process_group(runs, tmp_path, changes):
    run = tmp_path / "full1"
    shutil.copytree(runs.live / "full1", run)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*"))
    # What one torchrun worker of a 2-process job sees. No rank 1 will ever come: had
    # preflight started a process group, this would block until the subprocess timeout.
    env = launch_env() | {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                          "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE),
           *opts(runs.shards, tmp_path, "full1"), "train.resume=auto", *changes]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)

    assert r.returncode == 2, out(r)
    lines = [line for line in out(r).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: cannot resume from {step_dir(run, 2 * N)}: ")
    for key in (c.split("=")[0] for c in changes):
        assert key in lines[0]
    assert sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*")) == before


def test_resume_allows_safe_changes(runs, tmp_path):
    moved = tmp_path / "moved"  # run.output_dir changes: the run directory was moved
    shutil.copytree(runs.live / "full1", moved / "full1")
    run = moved / "full1"
    r = train(LAUNCH[1], SMOKE, f"data.shards={runs.shards}", f"run.output_dir={moved}",
              "run.name=full1", "train.resume=auto", "train.max_steps=26", "log.every=3",
              "log.images_every=11", "checkpoint.every=4",
              "model.ema_half_life_images=100")  # as the run was trained (frozen key)
    assert f"resumed from {step_dir(run, 2 * N)} at step {2 * N}" in out(r)
    assert [m["step"] for m in metrics(run)] == [5, 10, 15, 20, 21, 24, 26]
    assert listing(run) == ["step-00000024", "step-00000026"]  # every 4, keep 2
    assert read_state(run, 26)["step"] == 26
    pictures = sorted(p.name for p in (run / "samples").iterdir())
    assert [p for p in pictures if re.fullmatch(r"step-\d{8}\.png", p)] == [
        "step-00000020.png", "step-00000022.png", "step-00000026.png"]
    saved = load_config(run / "config.yaml")
    assert (saved.run.output_dir, saved.train.max_steps, saved.log.every,
            saved.log.images_every, saved.checkpoint.every) == (str(moved), 26, 3, 11, 4)


# --- 7. W&B continuity, metrics rollback ---------------------------------------------------------

def test_wandb_offline_segments_and_rollback_to_an_older_checkpoint(runs, tmp_path):
    name = "wb"
    common = opts(runs.shards, tmp_path, name, "log.wandb=offline", f"train.max_steps={2 * N}")
    train(LAUNCH[1], SMOKE, *common)
    run = tmp_path / name
    first = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in first] == [5, 10, 15, 20]

    r = train(LAUNCH[1], SMOKE, *common, f"train.resume={step_dir(run, N)}")
    assert f"resumed from {step_dir(run, N)} at step {N}" in out(r)
    assert f"metrics.jsonl: dropped 2 entries after step {N}" in out(r)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == [5, 10, 15, 20]  # strictly increasing: no step twice
    assert lines[:2] == first[:2]  # entries up to the checkpoint are kept as they were
    # The abandoned continuation's step-20 is set aside, not pruned into or resumed from;
    # the checkpoint resumed from (step-10) survives.
    assert listing(run) == [f"abandoned-step-{2 * N:08d}", f"step-{N:08d}", f"step-{2 * N:08d}"]
    assert "set aside" in out(r)

    segments = json.loads((run / "wandb_runs.json").read_text())
    assert [s["mode"] for s in segments] == ["offline", "offline"]
    ids = [s["id"] for s in segments]
    assert len(set(ids)) == 2
    files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2
    by_id = {}
    for f in files:
        [rec] = [x for x in read_wandb_records(f) if x.WhichOneof("record_type") == "run"][:1]
        assert rec.run.run_group == name, rec.run
        by_id[rec.run.run_id] = f
    assert sorted(by_id) == sorted(ids)
    for run_id, logged in zip(ids, ([5, 10, 15, 20], [15, 20]), strict=True):
        history = [h for h in read_wandb_history(by_id[run_id]) if "loss/D" in h]
        assert [h["_step"] for h in history] == logged, run_id


# --- 8. safe loading -----------------------------------------------------------------------------

class Payload:
    """Unpickling it creates `marker` (stands for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_in_a_checkpoint_is_refused_and_never_runs(runs, tmp_path):
    run = tmp_path / "full1"
    shutil.copytree(runs.live / "full1", run)
    bait = {"state": {}, "param_groups": [], "extra": None}

    check = tmp_path / "check.bin"  # the payload is live: an unsafe load runs it
    torch.save(bait | {"extra": Payload(tmp_path / "check-marker")}, check)
    torch.load(check, weights_only=False)
    assert (tmp_path / "check-marker").exists()

    marker = tmp_path / "marker"
    torch.save(bait | {"extra": Payload(marker)}, step_dir(run, 2 * N) / "optimizer.bin")
    before = listing(run)
    r = launch(1, *opts(runs.shards, tmp_path, "full1"), "train.resume=auto",
               "train.max_steps=30")
    assert r.returncode != 0, out(r)[-3000:]
    assert "error: refusing to load" in out(r)  # one line, no invitation to unpickle
    assert not marker.exists()
    assert "resumed from" not in out(r)
    assert listing(run) == before
