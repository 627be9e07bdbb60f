"""Issue 6: `infogan eval` and `infogan sample` on checkpoints of the real trainer, and
the info step's effect on c1's MI bound in a short run on real MNIST digits."""

import json
import math
import shutil
import subprocess

import pytest
from PIL import Image

from tests.helpers import ROOT, VENV_BIN, launch_env, make_shards, metrics, run_ok, train

pytestmark = pytest.mark.integration

INFOGAN = str(VENV_BIN / "infogan")


def run_fail(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=launch_env())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Step 10 of a smoke run on 256 digits (four shards of 64)."""
    root = tmp_path_factory.mktemp("eval")
    shards = make_shards(root / "shards", limit=256, shard_size=64)
    train("launch/cpu.yaml", "configs/smoke.yaml", f"data.shards={shards}",
          f"run.output_dir={root}", "train.max_steps=10")
    return root / "smoke" / "checkpoints" / "step-00000010"


def test_eval_json_report_and_pictures(checkpoint):
    r = run_ok([INFOGAN, "eval", "--checkpoint", str(checkpoint), "--json", "--batch", "100",
                "--samples", "1000"])
    report = json.loads(r.stdout)
    assert report["checkpoint"] == str(checkpoint) and report["step"] == 10
    assert report["images"] == 256  # the config's data.shards, all of it
    assert set(report["codes"]) == {"c1", "c2", "c3"}
    c1 = report["codes"]["c1"]
    assert set(c1) == {"accuracy", "mapping", "confusion", "mi"}
    assert 0.1 <= c1["accuracy"] <= 1  # a one-to-one map never does worse than one class
    assert sorted(c1["mapping"]) == list(range(10))
    assert len(c1["confusion"]) == 10 and all(len(row) == 10 for row in c1["confusion"])
    assert sum(map(sum, c1["confusion"])) == 256
    matched = sum(c1["confusion"][k][lab] for k, lab in enumerate(c1["mapping"]))
    assert c1["accuracy"] == pytest.approx(matched / 256)
    assert -1 < c1["mi"] <= math.log(10)
    for name in ("c2", "c3"):
        assert set(report["codes"][name]) == {"mi", "mse"}
        assert report["codes"][name]["mse"] >= 0
    expected = [checkpoint / "traversal.png", checkpoint / "traversal-c2.png",
                checkpoint / "traversal-c3.png", checkpoint / "traversal-codes.png"]
    assert report["pictures"] == [str(p) for p in expected]
    for p in expected[:3]:  # 10 rows x 10 columns of 28x28 with 1-pixel padding
        assert Image.open(p).size == (10 * 29 + 1, 10 * 29 + 1)
    codes = Image.open(expected[3])  # one row per continuous code, labelled at the left
    assert codes.height == 2 * 29 + 1 and codes.width > 10 * 29 + 1
    assert codes.text["rows"].splitlines() == ["c2", "c3"]  # no factors in MNIST


def test_eval_table_with_limit_and_other_data(checkpoint):
    shards = checkpoint.parents[2] / "shards"
    r = run_ok([INFOGAN, "eval", "--checkpoint", str(checkpoint), "--data",
                f"{shards}/shard-{{000001..000002}}.tar", "--limit", "100", "--samples", "200",
                "--no-pictures"])
    assert "100 labelled images" in r.stdout
    assert "c1    cat(10)" in r.stdout and "confusion" in r.stdout


def test_eval_refuses_shards_without_labels(checkpoint, tmp_path):
    shards = checkpoint.parents[2] / "shards"
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for p in shards.glob("shard-*.tar"):
        (unlabelled / p.name).symlink_to(p)
    index = json.loads((shards / "index.json").read_text())
    index["has_labels"] = False
    (unlabelled / "index.json").write_text(json.dumps(index))
    r = run_fail([INFOGAN, "eval", "--checkpoint", str(checkpoint), "--data", str(unlabelled)])
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "have no labels" in r.stderr


def test_sample_fix_and_sweep_and_bad_fix(checkpoint, tmp_path):
    out = tmp_path / "grid.png"
    r = run_ok([INFOGAN, "sample", "--checkpoint", str(checkpoint), "--out", str(out),
                "--fix", "c1=3", "--sweep", "c2=-2:2:5", "--n", "10"])
    assert "2 x 5" in r.stdout
    assert Image.open(out).size == (5 * 29 + 1, 2 * 29 + 1)  # 2 rows x 5 steps

    bad = run_fail([INFOGAN, "sample", "--checkpoint", str(checkpoint), "--out",
                    str(tmp_path / "bad.png"), "--fix", "c1=10"])
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "c1 has 10 classes (0..9)" in lines[0]
    assert not (tmp_path / "bad.png").exists()


def capped(cmd: list[str], gb: int = 6) -> subprocess.CompletedProcess:
    """run_fail with the address space capped: a command that would grow without bound
    fails fast (MemoryError) instead of taking the machine's memory."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (gb << 30, gb << 30))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=launch_env(), preexec_fn=cap)


