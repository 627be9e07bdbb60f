import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from infogan_dist import checkpoint as ckpt
from infogan_dist.checkpoint import load_for_inference as load_checkpoint
from infogan_dist.cli import main
from infogan_dist.config import Config, LatentConfig, ModelConfig, save_config
from infogan_dist.evaluate import format_report
from infogan_dist.latent import LatentSpace
from infogan_dist.models import build_models
from infogan_dist.pictures import category_grid, traversal_grid
from infogan_dist.sample import build_latents, parse_fix, parse_sweep
from infogan_dist.scores import evaluate_codes, unsupervised_accuracy

SHAPE = (1, 28, 28)


# --- the accuracy metric --------------------------------------------------------------
def test_accuracy_is_one_on_permuted_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    perm = rng.permutation(10)
    acc, mapping, conf = unsupervised_accuracy(perm[labels], labels)
    assert acc == 1.0
    assert [mapping[perm[lab]] for lab in range(10)] == list(range(10))
    assert conf.shape == (10, 10) and conf.sum() == 500
    assert (conf > 0).sum() == 10  # a permutation matrix of counts


def test_accuracy_of_constant_predictions_is_the_largest_class_share():
    labels = np.repeat(np.arange(10), 30)  # balanced
    acc, mapping, conf = unsupervised_accuracy(np.full(300, 4), labels, num_categories=10)
    assert acc == pytest.approx(0.1)
    assert conf.shape == (10, 10)
    assert conf[4].tolist() == [30] * 10 and conf.sum() == 300
    assert sorted(m for m in mapping if m is not None) == list(range(10))  # one-to-one


def test_confusion_contents_and_one_to_one_mapping():
    pred = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([1, 1, 0, 0, 0, 0])
    acc, mapping, conf = unsupervised_accuracy(pred, labels)
    assert conf.tolist() == [[1, 2], [2, 0], [1, 0]]  # rows: categories, cols: labels
    # 0 -> 1 and 1 -> 0 match 4 of 6; category 2 is left over (K = 3 > L = 2)
    assert mapping == [1, 0, None]
    assert acc == pytest.approx(4 / 6)


def test_fewer_categories_than_labels():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    pred = np.array([0, 1, 1, 1, 0, 1, 1, 1])
    acc, mapping, conf = unsupervised_accuracy(pred, labels, num_labels=5)
    assert conf.shape == (2, 5)
    assert mapping[0] == 0 and mapping[1] in (1, 2, 3)
    assert acc == pytest.approx(4 / 8)


def test_accuracy_refuses_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        unsupervised_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="-1"):
        unsupervised_accuracy([0, 1], [0, -1])


# --- scoring modules ------------------------------------------------------------------
def tiny(arch="mlp", categorical=(10,), continuous=2):
    space = LatentSpace(LatentConfig(noise_dim=4, categorical=list(categorical),
                                     continuous=continuous))
    torch.manual_seed(0)
    G, D = build_models(ModelConfig(arch=arch, width=0.0625), space.input_dim, space.q_dim,
                        SHAPE)
    return space, G, D


