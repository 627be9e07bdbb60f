"""Issue 4, in-process: choosing the checkpoint to resume from, the write protocol's
ordering, config checks, the metrics rollback rule, W&B run ids and safe loading."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from infogan_dist import checkpoint as ckpt
from infogan_dist import tracking
from infogan_dist.config import ConfigError, load_config, save_config
from infogan_dist.tracking import truncate_metrics

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


def make_ckpt(run_dir: Path, step: int, *, complete: bool = True, state: str | None = None,
              name: str | None = None) -> Path:
    """A checkpoint directory as the trainer lays it out (without the tensor files)."""
    d = ckpt.checkpoints_root(run_dir) / (name or f"{ckpt.PREFIX}{step:08d}")
    d.mkdir(parents=True)
    text = state if state is not None else json.dumps(ckpt.TrainerState(step=step).state_dict())
    (d / ckpt.STATE_FILE).write_text(text)
    if complete:
        (d / ckpt.COMPLETE).write_text(f"step {step}\n")
    return d


# --- find_resume ------------------------------------------------------------------------

def test_find_resume_picks_newest_complete_and_names_the_others(tmp_path):
    make_ckpt(tmp_path, 10)
    newest = make_ckpt(tmp_path, 20)
    no_marker = make_ckpt(tmp_path, 30, complete=False)
    unreadable = make_ckpt(tmp_path, 40, state='{"step": 40, "epo')  # cut by a crash
    missing_state = make_ckpt(tmp_path, 50)
    (missing_state / ckpt.STATE_FILE).unlink()
    tmp = make_ckpt(tmp_path, 60, name=f"{ckpt.TMP_PREFIX}{60:08d}")  # even with COMPLETE
    (ckpt.checkpoints_root(tmp_path) / "notes.txt").write_text("not a checkpoint")

    path, warnings = ckpt.find_resume(tmp_path, "auto")

    assert path == newest
    assert len(warnings) == 4, warnings
    for bad in (no_marker, unreadable, missing_state, tmp):
        assert sum(str(bad) in w for w in warnings) == 1, (bad, warnings)
    assert not any("notes.txt" in w or str(newest) in w for w in warnings)


def test_find_resume_with_nothing_usable_starts_fresh(tmp_path):
    assert ckpt.find_resume(tmp_path, "auto") == (None, [])  # no checkpoints/ at all
    bad = make_ckpt(tmp_path, 10, complete=False)
    path, warnings = ckpt.find_resume(tmp_path, "auto")
    assert path is None and len(warnings) == 1 and str(bad) in warnings[0]


def test_find_resume_none_ignores_checkpoints(tmp_path):
    make_ckpt(tmp_path, 10)
    assert ckpt.find_resume(tmp_path, "none") == (None, [])


def test_find_resume_explicit_path(tmp_path):
    older = make_ckpt(tmp_path, 10)
    make_ckpt(tmp_path, 20)
    assert ckpt.find_resume(tmp_path, str(older)) == (older, [])  # an older one on purpose
    incomplete = make_ckpt(tmp_path, 30, complete=False)
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        ckpt.find_resume(tmp_path, str(incomplete))
    with pytest.raises(ConfigError, match="train.resume="):
        ckpt.find_resume(tmp_path, str(tmp_path / "nowhere"))


def test_trainer_state_round_trip():
    s = ckpt.TrainerState(step=7, epoch=1, images_seen=112, world_size=2,
                          data=[{"mode": "memory", "position": 112, "epoch": 0}] * 2)
    t = ckpt.TrainerState()
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t == s


# --- finalize / clean_stale_tmp ----------------------------------------------------------

def tmp_save(run_dir: Path, step: int) -> Path:
    """What every rank leaves in .tmp-step-N before the main process finalizes it."""
    return make_ckpt(run_dir, step, complete=False, name=f"{ckpt.TMP_PREFIX}{step:08d}")


def names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in ckpt.checkpoints_root(run_dir).iterdir())


def test_finalize_prunes_only_after_the_new_one_is_complete(tmp_path, monkeypatch):
    make_ckpt(tmp_path, 10)
    make_ckpt(tmp_path, 20)
    tmp = tmp_save(tmp_path, 30)
    final = ckpt.step_dir(tmp_path, 30)
    seen = []
    real_rmtree = shutil.rmtree

    def spying_rmtree(path, *a, **kw):
        # at every deletion the new checkpoint must already be complete and in place
        seen.append((Path(path).name, ckpt.is_complete(final), tmp.exists()))
        real_rmtree(path, *a, **kw)

    monkeypatch.setattr(ckpt.shutil, "rmtree", spying_rmtree)
    assert ckpt.finalize(tmp_path, tmp, 30, keep=2) == final

    assert seen == [("step-00000010", True, False)]
    assert names(tmp_path) == ["step-00000020", "step-00000030"]
    assert (final / ckpt.COMPLETE).read_text() == "step 30\n"


def test_finalize_syncs_every_file_before_complete(tmp_path, monkeypatch):
    tmp = tmp_save(tmp_path, 10)
    (tmp / "model.safetensors").write_bytes(b"x")
    (tmp / "optimizer.bin").write_bytes(b"y")
    synced = []
    real = ckpt._fsync_dir

    def spy(path):
        synced.append((Path(path).name, (tmp / ckpt.COMPLETE).exists()))
        real(path)

    monkeypatch.setattr(ckpt, "_fsync_dir", spy)
    ckpt.finalize(tmp_path, tmp, 10, keep=2)
    before = {name for name, complete in synced if not complete}
    assert {"model.safetensors", "optimizer.bin", ckpt.STATE_FILE, tmp.name} <= before


def test_finalize_crash_before_rename_keeps_every_old_checkpoint(tmp_path, monkeypatch):
    make_ckpt(tmp_path, 10)
    make_ckpt(tmp_path, 20)
    tmp = tmp_save(tmp_path, 30)

    def crash(*a, **kw):
        raise OSError("simulated crash while renaming")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        ckpt.finalize(tmp_path, tmp, 30, keep=2)
    monkeypatch.undo()

    assert names(tmp_path) == [".tmp-step-00000030", "step-00000010", "step-00000020"]
    path, warnings = ckpt.find_resume(tmp_path, "auto")
    assert path == ckpt.step_dir(tmp_path, 20) and str(tmp) in warnings[0]
    assert ckpt.clean_stale_tmp(tmp_path) == [tmp]
    assert names(tmp_path) == ["step-00000010", "step-00000020"]


@pytest.mark.parametrize("keep", [2, 3, 5])
def test_finalize_keeps_keep_complete_checkpoints(tmp_path, keep):
    incomplete = make_ckpt(tmp_path, 5, complete=False)  # neither counted nor deleted
    for step in range(10, 70, 10):
        ckpt.finalize(tmp_path, tmp_save(tmp_path, step), step, keep=keep)
    good, bad = ckpt.list_checkpoints(tmp_path)
    assert [int(p.name.split("-")[1]) for p in good] == list(range(10, 70, 10))[-keep:]
    assert bad == [incomplete]


def test_finalize_replaces_a_checkpoint_reached_again_after_a_rollback(tmp_path):
    make_ckpt(tmp_path, 10)
    old20 = make_ckpt(tmp_path, 20)
    (old20 / "marker-of-the-first-segment").write_text("x")
    ckpt.finalize(tmp_path, tmp_save(tmp_path, 20), 20, keep=2)
    assert names(tmp_path) == ["step-00000010", "step-00000020"]
    assert not (old20 / "marker-of-the-first-segment").exists()
    assert ckpt.is_complete(old20)


def test_clean_stale_tmp_removes_only_tmp_dirs(tmp_path):
    assert ckpt.clean_stale_tmp(tmp_path) == []  # no checkpoints/ yet
    keep = make_ckpt(tmp_path, 10)
    stale = [tmp_save(tmp_path, 20), tmp_save(tmp_path, 30)]
    assert ckpt.clean_stale_tmp(tmp_path) == stale
    assert names(tmp_path) == [keep.name]


# --- config: keep, frozen keys ----------------------------------------------------------

@pytest.mark.parametrize("keep", [1, 0])
def test_checkpoint_keep_below_two_is_refused(keep):
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [f"checkpoint.keep={keep}"])
    msg = str(e.value)
    assert "checkpoint.keep" in msg and ">= 2" in msg and "\n" not in msg


def checkpoint_with(tmp_path: Path, *overrides: str) -> Path:
    d = make_ckpt(tmp_path, 10)
    save_config(load_config(SMOKE, list(overrides)), d / "config.yaml")
    return d


@pytest.mark.parametrize("change, key", [
    ("model.arch=infogan_mnist", "model.arch"),
    ("model.width=0.25", "model.width"),
    ("latent.continuous=1", "latent.continuous"),
    ("latent.categorical=[10, 4]", "latent.categorical"),
    ("latent.noise=normal", "latent.noise"),
    ("train.update=paper", "train.update"),
])
def test_resume_conflicts_name_frozen_keys(tmp_path, change, key):
    d = checkpoint_with(tmp_path)
    conflicts = ckpt.resume_conflicts(d, load_config(SMOKE, [change]))
    assert len(conflicts) == 1 and conflicts[0].startswith(f"{key} ("), conflicts


def test_resume_conflicts_allow_safe_changes(tmp_path):
    d = checkpoint_with(tmp_path)
    changed = load_config(SMOKE, [
        "train.max_steps=999", "log.every=3", "log.images_every=7", "checkpoint.every=4",
        "checkpoint.keep=5", "run.output_dir=/elsewhere", "log.wandb=offline",
        "dist.check_every=2", "dist.timeout_s=30", "data.num_workers=2",
    ])
    assert ckpt.resume_conflicts(d, changed) == []


# --- metrics.jsonl rollback rule -----------------------------------------------------------

def test_truncate_metrics_drops_entries_after_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert truncate_metrics(path, 10) == 0 and not path.exists()
    lines = [json.dumps({"step": s, "loss/D": 0.5}) for s in (5, 10, 15, 20)]
    path.write_text("\n".join(lines) + '\n{"step": 25, "loss/D"')  # last line cut by a crash
    assert truncate_metrics(path, 10) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [5, 10]
    assert truncate_metrics(path, 10) == 0  # nothing more to drop
    assert path.read_text() == lines[0] + "\n" + lines[1] + "\n"


# --- W&B run ids -------------------------------------------------------------------------

def wandb_cfg(tmp_path: Path):
    cfg = load_config(SMOKE, [f"run.output_dir={tmp_path}", "run.name=wb"])
    cfg.run_dir.mkdir(parents=True)
    return cfg


def test_wandb_online_resumes_the_stored_run_id(tmp_path):
    cfg = wandb_cfg(tmp_path)
    first = tracking.wandb_kwargs(cfg, cfg.run_dir, "online", True)
    second = tracking.wandb_kwargs(cfg, cfg.run_dir, "online", True)
    assert first["id"] == second["id"]
    for kw in (first, second):
        assert kw["resume"] == "allow" and kw["group"] == "wb" and kw["name"] == "wb"
        assert kw["mode"] == "online" and kw["dir"] == str(cfg.run_dir)
    runs = json.loads((cfg.run_dir / "wandb_runs.json").read_text())
    assert [r["id"] for r in runs] == [first["id"]] * 2
    # a non-main process reads the record but never writes it
    third = tracking.wandb_kwargs(cfg, cfg.run_dir, "online", False)
    assert third["id"] == first["id"]
    assert len(json.loads((cfg.run_dir / "wandb_runs.json").read_text())) == 2


def test_wandb_offline_segments_are_new_runs_in_one_group(tmp_path):
    cfg = wandb_cfg(tmp_path)
    first = tracking.wandb_kwargs(cfg, cfg.run_dir, "offline", True)
    second = tracking.wandb_kwargs(cfg, cfg.run_dir, "offline", True)
    assert first["id"] != second["id"]
    assert first["group"] == second["group"] == "wb"
    assert (first["name"], second["name"]) == ("wb-1", "wb-2")
    assert first["resume"] is None and second["resume"] is None
    runs = json.loads((cfg.run_dir / "wandb_runs.json").read_text())
    assert [(r["id"], r["mode"]) for r in runs] == [(first["id"], "offline"),
                                                    (second["id"], "offline")]


def test_wandb_online_without_a_key_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert tracking.wandb_mode_for("online") == "offline"
    assert tracking.wandb_mode_for("offline") == "offline"
    assert tracking.wandb_mode_for("off") is None
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode_for("online") == "online"


# --- safe loading ------------------------------------------------------------------------

class Payload:
    """Unpickling this object creates `marker`: stands for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_accelerate_loader_refuses_pickled_code(tmp_path):
    """Every file Accelerate's load_state reads with torch.load (optimizer_*.bin,
    random_states_*.pkl, scaler.pt) goes through this loader with weights_only=True."""
    from accelerate.utils import load

    live = tmp_path / "live-marker"
    buf = io.BytesIO()
    torch.save({"state": {}, "param_groups": [], "x": Payload(live)}, buf)
    buf.seek(0)
    torch.load(buf, weights_only=False)  # the payload is real...
    assert live.exists()

    marker = tmp_path / "marker"
    as_torch = tmp_path / "optimizer.bin"
    torch.save({"state": {}, "param_groups": [], "x": Payload(marker)}, as_torch)
    as_pickle = tmp_path / "random_states_0.pkl"
    as_pickle.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    for f in (as_torch, as_pickle):
        with pytest.raises(Exception, match="Weights only load failed"):
            load(f, map_location="cpu")
    assert not marker.exists()  # ...and never ran


