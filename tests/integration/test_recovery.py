"""Issue 12 (trainer side): runs that protect themselves. Nothing destroys history at
start-up; a divergence rolls back (re-keyed, exactly resumable) or stops, and never
reaches a checkpoint; milestones survive rotation; torchrun restarts a crashed job from
its newest checkpoint, bitwise as if nothing happened; learning rates given on resume take
effect; damaged checkpoints are skipped or refused in one line; a full disk is one line.

One-line cases run train.py as a plain process (one rank, no launcher whose own failure
summary would wrap the line), or as one worker of a 2-process job that no other worker
joins: had anything started a process group, that would block until the test's timeout.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import (
    ROOT,
    free_port,
    launch_env,
    make_shards,
    metrics,
    train,
    train_cmd,
    two_machines,
)
from tests.integration.test_resume import assert_bitwise_equal
from tests.integration.test_resume import saved_tensors as _saved_tensors

pytestmark = pytest.mark.integration

SMOKE = "configs/smoke.yaml"
N = 10  # checkpoint.every of configs/smoke.yaml


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def listing(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def opts(shards: Path, out: Path, name: str, *more: str) -> list[str]:
    return [f"data.shards={shards}", f"run.output_dir={out}", f"run.name={name}",
            "log.images_every=0", *more]


def plain(*overrides: str, env: dict | None = None, lone_worker: bool = False,
          timeout: float = 300) -> subprocess.CompletedProcess:
    """train.py as a plain process; lone_worker: as rank 0 of 2 whose rank 1 never comes."""
    env = dict(env or launch_env())
    if lone_worker:
        env |= {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE), *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env)


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The run's one `error:` line; no traceback anywhere."""
    assert "Traceback" not in out(r), out(r)[-4000:]
    errors = [line for line in out(r).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out(r)[-4000:]
    return errors[0]


# the model files of these runs (no EMA generator: model.ema_half_life_images is 0 here)
MODEL_FILES = ("model.safetensors", "model_1.safetensors", "generator.safetensors")


def saved_tensors(ck: Path) -> dict[str, object]:
    return _saved_tensors(ck, MODEL_FILES)


def all_finite(ck: Path) -> bool:
    named = saved_tensors(ck)
    return all(torch.isfinite(t).all() for t in named.values()
               if torch.is_tensor(t) and t.is_floating_point())


def same_generator(a: Path, b: Path) -> bool:
    ga, gb = (load_file(str(p / "generator.safetensors")) for p in (a, b))
    return ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.getbasetemp() / "digits-256x64", limit=256, shard_size=64)


@pytest.fixture(scope="module")
def clean2(shards, tmp_path_factory):
    """An uninterrupted 2-rank run to 2N: the reference for recoveries."""
    live = tmp_path_factory.mktemp("clean")
    train("launch/cpu_ddp.yaml", SMOKE, *opts(shards, live, "clean"), f"train.max_steps={2 * N}")
    return live / "clean"


# --- 1. nothing destroys history at start-up ----------------------------------------------

def _dangling(run: Path) -> None:
    (run / "checkpoints").symlink_to(run.parent / "gone")


def _loop(run: Path) -> None:
    (run / "checkpoints").symlink_to(run / "checkpoints")


def _file(run: Path) -> None:
    (run / "checkpoints").write_text("not a directory\n")


@pytest.mark.parametrize("damage", [_dangling, _loop, _file], ids=["dangling", "loop", "file"])
def test_unreadable_checkpoints_stop_before_any_process_group(shards, tmp_path, damage):
    run = tmp_path / "hist"
    run.mkdir()
    rows = "".join(json.dumps({"step": s, "loss/D": 0.5}) + "\n" for s in (5, 10, 15, 20))
    (run / "metrics.jsonl").write_text(rows)
    damage(run)
    before = sorted(os.listdir(run))
    r = plain(*opts(shards, tmp_path, "hist"), lone_worker=True, timeout=120)
    assert r.returncode == 2, out(r)[-3000:]
    line = one_error_line(r)
    assert f"{run / 'checkpoints'} cannot be read" in line and "repair it" in line, line
    assert (run / "metrics.jsonl").read_text() == rows  # nothing dropped, nothing renamed
    assert sorted(os.listdir(run)) == before


