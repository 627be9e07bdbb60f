"""Issue 12, runs that protect themselves: bad data and a busy run directory stop the
training with one line (exit 2) and leave the run directory as it was. Real `train.py`
processes (one process: `python train.py`, as the launcher would run it) and real
`accelerate launch` runs for what the launchers add.

What the launchers print and return when the trainer exits 2 (accelerate 1.15, torch
2.14, observed and asserted below): one process (launch/cpu.yaml, the simple launcher):
the trainer's `error: ...` line, then the launcher's own CalledProcessError traceback
("returned non-zero exit status 2"), exit 1. Two processes (torchrun): each failing
rank's `error: ...` line, a rank that lost its peer in a collective says so in one line
(exit 1), then torchrun's failure summary whose root cause shows our one line (we write
it to torchrun's error file), and torchrun's ChildFailedError traceback, exit 1.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, launch_env, make_shards, metrics, train_cmd
from tests.integration.test_failures import _launch
from tests.unit.test_data import big_png, replace_member

pytestmark = pytest.mark.integration

SMOKE = "configs/smoke.yaml"
BAD_MEMBER = "00000070.png"  # in shard-000001.tar (shards of 64)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.getbasetemp() / "digits-256x64", limit=256, shard_size=64)


def _png(mode: str, size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])  # cut inside a member


BAD = {
    # case: (damage to shard-000001.tar, what the one line says)
    "truncated_shard": (_truncate, "shard-000001.tar: truncated "),
    "not_an_image": (lambda p: replace_member(p, BAD_MEMBER, b"not an image"),
                     f"member {BAD_MEMBER}: cannot decode image: not a readable PNG or JPEG"),
    "other_size": (lambda p: replace_member(p, BAD_MEMBER, _png("L", (32, 32))),
                   f"member {BAD_MEMBER}: image shape [1, 32, 32] differs from the index's "
                   "image_shape [1, 28, 28]"),
    "rgb_among_gray": (lambda p: replace_member(p, BAD_MEMBER, _png("RGB", (28, 28))),
                       f"member {BAD_MEMBER}: image shape [3, 28, 28] differs from the "
                       "index's image_shape [1, 28, 28] (a 28x28 RGB image where 28x28 L"),
    "bomb": (lambda p: replace_member(p, BAD_MEMBER, big_png(12000, 12000)),
             f"member {BAD_MEMBER}: refused before decoding, a decompression bomb?"),
    # its index still counts 64 samples: refused on the count, before any member is read
    # (the empty tar's own line: tests/unit/test_data.py)
    "empty_tar": (lambda p: p.write_bytes(b"\0" * 10240),
                  "shard-000001.tar: the index says 64 samples, but its 10240 bytes hold at "
                  "most 20"),
}


def bad_copy(shards: Path, out: Path, case: str) -> Path:
    """A copy whose shard-000001.tar is bad in the way `case` says, with index.json
    re-written to match it (size, sha256): a consistent shard set that a buggy or hostile
    writer made, so the integrity check passes and the decoding checks are what is tested
    (a shard changed after its index is refused earlier: tests/unit/test_remote.py)."""
    shutil.copytree(shards, out)
    BAD[case][0](out / "shard-000001.tar")
    index = json.loads((out / "index.json").read_text())
    data = (out / "shard-000001.tar").read_bytes()
    for entry in index["shards"]:
        if entry["name"] == "shard-000001.tar":
            entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (out / "index.json").write_text(json.dumps(index))
    return out


def train_py(*overrides: str) -> subprocess.CompletedProcess:
    """`python train.py` as one process, as the simple launcher runs it."""
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "--config",
                           str(ROOT / SMOKE), *overrides], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=launch_env())


def assert_one_line_error(r: subprocess.CompletedProcess, expected: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], out[-4000:]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_in_training_is_one_line_and_leaves_no_run_dir(shards, tmp_path, case):
    bad = bad_copy(shards, tmp_path / "bad", case)
    r = train_py(f"data.shards={bad}", f"run.output_dir={tmp_path}", "run.name=r")
    assert_one_line_error(r, BAD[case][1])
    assert "rebuild the shards with `infogan prepare-data`" in r.stderr
    assert not (tmp_path / "r").exists()  # nothing was written, not even the directory


def test_bad_data_leaves_an_existing_run_dir_as_it_was(shards, tmp_path):
    bad = bad_copy(shards, tmp_path / "bad", "rgb_among_gray")
    run = tmp_path / "r"
    (run / "checkpoints" / ".tmp-step-00000005").mkdir(parents=True)
    (run / "config.yaml").write_text("old: config\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    before = {p: p.read_bytes() if p.is_file() else None for p in run.rglob("*")}
    r = train_py(f"data.shards={bad}", f"run.output_dir={tmp_path}", "run.name=r")
    assert_one_line_error(r, BAD["rgb_among_gray"][1])
    assert {p: p.read_bytes() if p.is_file() else None for p in run.rglob("*")} == before


def test_stream_mode_error_on_one_rank_is_one_line_and_nothing_hangs(shards, tmp_path):
    """Stream mode, 2 ranks x 2 workers: only the rank that reads the bad shard meets it,
    at some step. That rank says it in one line and exits 2; the other rank, waiting in a
    collective, says in one line that its peer ended; no rank prints a traceback, every
    process ends (the helper bounds it), torchrun's summary shows our line."""
    bad = bad_copy(shards, tmp_path / "bad", "rgb_among_gray")
    rc, out, _ = _launch(train_cmd(
        "launch/cpu_ddp.yaml", SMOKE, f"data.shards={bad}", f"run.output_dir={tmp_path}",
        "run.name=s", "data.mode=stream", "data.num_workers=2", "train.max_steps=200",
        "log.every=1", "log.images_every=0", "dist.timeout_s=20"), launch_env())
    assert rc == 1, out[-4000:]
    assert "[rank0]: Traceback" not in out and "[rank1]: Traceback" not in out, out[-6000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert [e for e in errors if BAD["rgb_among_gray"][1] in e], out[-4000:]
    assert all(BAD["rgb_among_gray"][1] in e or "another rank ended while this one waited"
               in e for e in errors), errors
    assert "exitcode  : 2" in out
    assert "traceback : ShardError: shard " in out  # torchrun's root cause: our line
    # torchrun's own, at the end
    assert out.count("Traceback (most recent call last)") == 1, out[-8000:]
    assert "ChildFailedError" in out


def test_one_process_launcher_reports_exit_2_as_1(shards, tmp_path):
    bad = bad_copy(shards, tmp_path / "bad", "truncated_shard")
    rc, out, _ = _launch(train_cmd("launch/cpu.yaml", SMOKE, f"data.shards={bad}",
                                   f"run.output_dir={tmp_path}", "run.name=o"), launch_env())
    assert rc == 1, out[-4000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and BAD["truncated_shard"][1] in errors[0], out[-4000:]
    # the simple launcher's own traceback, after our line: accelerate's behaviour
    assert "returned non-zero exit status 2" in out and "CalledProcessError" in out


def test_data_shards_naming_a_file_says_so(shards, tmp_path):
    target = tmp_path / "train-images.gz"
    target.write_bytes(b"\x1f\x8b")
    r = train_py(f"data.shards={target}", f"run.output_dir={tmp_path}")
    assert_one_line_error(r, f"data.shards={target} is a file, not a shard directory; pass "
                             "the directory that `infogan prepare-data --out DIR` wrote")
    assert f"make one with `infogan prepare-data --out DIR ...` from {target}" in r.stderr
    beside = shutil.copytree(shards, tmp_path / "shards") / "README.txt"
    beside.write_text("notes")
    r = train_py(f"data.shards={beside}", f"run.output_dir={tmp_path}")
    assert_one_line_error(r, f"e.g. data.shards={beside.parent}")


# --- the run lock through train.py -------------------------------------------------------

HOLD = """\
import sys
from infogan_dist.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_live_run_dir_is_refused_before_anything_is_touched(shards, tmp_path):
    run = tmp_path / "r"
    (run / "checkpoints" / ".tmp-step-00000005").mkdir(parents=True)
    (run / "config.yaml").write_text("old: config\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    before = {p: p.read_bytes() if p.is_file() else None for p in run.rglob("*")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        token = json.loads((run / "train.lock").read_text())["token"]
        r = train_py(f"data.shards={shards}", f"run.output_dir={tmp_path}", "run.name=r",
                     "train.max_steps=2")
        assert_one_line_error(r, f"error: run directory {run} is in use by another training "
                                 f"(host ")
        assert f"pid {holder.pid}, started " in r.stderr
        after = {p: p.read_bytes() if p.is_file() else None for p in run.rglob("*")}
        assert json.loads(after.pop(run / "train.lock"))["token"] == token  # still the holder's
        assert after == before  # no config.yaml write, no tmp clean-up, no metrics rewrite
        # the holder is killed: its lock is stale and the next training takes it over
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        r = train_py(f"data.shards={shards}", f"run.output_dir={tmp_path}", "run.name=r",
                     "train.max_steps=2", "log.every=1", "log.images_every=0")
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"warning: took over the stale lock {run / 'train.lock'} (host " in r.stderr
        assert f"process {holder.pid} is not running" in r.stderr
        assert [m["step"] for m in metrics(run)] == [1, 2]
        assert not (run / "train.lock").exists()  # released at the end
        assert json.loads((run / "checkpoints/step-00000002/train_state.json").read_text())
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=60)


def test_deleting_a_live_runs_lock_lets_no_second_training_in(shards, tmp_path):
    """Issue 29: the lock file of a live training is deleted. A second training on the
    run directory is still refused (the holder's flock on the directory), the first
    writes its lock again and trains on: every step once in metrics.jsonl."""
    import time

    run = tmp_path / "r"
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE),
         f"data.shards={shards}", f"run.output_dir={tmp_path}", "run.name=r",
         "train.max_steps=100000", "log.every=1", "log.images_every=0",
         "checkpoint.every=20"], cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 240
        while not ((run / "metrics.jsonl").exists() and len(metrics(run)) >= 2):
            assert first.poll() is None and time.monotonic() < end, first.communicate()
            time.sleep(0.1)  # polling the run's progress, not a synchronisation
        (run / "train.lock").unlink()
        r = train_py(f"data.shards={shards}", f"run.output_dir={tmp_path}", "run.name=r",
                     "train.max_steps=5")  # were it let in, it would end at once
        assert_one_line_error(r, f"error: run directory {run} is in use by another training "
                                 f"(host ")
        assert f"pid {first.pid}, started " in r.stderr
        (run / "STOP").touch()
        out, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err[-4000:]
    assert f"warning: the run lock {run / 'train.lock'} was removed while this training" in err
    steps = [m["step"] for m in metrics(run)]
    assert steps == list(range(1, len(steps) + 1)), steps
    assert not (run / "train.lock").exists()


def test_run_dir_on_a_read_only_file_system_is_one_line(shards, tmp_path):
    """Issue 29: refused by preflight (exit 2, one line) before any process group; was a
    traceback at the lock's mkdir. Also a run.name too long for a file name."""
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        r = train_py(f"data.shards={shards}", f"run.output_dir={ro / 'runs'}", "run.name=r")
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert_one_line_error(r, f"error: run directory {ro / 'runs' / 'r'} (run.output_dir=")
    assert f"cannot be written: {ro} is on a read-only file system; set run.output_dir" in r.stderr
    r = train_py(f"data.shards={shards}", f"run.output_dir={tmp_path}", "run.name=" + "n" * 256)
    assert_one_line_error(r, "error: config key run.name: bad value 'nnnn")


@pytest.mark.parametrize("weights, needle", [
    ("text", "not a safetensors weights file"),
    ("other", "not the weights of the FID Inception-v3"),
])
def test_bad_inception_weights_are_found_before_training(shards, tmp_path, weights, needle):
    """Issue 29: eval.inception_weights that is not the Inception's weights file was
    found at the first FID step, after the training it then lost; now preflight reads
    its header: one line, exit 2, no run directory."""
    path = tmp_path / "inception.safetensors"
    if weights == "text":
        path.write_text("not weights\n")
    else:
        import torch
        from safetensors.torch import save_file

        save_file({"fc.weight": torch.zeros(2, 2)}, str(path))
    r = train_py(f"data.shards={shards}", f"run.output_dir={tmp_path}", "run.name=r",
                 "log.fid_every=10", "eval.features=inception",
                 f"eval.inception_weights={path}", "eval.fid_samples=16")
    assert_one_line_error(r, f"error: eval.inception_weights={path}: {path}: {needle}")
    assert not (tmp_path / "r").exists()