def test_evaluate_codes_keys_values_and_modes_restored():
    space, G, D = tiny(categorical=(10, 3))
    images = torch.randint(0, 256, (50, *SHAPE), dtype=torch.uint8)
    labels = torch.arange(50) % 10
    G.train()
    D.train()
    rng = torch.get_rng_state()
    out = evaluate_codes(G, D, space, images, labels, "cpu", batch=16, samples=40)
    assert set(out) == {"eval/acc/c1", "eval/mi/c1", "eval/acc/c2", "eval/mi/c2",
                        "eval/mi/c3", "eval/mse/c3", "eval/mi/c4", "eval/mse/c4"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert 0.1 <= out["eval/acc/c1"] <= 1 and out["eval/mi/c1"] <= math.log(10) + 1e-6
    assert out["eval/mse/c3"] >= 0
    assert G.training and D.training
    assert all(m.training for m in [*G.modules(), *D.modules()])
    assert torch.equal(torch.get_rng_state(), rng)  # keyed latents: global RNG untouched
    # fixed keyed latents and eval mode: the same numbers twice, whatever the batch size
    again = evaluate_codes(G, D, space, images, labels, "cpu", batch=7, samples=40)
    assert again == pytest.approx(out, rel=1e-4, abs=1e-5)


def test_evaluate_codes_keeps_eval_mode_of_a_module_already_in_eval():
    space, G, D = tiny(arch="infogan_mnist", continuous=0)
    G.eval()
    D.train()
    images = torch.zeros(4, *SHAPE, dtype=torch.uint8)
    out = evaluate_codes(G, D, space, images, torch.tensor([0, 1, 2, 3]), "cpu", samples=8)
    assert set(out) == {"eval/acc/c1", "eval/mi/c1"}
    assert not G.training and D.training
    assert set(evaluate_codes(G, D, space, None, None, "cpu", samples=8)) == {"eval/mi/c1"}


def test_the_report_says_plainly_when_no_labelled_images_were_scored():
    """Without a categorical code eval reads no labels: the report says so (it printed
    "0 labelled images from None")."""
    space = LatentSpace(LatentConfig(noise_dim=4, categorical=[], continuous=2))
    report = {"checkpoint": "ck", "step": 5, "generator": "generator.safetensors",
              "device": "cpu", "images": 0, "data": None, "samples": 64, "pictures": [],
              "codes": {name: {"mi": -0.39, "mse": 0.33} for name in space.cont_names}}
    lines = format_report(report, space).splitlines()
    assert lines[1] == "no labelled images (no categorical code); 64 fresh latents for MI / MSE"
    report = {**report, "images": 12, "data": "data/x"}
    assert format_report(report, space).splitlines()[1] == (
        "12 labelled images from data/x; 64 fresh latents for MI / MSE")


def test_grid_shapes():
    space, G, _ = tiny()
    grid = category_grid(G, space, seed=0, cols=7)
    assert grid.shape == (10 * 7, *SHAPE)
    assert 0 <= grid.min() and grid.max() <= 1
    trav = traversal_grid(G, space, code=1, seed=0, cols=5)
    assert trav.shape == (10 * 5, *SHAPE)
    assert G.training


# --- checkpoints and the CLIs (hand-made checkpoint; the real trainer's in integration) --
@pytest.fixture()
def fake_checkpoint(tmp_path):
    """A directory laid out like the trainer's checkpoints, from a fresh tiny model."""
    cfg = Config()
    cfg.model = ModelConfig(arch="mlp", width=0.0625)
    cfg.latent = LatentConfig(noise_dim=4, categorical=[10], continuous=2)
    cfg.data.shards = str(tmp_path / "nowhere")  # unreadable: the shape comes from the state
    space, G, D = tiny()
    path = tmp_path / "checkpoints" / "step-00000007"
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    save_file({k: v.contiguous() for k, v in G.state_dict().items()},
              str(path / "generator.safetensors"))
    save_file({k: v.contiguous() for k, v in G.state_dict().items()},
              str(path / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in D.state_dict().items()},
              str(path / "model_1.safetensors"))
    holds = {"image_shape": list(SHAPE), "latent": dataclasses.asdict(cfg.latent),
             "model": dataclasses.asdict(cfg.model)}
    (path / ckpt.STATE_FILE).write_text(json.dumps({"step": 7, **holds}))
    (path / ckpt.COMPLETE).write_text("step 7\n")
    return path, G, D


def test_load_checkpoint_restores_weights_and_reads_image_shape(fake_checkpoint):
    path, G, D = fake_checkpoint
    loaded = load_checkpoint(path)
    assert loaded.step == 7 and loaded.image_shape == SHAPE
    assert not loaded.G.training and not loaded.D.training
    for a, b in ((G, loaded.G), (D, loaded.D)):
        for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items(),
                                    strict=True):
            assert k == k2 and torch.equal(v, v2)