def test_run_directory_that_is_a_file_is_refused(shards, tmp_path):
    (tmp_path / "hist").write_text("a file\n")
    r = plain(*opts(shards, tmp_path, "hist"), lone_worker=True, timeout=120)
    assert r.returncode == 2, out(r)[-3000:]
    assert f"run directory {tmp_path / 'hist'} exists but is not a directory" in \
        one_error_line(r)
    assert (tmp_path / "hist").read_text() == "a file\n"


def test_fresh_start_sets_old_metrics_aside(shards, tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    rows = "".join(json.dumps({"step": s, "loss/D": 0.5}) + "\n" for s in (5, 10, 15, 20))
    (run / "metrics.jsonl").write_text(rows)
    r = plain(*opts(shards, tmp_path, "fresh", "train.max_steps=5"))
    assert r.returncode == 0, out(r)[-3000:]
    assert "dropped" not in out(r)
    assert f"moved the old metrics.jsonl to {run / 'metrics.jsonl.abandoned-1'}" in out(r)
    assert (run / "metrics.jsonl.abandoned-1").read_text() == rows
    assert [m["step"] for m in metrics(run)] == [5]


# --- 2. the divergence guard -----------------------------------------------------------------

def test_nan_rolls_back_rekeyed_and_resumes_exactly(shards, clean2, tmp_path):
    """Rank 1's batch of step 13 is NaN: every rank's state turns non-finite, the flush
    at 15 sees it, all ranks roll back to step 10 and replay with re-keyed draws. A run
    stopped at 20 after the same rollback and resumed to 30 ends bitwise like the one
    that ran through."""
    env = launch_env() | {"INFOGAN_FAULT": "nan:1:13"}
    train("launch/cpu_ddp.yaml", SMOKE, *opts(shards, tmp_path, "through"),
          "train.max_steps=30", env=env)
    r = train("launch/cpu_ddp.yaml", SMOKE, *opts(shards, tmp_path, "split"),
              "train.max_steps=20", env=env)
    assert "warning: training diverged: non-finite " in out(r)
    assert f"rolled back to {step_dir(tmp_path / 'split', N)} (rollback 1 of 3" in out(r)
    r = train("launch/cpu_ddp.yaml", SMOKE, *opts(shards, tmp_path, "split"),
              "train.max_steps=30")
    assert f"resumed from {step_dir(tmp_path / 'split', 2 * N)}" in out(r)

    through, split = tmp_path / "through", tmp_path / "split"
    rows = metrics(through)
    assert [m["step"] for m in rows] == [5, 10, 10, 15, 20, 25, 30]
    event = rows[2]
    assert (event["event"], event["rollbacks"], event["diverged_step"]) == ("rollback", 1, 15)
    assert all(v is None or math.isfinite(v) for m in rows for v in m.values()
               if not isinstance(v, str))
    for ck in (step_dir(through, 2 * N), step_dir(through, 3 * N)):
        assert json.loads((ck / "train_state.json").read_text())["rollbacks"] == 1
        assert all_finite(ck)
    # the replay is not the original: re-keyed draws (and data order) from step 10 on
    assert not same_generator(step_dir(through, 2 * N), step_dir(clean2, 2 * N))
    assert_bitwise_equal(saved_tensors(step_dir(through, 3 * N)),
                         saved_tensors(step_dir(split, 3 * N)))


def test_nonfinite_stop_keeps_the_last_good_checkpoint(shards, tmp_path):
    """train.nonfinite=stop, no flush before the end (log.every=100): the check before
    the save at 20 refuses the non-finite state; one line, exit 1, step-10 kept."""
    env = launch_env() | {"INFOGAN_FAULT": "nan:0:13"}
    r = plain(*opts(shards, tmp_path, "stop", "train.nonfinite=stop", "log.every=100",
                    "train.max_steps=30"), env=env)
    assert r.returncode == 1, out(r)[-3000:]
    line = one_error_line(r)
    assert "training diverged: non-finite model, optimizer state or loss at step 20 " \
           "(checkpoint not written); train.nonfinite=stop" in line, line
    assert listing(tmp_path / "stop") == [f"step-{N:08d}"]
    assert all_finite(step_dir(tmp_path / "stop", N))

    # `infogan eval` refuses a non-finite checkpoint (one written before this guard)
    bad = tmp_path / "bad"
    shutil.copytree(step_dir(tmp_path / "stop", N), bad)
    weights = load_file(str(bad / "model_1.safetensors"))
    first = next(iter(weights))
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, str(bad / "model_1.safetensors"))
    r = subprocess.run([str(Path(sys.executable).parent / "infogan"), "eval", "--checkpoint",
                        str(bad), "--data", str(shards), "--no-pictures", "--samples", "64"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=launch_env())
    assert r.returncode == 2, out(r)[-3000:]
    assert "Traceback" not in out(r)
    assert out(r).strip().splitlines()[-1] == (
        f"infogan eval: error: {bad / 'model_1.safetensors'}: holds non-finite weights "
        "(NaN or inf), the state of a run that diverged; use an earlier checkpoint")


def test_huge_learning_rates_give_up_after_max_rollbacks(shards, tmp_path):
    """Real divergence: 10 sane steps, then resumed with learning rates of 1e6 (they take
    effect on resume): LSGAN's squared logits and Adam's squared gradients overflow in
    the first step. Two rollbacks to step 10, each re-keyed, diverge again; the third
    divergence ends the run. Only finite checkpoints exist."""
    common = opts(shards, tmp_path, "huge", "loss.adversarial=lsgan", "log.every=1",
                  "train.max_rollbacks=2")
    assert plain(*common, f"train.max_steps={N}").returncode == 0
    r = plain(*common, "optim.lr_d=1e6", "optim.lr_g=1e6", "optim.lr_info=1e6",
              f"train.max_steps={2 * N}")
    assert r.returncode == 1, out(r)[-3000:]
    line = one_error_line(r)
    assert line.startswith("error: training diverged: non-finite "), line
    assert line.endswith("train.nonfinite=rollback allows 2 rollback(s), 2 used; every "
                         "checkpoint kept is finite: lower the learning rates (optim.lr_*) "
                         "and resume"), line
    run = tmp_path / "huge"
    assert listing(run) == [f"step-{N:08d}"] and all_finite(step_dir(run, N))
    events = [m for m in metrics(run) if m.get("event") == "rollback"]
    assert [(e["step"], e["rollbacks"]) for e in events] == [(N, 1), (N, 2)]


# --- 3. milestones --------------------------------------------------------------------------

def test_milestones_survive_rotation(shards, tmp_path):
    r = plain(*opts(shards, tmp_path, "ms", "train.max_steps=30", "checkpoint.every=5",
                    "checkpoint.keep=2", "checkpoint.keep_every=10"))
    assert r.returncode == 0, out(r)[-3000:]
    assert listing(tmp_path / "ms") == [f"step-{s:08d}" for s in (10, 20, 25, 30)]


# --- 4. in-job recovery ----------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["kill:1:15", "kill_in_save:0:20"])
def test_max_restarts_recovers_from_a_dead_rank(shards, clean2, tmp_path, fault):
    """torchrun restarts the workers; they resume from step 10 (after a death inside the
    save of 20, the restarted main process first removes .tmp-step-20) and finish by
    themselves, bitwise equal to the uninterrupted run."""
    env = launch_env() | {"INFOGAN_FAULT": fault}
    cmd = train_cmd("launch/cpu_ddp.yaml", SMOKE, *opts(shards, tmp_path, "re"),
                    "train.max_steps=20", "dist.timeout_s=20",
                    extra_launch=("--max_restarts", "1", "--monitor_interval", "0.5"))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)
    assert r.returncode == 0, out(r)[-5000:]
    run = tmp_path / "re"
    assert f"resumed from {step_dir(run, N)} at step {N}" in out(r)
    if fault.startswith("kill_in_save"):
        tmp = run / "checkpoints" / f".tmp-step-{2 * N:08d}"
        assert f"removed the remains of an interrupted save: {tmp}" in out(r)
    assert listing(run) == [f"step-{N:08d}", f"step-{2 * N:08d}"]
    assert_bitwise_equal(saved_tensors(step_dir(clean2, 2 * N)),
                         saved_tensors(step_dir(run, 2 * N)))


