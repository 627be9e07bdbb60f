"""InfoGAN-CR (loss.extra.contrastive) through real `accelerate launch` processes over
gloo, with everything the recipe turns on at once: the CR discriminator (a model part
with its own Adam and phase), model.spectral_norm, train.g_steps=2, and a schedule that
starts the term mid-run (loss.extra_start 5, a 4-step ramp):

- 2 ranks stay bitwise identical (every parameter, buffer, the spectral norm's u and v,
  and all three Adams' state, the CR discriminator's included; the cross-rank check
  runs every step), with BatchNorm in the CR discriminator's trunk (infogan_mnist's);
- a run stopped at step 10 (after the term started) and resumed continues bit for bit;
- 1 rank and 2 ranks train the same model (world-size invariant pairs), on the smoke
  MLP as test_ddp_sync.py's invariance test (infogan_mnist's ReLU G leaves more weights
  with gradients that are 0 up to rounding, which Adam's first steps turn into moves of
  up to ~1e-4 that differ with the summation order), by tests.helpers' rule;
- resuming with another set of extension parts is refused before any process group;
- before loss.extra_start a run with the regulariser trains what the run without it
  trains, bit for bit (in one process): what lets benchmarks/dsprites_protocol.py share
  that prefix between its InfoGAN and InfoGAN-CR arms.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import (
    ROOT,
    assert_trained_alike,
    free_port,
    launch_env,
    make_shards,
    metrics,
    train,
)

pytestmark = pytest.mark.integration

SMOKE = "configs/smoke.yaml"
LAUNCH = {1: "launch/cpu.yaml", 2: "launch/cpu_ddp.yaml"}
N = 10  # checkpoint.every of configs/smoke.yaml; the runs go to 2N
RECIPE = ("model.spectral_norm=true", "train.update=paper", "train.g_steps=2",
          "loss.extra={contrastive: 1.0}", "loss.extra_start={contrastive: 5}",
          "loss.extra_ramp={contrastive: 4}", "log.images_every=0")
CONV = ("model.arch=infogan_mnist", "model.width=0.125")  # BatchNorm in D's trunk


def opts(shards: Path, out: Path, name: str, *more: str) -> list[str]:
    return [f"data.shards={shards}", f"run.output_dir={out}", f"run.name={name}", *RECIPE,
            *more]


def checkpoint_state(ck: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every model file and every optimizer's state in a checkpoint."""
    named: dict[str, torch.Tensor] = {}
    for f in sorted(ck.glob("*.safetensors")):
        named |= {f"{f.name}:{k}": t for k, t in load_file(str(f)).items()}
    for f in sorted(ck.glob("optimizer*.bin")):
        sd = torch.load(f, weights_only=True, map_location="cpu")
        for i, entry in sd["state"].items():
            named |= {f"{f.name}:state[{i}].{k}": v for k, v in entry.items()}
    return named


def bits(t: torch.Tensor) -> torch.Tensor:
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(ints[t.element_size()]) if t.is_floating_point() else t


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """infogan_mnist: `full2` on 2 ranks to 2N (every rank dumps its state), `half2` on 2
    ranks to N, then resumed to 2N. The smoke MLP: `mlp1` on 1 rank and `mlp2` on 2 ranks
    to 2N."""
    root = tmp_path_factory.mktemp("cr")
    shards = make_shards(root / "shards", limit=256, shard_size=64)
    env = launch_env() | {"INFOGAN_DUMP_STATE": str(root / "dump")}
    train(LAUNCH[2], SMOKE, *opts(shards, root, "full2", *CONV, f"train.max_steps={2 * N}",
                                  "dist.check_every=1"), env=env)
    train(LAUNCH[2], SMOKE, *opts(shards, root, "half2", *CONV, f"train.max_steps={N}"))
    resumed = train(LAUNCH[2], SMOKE, *opts(shards, root, "half2", *CONV,
                                            f"train.max_steps={2 * N}"))
    for ranks in (1, 2):
        train(LAUNCH[ranks], SMOKE, *opts(shards, root, f"mlp{ranks}", f"train.max_steps={2 * N}"))
    return SimpleNamespace(root=root, shards=shards, resumed=resumed.stdout + resumed.stderr)


def final(runs, name: str) -> Path:
    return runs.root / name / "checkpoints" / f"step-{2 * N:08d}"


def test_two_ranks_stay_bitwise_identical_with_the_cr_discriminator(runs):
    s0 = load_file(str(runs.root / "dump" / "rank0.safetensors"))
    s1 = load_file(str(runs.root / "dump" / "rank1.safetensors"))
    names = list(s0)
    # the fingerprint and the dump cover the CR discriminator, its Adam, its BatchNorm
    # (converted like D's) and the spectral norm's power-iteration vectors
    for prefix in ("cr.trunk.", "optimizer_cr[cr.", "optimizer_G[G.", "optimizer_D[D."):
        assert any(n.startswith(prefix) for n in names), prefix
    assert any(n.startswith("cr.") and "running_mean" in n for n in names)
    assert any(n.startswith("D.") and n.endswith("._u (buffer)") for n in names)
    assert any(n.startswith("cr.") and n.endswith("._u (buffer)") for n in names)
    rows = metrics(runs.root / "full2")
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert "loss/cr" not in rows[0] and "loss/contrastive" not in rows[0]  # before the start
    assert all("loss/cr" in r and "cr/acc" in r and "loss/contrastive" in r for r in rows[1:])
    differ = [n for n in s0 if not (s0[n].dtype == s1[n].dtype and torch.equal(s0[n], s1[n]))]
    assert not differ, f"rank 1 differs from rank 0 in {len(differ)} tensors: {differ[:10]}"