@pytest.mark.parametrize("remove", ["COMPLETE", "model_1.safetensors", "config.yaml"])
def test_eval_refuses_incomplete_checkpoint_in_one_line(fake_checkpoint, remove, capsys):
    path, _, _ = fake_checkpoint
    (path / remove).unlink()
    assert main(["eval", "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a complete checkpoint" in err and remove in err


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_a_checkpoint_that_does_not_say_what_it_holds_is_refused(fake_checkpoint, command,
                                                                  tmp_path, capsys):
    """Nothing guesses the image shape: a train_state.json without image_shape is one line."""
    path, _, _ = fake_checkpoint
    (path / ckpt.STATE_FILE).write_text(json.dumps({"step": 7}))
    extra = ["--out", str(tmp_path / "x.png")] if command == "sample" else []
    assert main([command, "--checkpoint", str(path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "image_shape" in err and ckpt.STATE_FILE in err


def test_eval_points_a_run_directory_to_its_checkpoint(fake_checkpoint, capsys):
    path, _, _ = fake_checkpoint
    assert main(["eval", "--checkpoint", str(path.parent.parent)]) == 2
    assert f"e.g. {path}" in capsys.readouterr().err


def test_sample_without_d_and_grid_layout(fake_checkpoint, tmp_path):
    from PIL import Image

    path, _, _ = fake_checkpoint
    (path / "model_1.safetensors").unlink()  # sample needs only G and the config
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(path), "--out", str(out), "--n", "12",
                 "--sweep", "c3=-2:2:4", "--fix", "c1=9"]) == 0
    assert Image.open(out).size == (4 * 29 + 1, 3 * 29 + 1)  # 3 rows x 4 steps, padding 1


def test_sample_latents_fix_and_sweep():
    space, _, _ = tiny()
    lat, nrow = build_latents(space, 10, 0, ["c1=3", "c3=0.25"], "c2=-2:2:5")
    assert nrow == 5 and len(lat) == 10
    assert (lat.cat[:, 0] == 3).all() and (lat.cont[:, 1] == 0.25).all()
    assert lat.cont[:5, 0].tolist() == [-2, -1, 0, 1, 2] == lat.cont[5:, 0].tolist()
    assert torch.equal(lat.z[0], lat.z[4]) and not torch.equal(lat.z[0], lat.z[5])
    lat, nrow = build_latents(space, 9, 0, [], None)
    assert nrow == 3 and len(lat) == 9


@pytest.mark.parametrize("fix,msg", [
    ("c1=10", "out of range"), ("c1=-1", "out of range"), ("c1=x", "class index"),
    ("c9=1", "unknown code"), ("c2=abc", "give a number"), ("c1", "CODE=VALUE"),
    # issue 29: values a float32 code cannot hold were a RuntimeError traceback
    ("c2=1e308", "within float32"), ("c2=nan", "must be finite"), ("c2=-inf", "finite"),
])
def test_bad_fix(fix, msg):
    space, _, _ = tiny()
    with pytest.raises(ValueError, match=msg):
        parse_fix(fix, space)


@pytest.mark.parametrize("sweep,msg", [
    ("c1=0:1:3", "categorical"), ("c7=0:1:3", "unknown code"), ("c2=0:1", "START:STOP"),
    ("c2=0:1:1", ">= 2"),
    ("c2=-1e308:1:3", "within float32"), ("c2=0:1:100000000", "at most 10000"),
])
def test_bad_sweep(sweep, msg):
    space, _, _ = tiny()
    with pytest.raises(ValueError, match=msg):
        parse_sweep(sweep, space)


# --- benchmarks/quality.py: time to 95% from metrics.jsonl ------------------------------
def test_quality_time_to_threshold_from_step_times():
    from benchmarks.quality import format_table, time_to_threshold, training_seconds

    rows = [
        {"step": 50, "perf/s_per_step": 0.2, "progress/images_seen": 6400.0},
        {"step": 100, "perf/s_per_step": 0.1, "progress/images_seen": 12800.0},
        {"step": 100, "eval/acc/c1": 0.90},  # an evaluation logged in its own row
        {"step": 150, "perf/s_per_step": 0.1, "progress/images_seen": 19200.0,
         "eval/acc/c1": 0.96},
        {"step": 200, "perf/s_per_step": 0.3, "eval/acc/c1": 0.97},
    ]
    assert training_seconds(rows) == pytest.approx(50 * (0.2 + 0.1 + 0.1 + 0.3))
    assert training_seconds(rows, 120) == pytest.approx(10 + 5 + 20 * 0.1)  # part interval
    t = time_to_threshold(rows, global_batch=128)
    assert t == {"step": 150, "images": 19200, "seconds": pytest.approx(20.0), "value": 0.96}
    assert time_to_threshold(rows[:3], 128) == {"step": None, "images": None,
                                                "seconds": None, "value": 0.90}
    assert time_to_threshold([{"step": 5, "mi/c1": 0.1}], 128) is None
    stamped = [{"step": 10, "time": 100.0, "perf/s_per_step": 1.0},
               {"step": 20, "time": 105.0, "eval/acc/c1": 0.99}]
    assert time_to_threshold(stamped, 8) == {"step": 20, "images": 160,
                                             "seconds": pytest.approx(15.0), "value": 0.99}
    table = format_table([
        {"seed": 0, "accuracy": 0.97, "mi": 2.2, "steps": 200, "train_s": 40.0,
         "wall_s": 50.0, "device": "cpu x1", "t95": t},
        {"seed": 1, "error": "training exited 1", "wall_s": 3.0, "device": "?"},
    ])
    assert "seeds >= 95%: 1/2" in table and "FAILED: training exited 1" in table
    assert "median accuracy of c1: 0.9700" in table


def test_quality_per_class_is_each_labels_share_in_its_category():
    from benchmarks.quality import format_per_class, per_class

    # categories 0..2 (rows) x labels 0..3 (columns): category 2 holds label 0, category 0
    # label 1, category 1 label 2; label 3 has no category of its own and no images here
    confusion = [[1, 8, 0, 0],
                 [0, 2, 6, 0],
                 [9, 0, 4, 0]]
    shares = per_class(confusion, [1, 2, 0])
    assert shares == [pytest.approx(0.9), pytest.approx(0.8), pytest.approx(0.6), None]
    assert per_class([[3, 1], [2, 4]], [0, None]) == [pytest.approx(0.6), 0.0]
    text = format_per_class([{"seed": 7, "per_class": shares}, {"seed": 8, "error": "x"}])
    assert text.splitlines()[-1].split() == ["7", "0.900", "0.800", "0.600", "-"]
    assert format_per_class([{"seed": 0, "accuracy": 0.5}]) == ""


def test_quality_parallel_seeds_share_the_cores(monkeypatch):
    from benchmarks.quality import thread_env

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "OMP_NUM_THREADS" not in thread_env(1)  # one run: torch's own default
    assert thread_env(2)["OMP_NUM_THREADS"] == "4"
    assert thread_env(16)["OMP_NUM_THREADS"] == "1"


# --- benchmarks/curves.py ---------------------------------------------------------------
def test_curves_draws_one_panel_per_key(tmp_path):
    from PIL import Image

    from benchmarks.curves import main as curves_main
    from benchmarks.curves import series

    run = tmp_path / "run-a"
    run.mkdir()
    rows = [{"step": 50, "mi/c1": 1.0}, {"step": 100, "mi/c1": 2.0, "eval/acc/c1": 0.5},
            {"step": 150, "mi/c1": 2.2}]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{\"step\": 2")
    assert series(run / "metrics.jsonl", "eval/acc/c1") == [(100, 0.5)]  # cut line skipped
    out = tmp_path / "c.png"
    assert curves_main([str(run / "metrics.jsonl"), "--key", "mi/c1", "--key", "eval/acc/c1",
                 "--hline", "2.3026", "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.size == (560, 600)
    assert len(img.getcolors(1 << 16)) > 2  # drew more than a frame on white
    assert curves_main([str(tmp_path / "none.jsonl"), "--key", "mi/c1", "--out", str(out)]) == 2


# --- issue 12: infogan sample refuses repeated codes ------------------------------------
@pytest.mark.parametrize("args,msg", [
    (["--fix", "c1=3", "--fix", "c1=4"], "--fix c1=4: c1 is already fixed by --fix c1=3; "
                                         "give each code once"),
    (["--fix", "c2=0.5", "--fix", "c2 = 0.5"], "--fix c2 = 0.5: c2 is already fixed by "
                                               "--fix c2=0.5; give each code once"),
    (["--sweep", "c2=-2:2:4", "--sweep", "c3=-1:1:4"],
     "--sweep given 2 times (c2=-2:2:4, c3=-1:1:4); a grid sweeps one code: give --sweep once"),
])
def test_sample_refuses_a_code_given_twice(fake_checkpoint, tmp_path, capsys, args, msg):
    path, _, _ = fake_checkpoint
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(path), "--out", str(out), "--n", "8",
                 *args]) == 2
    err = capsys.readouterr().err
    assert err == f"infogan sample: error: {msg}\n"
    assert not out.exists()


# --- benchmarks/dsprites_protocol.py: arguments ----------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0,x"], "--seeds '0,x': give integers"),
    (["--seeds", "1,1"], "--seeds 1,1: a seed is given twice"),
    (["--steps", "4"], "--steps must be >= 5, got 4"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--fraction", "0"], "--fraction must be in (0, 1], got 0.0"),
    (["--shards", "nowhere"], "nowhere/index.json not found; make the shards with"),
], ids=["seeds", "seed-twice", "steps", "jobs", "threads", "fraction", "shards"])
def test_protocol_arguments_are_one_line_exit_2_before_anything_starts(tmp_path, capsys, args,
                                                                        needle):
    """(--jobs 0 was a ValueError traceback from the thread pool, after the output
    directory had been made.)"""
    from benchmarks.dsprites_protocol import main as protocol

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "index.json").write_text("{}")
    out = tmp_path / "out"
    assert protocol(["--shards", str(shards), "--out", str(out), "--steps", "10", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert not out.exists()


# --- benchmarks/disentanglement.py: arguments ------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--fraction", "2"], "--fraction must be in (0, 1], got 2.0"),
    (["--checkpoint", "nowhere"], "checkpoint directory nowhere does not exist"),
    ([], "shard directory"),
], ids=["batch", "fraction", "checkpoint", "shards"])
def test_the_scores_benchmark_answers_bad_input_in_one_line(tmp_path, capsys, args, needle):
    """(each was a traceback)"""
    from benchmarks.disentanglement import main as bench

    assert bench(["--shards", str(tmp_path / "none"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