def test_max_restarts_on_two_machines_with_c10d(shards, clean2, tmp_path):
    """Two "machines" on localhost, launched as slurm/infogan.sh launches them: c10d
    rendezvous hosted by machine 0 (is_host), each agent announcing its address
    (PET_LOCAL_ADDR), the agents' store not shared with the workers
    (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, see the script). Rank 1 dies at step 15; the
    agent of the other machine restarts its workers without counting a restart, and the
    group ranks may move between machines, so the fault fires once per job
    (INFOGAN_FAULT_ONCE). Both machines finish, bitwise equal to the uninterrupted run."""
    env = launch_env() | {"INFOGAN_FAULT": "kill:1:15", "PET_LOCAL_ADDR": "127.0.0.1",
                          "INFOGAN_FAULT_ONCE": str(tmp_path / "fault-fired"),
                          "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    outs = two_machines(SMOKE, *opts(shards, tmp_path, "nodes"), "train.max_steps=20",
                        "dist.timeout_s=30", env=env, timeout=400, launch=(
                            "--rdzv_backend", "c10d", "--rdzv_conf", "is_host={is_main}",
                            "--max_restarts", "1", "--monitor_interval", "0.5"))
    run = tmp_path / "nodes"
    assert (tmp_path / "fault-fired").exists()  # the kill happened
    assert f"resumed from {step_dir(run, N)} at step {N}" in "".join(outs)
    assert_bitwise_equal(saved_tensors(step_dir(clean2, 2 * N)),
                         saved_tensors(step_dir(run, 2 * N)))


