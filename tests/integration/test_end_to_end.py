"""Issue 2 end to end: 2 processes over gloo via `accelerate launch`, then a resume."""

import json

import pytest

from tests.helpers import make_shards, metrics, read_wandb_history, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("digits") / "shards", limit=512, shard_size=128)


def test_two_process_run_then_resume(shards, tmp_path):
    common = [f"data.shards={shards}", f"run.output_dir={tmp_path}", "run.name=e2e",
              "log.wandb=offline"]
    r = train("launch/cpu_ddp.yaml", "configs/smoke.yaml", *common, "train.max_steps=20")
    run = tmp_path / "e2e"
    assert "2 process(es)" in r.stdout + r.stderr

    for step in (10, 20):
        ck = run / "checkpoints" / f"step-{step:08d}"
        assert (ck / "COMPLETE").is_file()
        assert (ck / "generator.safetensors").is_file()
        assert (ck / "model.safetensors").is_file() and (ck / "optimizer_2.bin").is_file()
        state = json.loads((ck / "train_state.json").read_text())
        assert state["step"] == step and state["images_seen"] == step * 16
        assert len(state["data"]) == 2  # one data state per rank
    rows = metrics(run)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for key in ("loss/D", "loss/G", "loss/info", "mi/c1", "mi/c2", "D/real", "D/fake",
                "perf/images_per_s"):
        assert key in rows[-1], key
    assert (run / "samples" / "step-00000020.png").stat().st_size > 0
    assert (run / "samples" / "step-00000020-c2.png").is_file()
    assert (run / "config.yaml").is_file()

    wandb_files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1
    history = read_wandb_history(wandb_files[0])
    logged = [h for h in history if "loss/D" in h]
    assert [h["_step"] for h in logged] == [5, 10, 15, 20]
    assert logged[-1]["loss/D"] == pytest.approx(rows[-1]["loss/D"], rel=1e-5)
    # traversal grids go to W&B as images at the picture steps
    pictures = [h for h in history if "samples/categories/_type" in h]
    assert [h["_step"] for h in pictures] == [10, 20]
    assert all(pictures[-1][f"samples/{k}/_type"] == "image-file"
               for k in ("categories", "c2", "c3"))
    assert list(wandb_files[0].parent.glob("files/media/images/samples/*.png"))

    r = train("launch/cpu_ddp.yaml", "configs/smoke.yaml", *common, "train.max_steps=30",
              "train.resume=auto")
    assert "resumed from" in r.stdout + r.stderr and "at step 20" in r.stdout + r.stderr
    assert [r["step"] for r in metrics(run)] == [5, 10, 15, 20, 25, 30]
    final = json.loads((run / "checkpoints/step-00000030/train_state.json").read_text())
    assert final["step"] == 30
    # keep=2: the step-10 checkpoint was pruned only after step-30 was complete
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000020", "step-00000030"]
    # offline W&B runs cannot be resumed: a second run in the same group
    assert len(sorted(run.glob("wandb/offline-run-*/run-*.wandb"))) == 2


def test_eval_every_scores_codes_in_the_metrics(shards, tmp_path):
    train("launch/cpu.yaml", "configs/smoke.yaml", f"data.shards={shards}",
          f"run.output_dir={tmp_path}", "run.name=ev", "train.max_steps=8", "log.every=4",
          "log.eval_every=6")
    rows = metrics(tmp_path / "ev")
    steps = [r["step"] for r in rows]
    assert steps == [4, 6, 8], "an eval step is a log step; never two rows for one step"
    scored = rows[1]
    assert 0.0 < scored["eval/acc/c1"] <= 1.0 and "eval/mi/c1" in scored
    assert "eval/mse/c2" in scored and "loss/D" in scored
    assert "eval/acc/c1" not in rows[0]
