"""Issue 30: the disentanglement scores of the real trainer on procedural dSprites:
the in-training metric and `infogan eval --disentanglement` give the same numbers for
one checkpoint, and shards without factor classes are refused in one line (exit 2)."""

import json
import subprocess

import pytest
from PIL import Image

from tests.helpers import ROOT, VENV_BIN, launch_env, make_shards, metrics, run_ok, train

pytestmark = pytest.mark.integration

INFOGAN = str(VENV_BIN / "infogan")
FRACTION = "0.01"  # of disentanglement_lib's sample counts: 100 + 50 FactorVAE votes, ...
SCORES = ("factorvae", "mig", "dci", "sap")


def threads(n: int) -> dict[str, str]:
    """The launcher gives a CPU process 2 threads; the CLI gets as many, so that Q's
    float rounding (which may depend on the thread split) is the same."""
    return {**launch_env(), "OMP_NUM_THREADS": str(n)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """10 steps on 384 procedural sprites of 32x32, scored at step 10 in training."""
    root = tmp_path_factory.mktemp("dis")
    shards = root / "sprites"
    run_ok([INFOGAN, "prepare-data", "--out", str(shards), "--sprites", "--size", "32",
            "--factor-sizes", "3,2,4,4,4", "--shard-size", "96"])
    train("launch/cpu.yaml", "configs/smoke.yaml", f"data.shards={shards}",
          f"run.output_dir={root}", "train.max_steps=10", "latent.categorical=[3]",
          "latent.continuous=3", "log.eval_every=10", "log.eval_metrics=[disentanglement]",
          f"eval.disentanglement_fraction={FRACTION}", "log.images_every=0")
    return root


def test_in_training_scores_equal_the_cli_scores_of_the_checkpoint(run):
    logged = [m for m in metrics(run / "smoke") if "eval/mig" in m]
    assert [m["step"] for m in logged] == [10]
    checkpoint = run / "smoke" / "checkpoints" / "step-00000010"
    r = run_ok([INFOGAN, "eval", "--checkpoint", str(checkpoint), "--disentanglement",
                "--disentanglement-fraction", FRACTION, "--json", "--no-pictures",
                "--samples", "200"], env=threads(2))
    report = json.loads(r.stdout)
    d = report["disentanglement"]
    for name in SCORES:
        assert 0 <= d[name] <= 1
        assert abs(d[name] - logged[0][f"eval/{name}"]) <= 1e-6, name
    assert d["factors"] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert d["codes"] == ["c1", "c2", "c3", "c4"] and set(d["best_factor"]) == set(d["codes"])
    assert d["images"] == 384 and 0 < d["codes_computed"] <= 384
    assert set(d["details"]["factorvae"]) >= {"train_accuracy", "eval_accuracy"}
    # the categorical code's accuracy against the shape label, from the same decoded set
    assert report["images"] == 384 and 1 / 3 <= report["codes"]["c1"]["accuracy"] <= 1
    table = run_ok([INFOGAN, "eval", "--checkpoint", str(checkpoint), "--disentanglement",
                    "--disentanglement-fraction", FRACTION, "--no-pictures", "--samples",
                    "200"], env=threads(2)).stdout
    assert f"factorvae {d['factorvae']:.4f}" in table and "best" in table


def test_shards_without_factors_are_refused_in_one_line(run, tmp_path):
    digits = make_shards(tmp_path / "digits", limit=64, shard_size=64)
    checkpoint = run / "smoke" / "checkpoints" / "step-00000010"
    r = subprocess.run([INFOGAN, "eval", "--checkpoint", str(checkpoint), "--disentanglement",
                        "--data", str(digits)], capture_output=True, text=True, cwd=ROOT,
                       env=launch_env(), timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"shards {digits} have no factor classes" in r.stderr
    r = subprocess.run([INFOGAN, "eval", "--checkpoint", str(checkpoint), "--disentanglement",
                        "--disentanglement-batch", "0"], capture_output=True, text=True,
                       cwd=ROOT, env=launch_env(), timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == \
        "infogan eval: error: --disentanglement-batch must be >= 1, got 0", r.stderr
    r = subprocess.run(
        [str(VENV_BIN / "python"), str(ROOT / "train.py"), "--config",
         str(ROOT / "configs/smoke.yaml"), f"data.shards={digits}",
         f"run.output_dir={tmp_path}", "log.eval_every=5",
         "log.eval_metrics=[codes,disentanglement]"],
        capture_output=True, text=True, cwd=ROOT, env=launch_env(), timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "needs shards with factor classes" in r.stderr and str(digits) in r.stderr
    assert not (tmp_path / "smoke").exists()


def test_the_traversal_rows_name_the_factor_each_code_captures_best(run):
    """The last step's pictures: step-N-codes.png has one row per continuous code,
    labelled with the factor of largest MI / H(factor) in the scores of that step
    (their matrix in step-N-codes.json)."""
    samples = run / "smoke" / "samples"
    report = json.loads((samples / "step-00000010-codes.json").read_text())
    assert report["codes"] == ["c1", "c2", "c3", "c4"]
    assert report["factors"] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    picture = Image.open(samples / "step-00000010-codes.png")
    rows = picture.text["rows"].splitlines()
    assert [r.split()[0] for r in rows] == ["c2", "c3", "c4"]  # the continuous codes
    for row in rows:
        code, factor, share = row.split()
        mi = report["mi_normalised"][report["codes"].index(code)]
        assert factor == report["best_factor"][code] == report["factors"][mi.index(max(mi))]
        assert share == f"{max(mi):.2f}"
    assert picture.height == 3 * 33 + 1  # 32x32 sprites and their padding, three rows


def test_the_protocol_shares_the_prefix_scores_both_arms_and_resumes(run, tmp_path):
    """benchmarks/dsprites_protocol.py at toy size (6 iterations, the regulariser from
    iteration 5; the smoke MLP): the two arms continue one prefix, only infogan_cr trains
    the CR discriminator, both are scored, and a second call redoes nothing."""
    out = tmp_path / "protocol"
    cmd = [str(VENV_BIN / "python"), str(ROOT / "benchmarks/dsprites_protocol.py"),
           "--shards", str(run / "sprites"), "--out", str(out), "--config",
           str(ROOT / "configs/smoke.yaml"), "--seeds", "0", "--steps", "6", "--jobs", "2",
           "--fraction", FRACTION, "loss.extra={contrastive: 1.0}", "latent.categorical=[]",
           "latent.continuous=3", "log.every=1"]
    first = run_ok(cmd, env=launch_env(), timeout=600)
    res = json.loads((out / "results.json").read_text())
    assert (res["steps"], res["cr_start"]) == (6, 5)
    assert [(r["arm"], r["seed"]) for r in res["rows"]] == [("infogan", 0), ("infogan_cr", 0)]
    assert all(0 <= r[s] <= 1 for r in res["rows"] for s in SCORES)
    home = out / "seed0"
    for arm in ("infogan", "infogan_cr"):  # the prefix's checkpoint is where both went on
        assert (home / arm / "checkpoints/step-00000005/COMPLETE").exists()
        assert "at step 5" in (out / f"seed0_{arm}.log").read_text()
    plain, cr = metrics(home / "infogan"), metrics(home / "infogan_cr")
    assert [m["step"] for m in plain] == [m["step"] for m in cr] == [1, 2, 3, 4, 5, 6]
    assert plain[:5] == cr[:5]  # the shared prefix, logged once and copied
    assert "loss/cr" in cr[5] and "loss/cr" not in plain[5]
    assert "| **infogan_cr** | median |" in first.stdout
    again = run_ok(cmd, env=launch_env(), timeout=300)
    assert "done " not in again.stdout and first.stdout.endswith(again.stdout)
    assert json.loads((out / "results.json").read_text()) == res