# --- 5. hyper-parameters on resume ---------------------------------------------------------

def test_learning_rates_and_betas_given_on_resume_take_effect(shards, tmp_path):
    common = opts(shards, tmp_path, "lr")
    assert plain(*common, f"train.max_steps={N}").returncode == 0
    shutil.copytree(tmp_path / "lr", tmp_path / "same")
    r = plain(*common, f"train.max_steps={2 * N}", "optim.lr_g=5e-4", "optim.betas=[0.6,0.99]")
    assert r.returncode == 0, out(r)[-3000:]
    assert "optim.lr_g: 0.001 -> 0.0005 (changed on resume)" in out(r)
    assert "optim.betas: (0.5, 0.999) -> (0.6, 0.99) (changed on resume)" in out(r)
    assert "optim.lr_d" not in out(r)
    r = plain(*opts(shards, tmp_path, "same"), f"train.max_steps={2 * N}")
    assert r.returncode == 0 and "changed on resume" not in out(r), out(r)[-3000:]

    def groups(run: str, f: str) -> list[dict]:
        return torch.load(step_dir(tmp_path / run, 2 * N) / f, weights_only=True)["param_groups"]

    assert [(g["lr"], tuple(g["betas"])) for g in groups("lr", "optimizer_1.bin")] == \
        [(5e-4, (0.6, 0.99))]  # optimizer_1: G's
    assert [(g["lr"], tuple(g["betas"])) for g in groups("lr", "optimizer.bin")] == \
        [(2e-4, (0.6, 0.99))]
    assert [g["lr"] for g in groups("same", "optimizer_1.bin")] == [1e-3]
    # another trajectory
    assert not same_generator(step_dir(tmp_path / "lr", 2 * N), step_dir(tmp_path / "same", 2 * N))

    r = plain(*common, f"train.max_steps={3 * N}", "run.seed=7", lone_worker=True)
    assert r.returncode == 2 and "run.seed (0 -> 7)" in one_error_line(r), out(r)[-3000:]


# --- 6. damaged checkpoints, a full disk ----------------------------------------------------

@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer_2.bin"])
def test_truncated_weights_fall_back_to_the_previous_checkpoint(shards, tmp_path, damaged):
    common = opts(shards, tmp_path, "trunc")
    assert plain(*common, f"train.max_steps={2 * N}").returncode == 0
    f = step_dir(tmp_path / "trunc", 2 * N) / damaged
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    r = plain(*common, f"train.max_steps={3 * N}")
    assert r.returncode == 0, out(r)[-3000:]
    assert (f"ignoring incomplete or unreadable checkpoint {step_dir(tmp_path / 'trunc', 2 * N)}"
            f" ({damaged} is ") in out(r)
    assert f"resumed from {step_dir(tmp_path / 'trunc', N)} at step {N}" in out(r)
    assert json.loads((step_dir(tmp_path / "trunc", 3 * N) / "train_state.json")
                      .read_text())["step"] == 3 * N


def test_checkpoint_without_config_is_one_line(shards, tmp_path):
    common = opts(shards, tmp_path, "nocfg")
    assert plain(*common, f"train.max_steps={N}").returncode == 0
    (step_dir(tmp_path / "nocfg", N) / "config.yaml").unlink()
    r = plain(*common, f"train.max_steps={2 * N}", lone_worker=True, timeout=120)
    assert r.returncode == 2, out(r)[-3000:]
    assert f"{step_dir(tmp_path / 'nocfg', N) / 'config.yaml'} cannot be read" in \
        one_error_line(r)