def test_one_rank_and_two_ranks_train_the_same_model(runs):
    """The pairs are rows of one global draw: generator, D and CR discriminator trained
    alike on 1 and 2 ranks (tests.helpers.assert_trained_alike). Measured 2026-12-05 on an
    Intel Xeon: 1, 0 and 3 elements of 113,120 / 53,770 / 104,290 beyond 1e-5 (at most
    7.1e-5, in the CR discriminator's first layer); with each rank taking the first rows of
    the draw instead of its own, 99.6%, 92.8% and 98.9%."""
    for f in ("generator.safetensors", "model_1.safetensors", "model_2.safetensors"):
        one, two = (load_file(str(final(runs, n) / f)) for n in ("mlp1", "mlp2"))
        assert_trained_alike(one, two, f"{f}: ")
    # the bound has teeth: the 10 steps with the term on moved the CR discriminator
    start = load_file(str(runs.root / "mlp1/checkpoints/step-00000010/model_2.safetensors"))
    end = load_file(str(final(runs, "mlp1") / "model_2.safetensors"))
    assert max((end[k] - start[k]).abs().max().item() for k in end
               if end[k].is_floating_point()) > 1e-3


def test_exact_continuation_with_the_cr_part_and_spectral_norm_is_bitwise(runs):
    assert f"at step {N}" in runs.resumed
    full, resumed = checkpoint_state(final(runs, "full2")), checkpoint_state(final(runs, "half2"))
    assert any(k.startswith("model_2.safetensors:") for k in full)  # the CR discriminator
    assert any(k.startswith("optimizer_2.bin:") for k in full)  # its Adam (paper: D, G, cr)
    assert any(k.endswith(".0._v") for k in full)  # the spectral norm's vectors (v seeds u)
    assert sorted(full) == sorted(resumed)
    differ = [k for k in full if not (full[k].dtype == resumed[k].dtype
                                      and torch.equal(bits(full[k]), bits(resumed[k])))]
    assert not differ, f"{len(differ)} of {len(full)} tensors differ, e.g. {differ[:5]}"


def test_resume_with_other_extension_parts_is_refused_before_any_process_group(runs, tmp_path):
    shutil.copytree(runs.root / "mlp1", tmp_path / "mlp1")
    env = launch_env() | {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                          "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / SMOKE),
           *opts(runs.shards, tmp_path, "mlp1"), "loss.extra={}", "loss.extra_start={}",
           "loss.extra_ramp={}", f"train.max_steps={3 * N}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, lines
    assert "extension parts [cr]" in lines[0] and "loss.extra builds []" in lines[0]


def test_before_its_start_the_regulariser_changes_nothing_bit_for_bit(runs, tmp_path):
    """The CR discriminator is built after G and D and neither it nor the pair draws
    touch what G and D see before loss.extra_start: G, D and their Adams equal those of
    the plain run. After the start they differ (the assertion has teeth)."""
    from infogan_dist.choices import load_config
    from infogan_dist.data import read_index
    from infogan_dist.trainer import Trainer

    def fit(name, start, steps):
        cfg = load_config(ROOT / SMOKE, [
            *opts(runs.shards, tmp_path, name, *CONV, f"train.max_steps={steps}",
                  "checkpoint.every=100", "log.wandb=off", "log.progress=false"),
            *(() if start else ("loss.extra={}", "loss.extra_start={}", "loss.extra_ramp={}")),
            *((f"loss.extra_start={{contrastive: {start}}}",) if start else ())])
        assert Trainer(cfg, read_index(cfg.data.shards)).fit() == "complete"
        ck = tmp_path / name / "checkpoints" / f"step-{steps:08d}"
        state = checkpoint_state(ck)
        # G (model; generator: its copy for sampling), D (model_1), their Adams
        # (optimizer, optimizer_1); the CR part (model_2, optimizer_2) exists only with it
        kept = ("model.safetensors", "generator.safetensors", "model_1.safetensors",
                "optimizer.bin", "optimizer_1.bin")
        return {k: v for k, v in state.items() if k.split(":")[0] in kept}

    plain, before = fit("plain", 0, 4), fit("cr_later", 100, 4)
    assert plain and sorted(plain) == sorted(before)
    assert any(k.startswith("optimizer_1.bin:") for k in plain)  # G's Adam is compared
    differ = [k for k in plain if not torch.equal(bits(plain[k]), bits(before[k]))]
    assert not differ, f"{len(differ)} of {len(plain)} tensors differ, e.g. {differ[:5]}"
    after = fit("cr_on", 2, 4)
    assert any(not torch.equal(bits(plain[k]), bits(after[k])) for k in plain)
