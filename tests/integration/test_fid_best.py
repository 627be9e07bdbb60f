"""Issue 14 through real processes: `infogan train-features`, FID/KID during training on
2 gloo ranks (the metric "fid", split over the ranks) with the EMA generator,
checkpoint.keep_best=eval/fid, `infogan eval --fid --json` agreeing with the in-training
value, and bad input answered in one line with exit 2."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import ROOT, VENV_BIN, launch_env, make_shards, metrics, run_ok, train

pytestmark = pytest.mark.integration

INFOGAN = str(VENV_BIN / "infogan")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.getbasetemp() / "digits-256x64", limit=256, shard_size=64)


@pytest.fixture(scope="module")
def features(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "mnist"
    r = run_ok([INFOGAN, "train-features", "--data", str(shards), "--out", str(out),
                "--epochs", "1", "--width", "8"])
    assert "held-out accuracy" in r.stdout
    spec = json.loads((out / "features.json").read_text())
    assert spec["image_shape"] == [1, 28, 28] and spec["feature_dim"] == 128
    return out


@pytest.fixture(scope="module")
def one_step(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    train("launch/cpu.yaml", "configs/smoke.yaml", f"data.shards={shards}",
          f"run.output_dir={out}", "run.name=x", "train.max_steps=1", "log.images_every=0")
    return out / "x" / "checkpoints" / "step-00000001"


def eval_json(*args: str) -> dict:
    r = run_ok([INFOGAN, "eval", "--json", "--no-pictures", "--samples", "64", *args])
    return json.loads(r.stdout)


def test_fid_in_training_keep_best_and_eval_agree(shards, features, tmp_path):
    fid_opts = ("--fid", "--features", str(features), "--fid-samples", "64", "--batch", "16")
    r = train("launch/cpu_ddp.yaml", "configs/smoke.yaml", f"data.shards={shards}",
              f"run.output_dir={tmp_path}", "run.name=fid", "model.ema_half_life_images=200",
              "log.fid_every=5", f"eval.features={features}", "eval.fid_samples=64",
              "eval.fid_batch=16", "checkpoint.every=5", "checkpoint.keep=2",
              "checkpoint.keep_best=eval/fid", "log.images_every=0")
    assert "2 process(es)" in r.stdout
    run = tmp_path / "fid"
    rows = {m["step"]: m for m in metrics(run)}
    fids = {s: rows[s]["eval/fid"] for s in (5, 10, 15, 20)}
    assert all(rows[s]["eval/kid"] == rows[s]["eval/kid"] for s in fids)  # logged, not NaN
    assert len(set(fids.values())) == 4 and min(fids.values()) > 0

    # the best checkpoint by eval/fid (lower is better) is kept apart from the rotating two
    best_step = min(fids, key=fids.get)
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["best", "step-00000015", "step-00000020"]
    info = json.loads((root / "best" / "BEST.json").read_text())
    assert (info["step"], info["value"], info["mode"]) == (best_step, fids[best_step], "min")

    # the same FID from one process on the checkpoint: same keyed latents, same chunks,
    # the EMA generator by default; the raw generator scores differently
    ck = root / "step-00000020"
    ema = eval_json("--checkpoint", str(ck), "--data", str(shards), *fid_opts)
    assert ema["generator"] == "generator_ema.safetensors"
    assert ema["fid"] == pytest.approx(fids[20], rel=1e-6)
    assert ema["kid"] == pytest.approx(rows[20]["eval/kid"], rel=1e-5, abs=1e-9)
    raw = eval_json("--checkpoint", str(ck), "--data", str(shards), "--raw-generator", *fid_opts)
    assert raw["generator"] == "generator.safetensors" and raw["fid"] != ema["fid"]
    kept = eval_json("--checkpoint", str(root / "best"), "--data", str(shards), *fid_opts)
    assert kept["step"] == best_step and kept["fid"] == pytest.approx(fids[best_step], rel=1e-6)

    # resume=auto continues from the newest rotating checkpoint, not from best/
    r = train("launch/cpu.yaml", "configs/smoke.yaml", f"data.shards={shards}",
              f"run.output_dir={tmp_path}", "run.name=fid", "model.ema_half_life_images=200",
              "log.fid_every=5", f"eval.features={features}", "eval.fid_samples=64",
              "eval.fid_batch=16", "checkpoint.every=5", "checkpoint.keep=2",
              "checkpoint.keep_best=eval/fid", "log.images_every=0", "train.max_steps=25")
    assert f"resumed from {root / 'step-00000020'} at step 20" in r.stdout + r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--fid"], "--fid needs --features"),
    (["--fid", "--features", "/nonexistent"], "no features.json"),
    (["--fid", "--features", "inception"], "inception_weights"),
    (["--fid", "--features", "inception", "--inception-weights", "/nonexistent.safetensors"],
     "does not exist"),
])
def test_bad_fid_input_is_one_line_exit_2(shards, one_step, args, needle):
    r = subprocess.run([INFOGAN, "eval", "--checkpoint", str(one_step), "--data", str(shards),
                        "--no-pictures", "--samples", "8", *args], capture_output=True,
                       text=True, cwd=ROOT, env=launch_env(), timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_train_features_bad_input(shards, tmp_path):
    r = subprocess.run([INFOGAN, "train-features", "--data", str(tmp_path / "none"), "--out",
                        str(tmp_path / "f")], capture_output=True, text=True, cwd=ROOT,
                       env=launch_env(), timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