def test_full_disk_between_saves_is_one_line(shards, tmp_path):
    """Issue 29: the disk fills while training between checkpoints. The next metrics row
    cannot be written: one line naming the file and what to do (exit 1), not an OSError
    traceback; the checkpoint written before is kept. No pictures before the end and
    `every` steps between saves: the metrics row meets the full disk first on any machine
    (its page fills within a few rows; the filler takes milliseconds, `every` smoke steps
    far longer), never a picture or the next save."""
    import time

    every = 200

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE),
             *opts(shards, disk, "fills", "train.max_steps=100000", "log.every=1",
                   f"checkpoint.every={every}", "log.images_every=0")],
            cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        run = disk / "fills"
        try:
            end = time.monotonic() + 300
            while not (run / "checkpoints" / f"step-{every:08d}" / "COMPLETE").exists():
                assert proc.poll() is None and time.monotonic() < end, proc.communicate()
                time.sleep(0.1)  # polling the run's progress, not a synchronisation
            # every free block of the tmpfs; unbuffered, so closing it has nothing left to
            # flush (a buffered file's close raised the ENOSPC of the leftover bytes again)
            with open(disk / "filler", "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert r.returncode == 1, out(r)[-3000:]
        line = one_error_line(r)
        assert line.startswith(f"error: no space left on the device (writing "
                               f"{run / 'metrics.jsonl'}); newest checkpoint "
                               f"step-{every:08d} kept; free space"), line
        assert f"step-{every:08d}" in listing(run) and all_finite(step_dir(run, every))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_during_a_save_is_one_line(shards, tmp_path):
    """A 6 MiB tmpfs holds one checkpoint of the smoke model (3.7 MB), not two."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], check=True)
    try:
        r = plain(*opts(shards, disk, "full", f"train.max_steps={2 * N}"))
        assert r.returncode == 1, out(r)[-3000:]
        line = one_error_line(r)
        assert line == (
            f"error: no space left on the device of {disk / 'full' / 'checkpoints'} while "
            f"saving step {2 * N}; the partial save was removed, previous checkpoint "
            f"step-{N:08d} kept; free space, then launch again (train.resume=auto continues "
            "from it)"), line
        assert listing(disk / "full") == [f"step-{N:08d}"]
        assert all_finite(step_dir(disk / "full", N))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_outside_a_save_is_one_line(shards, tmp_path):
    """The disk fills between saves, so a picture (or a metrics row, or W&B's copy of a
    picture) meets it first, not the checkpoint save that handles it itself: one line,
    exit 1, no traceback, the checkpoint kept; once space is freed the run continues."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        run = disk / "full"
        assert plain(*opts(shards, disk, "full", f"train.max_steps={N}")).returncode == 0
        ballast = disk / "ballast"
        st = os.statvfs(disk)
        with open(ballast, "wb") as f:  # 16 KiB left: the run's small files, not a picture
            os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - (16 << 10))
        r = plain(*opts(shards, disk, "full", f"train.max_steps={2 * N}", "log.images_every=2"))
        assert r.returncode == 1, out(r)[-3000:]
        line = one_error_line(r)
        assert line.startswith(f"error: no space left on the device (writing {run}/"), line
        assert line.endswith(f"; newest checkpoint step-{N:08d} kept; free space, then launch "
                             "again (train.resume=auto continues from it)"), line
        assert listing(run) == [f"step-{N:08d}"] and all_finite(step_dir(run, N))
        ballast.unlink()
        r = plain(*opts(shards, disk, "full", f"train.max_steps={2 * N}", "log.images_every=2"))
        assert r.returncode == 0, out(r)[-3000:]
        assert f"resumed from {step_dir(run, N)} at step {N}" in out(r)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_the_remains_of_a_killed_picture_are_removed_at_start(shards, tmp_path):
    """A picture is written to `.<name>.tmp-<pid>` and renamed: a SIGKILL between the two
    (the soak killed rank 0 there) left the temporary file for good. The next start
    removes it, as it removes an interrupted checkpoint's `.tmp-step-N`."""
    common = opts(shards, tmp_path, "pics")
    assert plain(*common, f"train.max_steps={N}").returncode == 0
    samples = tmp_path / "pics" / "samples"
    left = samples / f".step-{N:08d}-c2.png.tmp-999999"  # as a killed writer leaves it
    left.write_bytes(b"\x89PNG half a picture")
    r = plain(*common, f"train.max_steps={2 * N}")
    assert r.returncode == 0, out(r)[-3000:]
    assert f"warning: removed the remains of an interrupted picture: {left}" in out(r)
    assert not [p.name for p in samples.iterdir() if p.name.startswith(".")]