@pytest.mark.parametrize("args, needle", [
    (["sample", "--n", "100000000"], "--n must be 1..10000 images"),
    (["eval", "--samples", "1000000000", "--no-pictures"], "--samples must be 1..1000000,"),
    (["eval", "--fid", "--features", "inception", "--fid-samples", "100000000"],
     "--fid-samples must be 2..200000"),
])
def test_huge_counts_are_refused_in_one_line(checkpoint, tmp_path, args, needle):
    """Issue 29: counts that would grow memory without bound end with one line (exit 2)
    before anything is made; the cap turns a regression into a fast MemoryError."""
    out = ["--out", str(tmp_path / "g.png")] if args[0] == "sample" else []
    r = capped([INFOGAN, args[0], "--checkpoint", str(checkpoint), *out, *args[1:]])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr[-3000:]


@pytest.fixture
def read_only(tmp_path):
    """A read-only tmpfs (tests run as root: chmod would not stop a write)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    yield ro
    subprocess.run(["umount", str(ro)], check=True)


def test_unwritable_outputs_are_one_line_or_a_warning(checkpoint, read_only, tmp_path):
    """Issue 29: `sample --out` on a read-only file system was an OSError traceback; an
    eval of a read-only checkpoint lost its computed report at the pictures."""
    r = run_fail([INFOGAN, "sample", "--checkpoint", str(checkpoint), "--out",
                  str(read_only / "g.png")])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert f"{read_only / 'g.png'}: Read-only file system" in lines[0]
    shutil.copytree(checkpoint, tmp_path / "ck")
    ck = tmp_path / "ck"
    subprocess.run(["mount", "--bind", str(ck), str(ck)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ck)], check=True)
        r = run_fail([INFOGAN, "eval", "--checkpoint", str(ck), "--json", "--samples", "100"])
    finally:
        subprocess.run(["umount", str(ck)], check=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["pictures"] == []
    assert f"warning: no pictures: cannot write into {ck} (Read-only file system)" in r.stderr


# Measured (configs/smoke.yaml, 512 digits, 100 steps, seeds 0 and 1): with the info
# step, logged mi/c1 goes from 0.013 / 0.001 at step 10 to 0.184 / 0.250 at step 100
# (mean of steps 90-100: 0.17 / 0.21); with loss.lambda_cat=0 (the info step cannot move
# c1) it stays between -0.13 and 0.02 and ends at -0.036 / -0.045. `infogan eval`'s
# bound (eval mode, fresh latents) at step 100, seed 0: 0.20 with, -0.01 without.
MI_RISE = 0.08


def test_info_step_raises_c1_mi_bound(tmp_path):
    shards = make_shards(tmp_path / "digits", limit=512, shard_size=128)
    train("launch/cpu.yaml", "configs/smoke.yaml", f"data.shards={shards}",
          f"run.output_dir={tmp_path}", "run.name=mi", "train.max_steps=100", "log.every=10",
          "checkpoint.every=100", "log.images_every=0")
    rows = metrics(tmp_path / "mi")
    assert [r["step"] for r in rows] == list(range(10, 101, 10))
    start = rows[0]["mi/c1"]
    end = (rows[-2]["mi/c1"] + rows[-1]["mi/c1"]) / 2
    assert end - start > MI_RISE, [round(r["mi/c1"], 3) for r in rows]
    # the evaluator sees it too: BatchNorm running statistics, fresh keyed latents
    r = run_ok([INFOGAN, "eval", "--checkpoint", str(tmp_path / "mi/checkpoints/step-00000100"),
                "--json", "--limit", "128", "--samples", "2000", "--no-pictures"])
    assert json.loads(r.stdout)["codes"]["c1"]["mi"] > MI_RISE
