"""checkpoint.keep_best (checkpoint.py keep_best, config validation) and the metric
schedule (LogConfig.metrics_at): which checkpoint is kept as the best, that pruning and
resume=auto never touch it, and that a metric not computed at checkpoint steps is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from infogan_dist import checkpoint as ckpt
from infogan_dist.config import ConfigError, load_config
from infogan_dist.config.schema import best_direction

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


def make_ckpt(run_dir: Path, step: int) -> Path:
    """A finalized checkpoint (without tensor files), through the real finalize."""
    tmp = ckpt.checkpoints_root(run_dir) / f"{ckpt.TMP_PREFIX}{step:08d}"
    tmp.mkdir(parents=True)
    (tmp / ckpt.STATE_FILE).write_text(json.dumps(ckpt.TrainerState(step=step).state_dict()))
    save_file({"step": torch.tensor([float(step)])}, str(tmp / "generator.safetensors"))
    return ckpt.finalize(run_dir, tmp, step, keep=2)


@pytest.mark.parametrize("mode,values,best_step", [
    ("min", [3.0, 1.0, 2.0, 0.5], 40),
    ("min", [1.0, 2.0, 3.0, 4.0], 10),
    ("max", [0.5, 0.9, 0.7, 0.8], 20),
])
def test_the_best_checkpoint_is_kept_apart_from_pruning(tmp_path, mode, values, best_step):
    for i, v in enumerate(values):
        step = 10 * (i + 1)
        final = make_ckpt(tmp_path, step)
        ckpt.keep_best(tmp_path, final, step, "eval/x", mode, {"eval/x": v})
    best = ckpt.checkpoints_root(tmp_path) / ckpt.BEST_DIR
    info = json.loads((best / ckpt.BEST_FILE).read_text())
    assert info == {"metric": "eval/x", "value": values[best_step // 10 - 1], "mode": mode,
                    "step": best_step, "source": f"step-{best_step:08d}"}
    assert load_file(str(best / "generator.safetensors"))["step"].item() == best_step
    assert ckpt.is_complete(best)  # loadable by eval, sample and train.resume=<dir>
    # pruning kept 2 rotating ones; resume=auto takes the newest of them, never best/
    good, bad = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in good] == ["step-00000030", "step-00000040"] and not bad
    assert ckpt.find_resume(tmp_path, "auto")[0].name == "step-00000040"
    assert not list(ckpt.checkpoints_root(tmp_path).glob(".*best"))  # no leftovers


def test_a_step_without_the_metric_or_with_nan_changes_nothing(tmp_path):
    final = make_ckpt(tmp_path, 10)
    assert ckpt.keep_best(tmp_path, final, 10, "eval/fid", "min", {"eval/fid": 2.0})
    final = make_ckpt(tmp_path, 20)
    assert not ckpt.keep_best(tmp_path, final, 20, "eval/fid", "min", {"loss/D": 0.1})
    assert not ckpt.keep_best(tmp_path, final, 20, "eval/fid", "min", {"eval/fid": float("nan")})
    assert ckpt.read_best(tmp_path)["step"] == 10


def test_direction_table_and_mode():
    assert best_direction("eval/fid", "auto") == "min"
    assert best_direction("eval/kid", "auto") == "min"
    assert best_direction("eval/acc/c1", "auto") == "max"
    assert best_direction("eval/mi/c2", "auto") == "max"
    assert best_direction("eval/other", "auto") is None
    assert best_direction("eval/other", "max") == "max"


def test_metric_schedule():
    cfg = load_config(str(SMOKE), ["log.eval_every=10", "log.fid_every=15",
                                   "eval.features=x", "log.eval_metrics=[codes]"])
    assert cfg.log.metrics_at(10) == ["codes"]
    assert cfg.log.metrics_at(15) == ["fid"]
    assert cfg.log.metrics_at(30) == ["codes", "fid"]
    assert cfg.log.metrics_at(7) == []


@pytest.mark.parametrize("overrides,match", [
    (["checkpoint.keep_best=eval/fid"], "checkpoint.keep_best.*now 0"),
    (["checkpoint.keep_best=eval/fid", "log.fid_every=4", "eval.features=x"],
     "checkpoint.every=10 must be a multiple"),
    (["checkpoint.keep_best=eval/acc/c1", "log.eval_every=3"], "multiple.*now 3"),
    (["checkpoint.keep_best=eval/custom", "log.eval_every=5"], "keep_best_mode.*min or max"),
    (["log.fid_every=10"], "eval.features"),
    (["log.eval_metrics=[codes, fid]", "log.eval_every=10"], "eval.features"),
    (["eval.features=inception"], "eval.inception_weights"),
    (["model.ema_half_life_images=-1"], "model.ema_half_life_images"),
])
def test_bad_settings_are_refused_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(str(SMOKE), overrides)


def test_good_settings_load():
    cfg = load_config(str(SMOKE), ["checkpoint.keep_best=eval/fid", "log.fid_every=5",
                                   "eval.features=x"])
    assert cfg.checkpoint.keep_best == "eval/fid"
    load_config(str(SMOKE), ["checkpoint.keep_best=eval/kid", "log.eval_every=5",
                             "log.eval_metrics=[codes, fid]", "eval.features=x"])
    load_config(str(SMOKE), ["checkpoint.keep_best=eval/custom", "log.eval_every=5",
                             "checkpoint.keep_best_mode=max"])


@pytest.mark.parametrize("overrides,match", [
    # issue 29: a metric that never appears kept nothing without a word
    (["checkpoint.keep_best=eval/acc/c9", "log.eval_every=5"],
     r"'eval/acc/c9'; the evaluations of this run \(codes\) report only eval/acc/c1, "
     "eval/mi/c1, eval/mi/c2, eval/mi/c3, eval/mse/c2, eval/mse/c3"),
    (["checkpoint.keep_best=eval/acc/c2", "log.eval_every=5"], "report only eval/acc/c1,"),
    (["checkpoint.keep_best=eval/custom", "log.eval_every=5",
      "checkpoint.keep_best_mode=max"], "'eval/custom'"),
])
def test_keep_best_on_a_metric_no_evaluation_reports_is_refused_at_start(overrides, match):
    from infogan_dist.preflight import check_keep_best

    cfg = load_config(str(SMOKE), overrides)  # the schema alone cannot know the names
    with pytest.raises(ConfigError, match=match):
        check_keep_best(cfg)


@pytest.mark.parametrize("overrides", [
    ["checkpoint.keep_best=eval/acc/c1", "log.eval_every=5"],
    ["checkpoint.keep_best=eval/mse/c3", "log.eval_every=5"],
    ["checkpoint.keep_best=eval/kid", "log.eval_every=5", "log.eval_metrics=[codes, fid]",
     "eval.features=x"],
    ["checkpoint.keep_best=eval/fid", "log.fid_every=5", "eval.features=x"],
])
def test_keep_best_on_a_reported_metric_passes(overrides):
    from infogan_dist.preflight import check_keep_best

    check_keep_best(load_config(str(SMOKE), overrides))