def test_wandb_key_is_read_from_netrc_not_found_as_a_substring(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("# api.wandb.ai is mentioned, but no entry\nmachine example.org "
                     "login u password p\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert tracking.wandb_mode_for("online") == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert tracking.wandb_mode_for("online") == "online"


# --- entries named like a checkpoint that the trainer did not write (issue 29) ----------

def test_a_symlink_or_file_named_like_the_next_checkpoint_is_set_aside(tmp_path, capsys):
    """checkpoints/step-N as a symlink (to a directory elsewhere) or a plain file: the
    save moves the entry itself aside (never follows, empties or deletes it) and writes
    the checkpoint; resume never takes a symlink for a checkpoint."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep me")
    make_ckpt(tmp_path, 10)
    root = ckpt.checkpoints_root(tmp_path)
    (root / "step-00000020").symlink_to(elsewhere, target_is_directory=True)
    (root / "step-00000030").write_text("a file")
    (root / ".tmp-step-00000040").symlink_to(elsewhere, target_is_directory=True)
    path, warnings = ckpt.find_resume(tmp_path, "auto")
    assert path == root / "step-00000010"
    assert any("step-00000020 (a symlink (to " in w for w in warnings), warnings
    assert ckpt.clean_stale_tmp(tmp_path) == [root / ".tmp-step-00000040"]
    for step in (20, 30):
        ckpt.finalize(tmp_path, tmp_save(tmp_path, step), step, keep=5)
    assert ckpt.is_complete(root / "step-00000020") and ckpt.is_complete(root / "step-00000030")
    assert not (root / "step-00000020").is_symlink()
    assert (root / "aside-step-00000020").is_symlink()
    assert (root / "aside-step-00000030").read_text() == "a file"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious"]  # untouched
    assert "warning: " in capsys.readouterr().out


def test_keep_best_replaces_a_symlinked_best_without_following_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep me")
    first = make_ckpt(tmp_path, 10)
    root = ckpt.checkpoints_root(tmp_path)
    (root / ckpt.BEST_DIR).symlink_to(elsewhere, target_is_directory=True)
    (root / ".old-best").symlink_to(elsewhere, target_is_directory=True)
    assert ckpt.keep_best(tmp_path, first, 10, "eval/fid", "min", {"eval/fid": 3.0})
    assert ckpt.keep_best(tmp_path, make_ckpt(tmp_path, 20), 20, "eval/fid", "min",
                          {"eval/fid": 2.0})
    assert not (root / ckpt.BEST_DIR).is_symlink()
    assert json.loads((root / ckpt.BEST_DIR / ckpt.BEST_FILE).read_text())["step"] == 20
    assert (elsewhere / "precious").read_text() == "keep me"
