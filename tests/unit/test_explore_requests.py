"""`infogan explore` without a browser: the request checks (400 reasons), the refusal of
what is not a complete checkpoint, the `--sweep c1=all` the traversal's command uses,
and the CLI that imports a command's module only when it runs (issue 31)."""

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from infogan_dist import checkpoint as ckpt
from infogan_dist.cli import COMMANDS, main
from infogan_dist.config import Config, LatentConfig, ModelConfig, save_config
from infogan_dist.explore.catalog import Catalog, resolve
from infogan_dist.explore.params import BadRequest, View, parse_query
from infogan_dist.explore.render import draw, reproduce
from infogan_dist.latent import LatentSpace
from infogan_dist.models import build_models
from infogan_dist.sample import build_latents

SPACE = LatentSpace(LatentConfig(noise_dim=4, categorical=[10, 3], continuous=2))
SPACES = {"step-00000007": SPACE}
GOOD = "ckpt=step-00000007&gen=ema&seed=5&c1=3&c2=1&c3=0.25&c4=-1.5"


def test_a_good_query_is_a_view():
    assert parse_query(GOOD, SPACES, traversal=False) == View(
        "step-00000007", False, 5, {"c1": 3, "c2": 1, "c3": 0.25, "c4": -1.5})
    view = parse_query(GOOD + "&sweep=c3&rows=4&cols=7&span=2.5", SPACES, traversal=True)
    assert (view.sweep, view.rows, view.cols, view.span) == ("c3", 4, 7, 2.5)
    assert view.codes == {"c1": 3, "c2": 1, "c4": -1.5}  # the swept code is the columns
    view = parse_query(GOOD + "&sweep=c2&rows=2", SPACES, traversal=True)
    assert (view.cols, "c2" in view.codes) == (3, False)  # categorical: its 3 classes


@pytest.mark.parametrize("change,reason", [
    ("c1=10", "c1=10 is out of range (0..9)"),
    ("c1=-1", "c1=-1 is out of range (0..9)"),
    ("c1=2.5", "c1='2.5' is not an integer"),
    ("c3=nan", "c3='nan' is not a finite number"),
    ("c3=inf", "c3='inf' is not a finite number"),
    ("c3=1e999", "c3='1e999' is not a finite number"),
    ("c3=0x10", "c3='0x10' is not a finite number"),
    ("c3=3.5", "c3=3.5 is out of range (-3..3)"),
    ("c3=", "c3='' is not a finite number"),
    ("seed=-1", "seed=-1 is out of range"),
    ("seed=4294967296", "seed=4294967296 is out of range"),
    ("seed=abc", "seed='abc' is not an integer"),
    ("gen=best", "gen='best': expected ema or raw"),
    ("ckpt=../../etc/passwd", "unknown checkpoint '../../etc/passwd'"),
    ("ckpt=/tmp", "unknown checkpoint '/tmp'"),
])
def test_bad_values_are_one_line_reasons(change, reason):
    key = change.split("=")[0]
    query = "&".join(p if not p.startswith(key + "=") else change for p in GOOD.split("&"))
    with pytest.raises(BadRequest) as e:
        parse_query(query, SPACES, traversal=False)
    assert reason in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("query,reason", [
    (GOOD.replace("&c4=-1.5", ""), "missing parameter c4"),
    (GOOD + "&c2=1", "parameter c2 given 2 times"),
    (GOOD + "&path=/etc/passwd", "unknown parameter 'path'"),
    (GOOD + "&sweep=c3&rows=4", "unknown parameter 'sweep'"),  # not on /api/image
    ("%%%", "malformed query string"),
    ("", "missing parameter ckpt"),
])
def test_malformed_queries(query, reason):
    with pytest.raises(BadRequest) as e:
        parse_query(query, SPACES, traversal=False)
    assert reason in str(e.value)


@pytest.mark.parametrize("extra,reason", [
    ("&sweep=c9&rows=4&cols=5&span=2", "sweep='c9': not a code"),
    ("&sweep=c3&rows=17&cols=5&span=2", "rows=17 is out of range (1..16)"),
    ("&sweep=c3&rows=0&cols=5&span=2", "rows=0 is out of range"),
    ("&sweep=c3&rows=2&cols=1&span=2", "cols=1 is out of range (2..21)"),
    ("&sweep=c3&rows=2&cols=5&span=0", "span=0 is out of range"),
    ("&sweep=c3&rows=2&cols=5", "missing parameter span"),
    ("&sweep=c1&rows=2&cols=5", "c1 is categorical"),
])
def test_bad_traversals(extra, reason):
    with pytest.raises(BadRequest) as e:
        parse_query(GOOD + extra, SPACES, traversal=True)
    assert reason in str(e.value)


# --- a checkpoint made by hand (the real trainer's in tests/integration/test_explore.py) --
def make_checkpoint(root, step=7, ema=False):
    cfg = Config()
    cfg.model = ModelConfig(arch="mlp", width=0.0625)
    cfg.latent = LatentConfig(noise_dim=4, categorical=[10], continuous=2)
    space = LatentSpace(cfg.latent)
    torch.manual_seed(step)
    G, D = build_models(cfg.model, space.input_dim, space.q_dim, (1, 28, 28))
    path = root / "checkpoints" / f"step-{step:08d}"
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    for name, m in [("generator", G), ("model_1", D)] + ([("generator_ema", G)] if ema else []):
        save_file({k: v.contiguous() for k, v in m.state_dict().items()},
                  str(path / f"{name}.safetensors"))
    holds = {"image_shape": [1, 28, 28], "latent": dataclasses.asdict(cfg.latent),
             "model": dataclasses.asdict(cfg.model)}
    (path / ckpt.STATE_FILE).write_text(json.dumps({"step": step, **holds}))
    (path / ckpt.COMPLETE).write_text(f"step {step}\n")
    return path


@pytest.mark.parametrize("case,reason", [
    ("missing", "does not exist"),
    ("file", "is not a directory"),
    ("no_marker", "is not a complete checkpoint (no COMPLETE marker)"),
    ("truncated", "is not a complete checkpoint (generator.safetensors is truncated)"),
    ("empty_run", "has no complete checkpoint yet (1 incomplete"),
])
def test_explore_refuses_what_is_not_a_complete_checkpoint(tmp_path, case, reason):
    path = make_checkpoint(tmp_path / "run")
    target = {"missing": tmp_path / "nowhere", "file": path / "config.yaml"}.get(case, path)
    if case in ("no_marker", "empty_run"):
        (path / ckpt.COMPLETE).unlink()
        target = path if case == "no_marker" else tmp_path / "run"
    if case == "truncated":
        g = path / "generator.safetensors"
        g.write_bytes(g.read_bytes()[:-10])
    with pytest.raises(ValueError) as e:
        resolve(target)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_the_refusal_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["explore", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"infogan explore: error: {tmp_path / 'nowhere'} does not exist; pass a run "
                   "directory (runs/NAME) or a complete checkpoint "
                   "(runs/NAME/checkpoints/step-N)")


def test_a_named_checkpoint_is_shown_with_its_run(tmp_path):
    old = make_checkpoint(tmp_path / "run", step=7)
    make_checkpoint(tmp_path / "run", step=9)
    catalog = Catalog(old, torch.device("cpu"))
    assert list(catalog.refresh()) == ["step-00000007", "step-00000009"]
    assert catalog.default_id() == "step-00000007"  # the one named, not the newest
    assert Catalog(tmp_path / "run", torch.device("cpu")).default_id() == "step-00000009"


def test_the_reproduce_command_parses_to_the_view(tmp_path):
    """The command's words, parsed by `infogan sample`'s own parser, draw the view's
    latents (the bitwise PNG comparison runs in the browser test)."""
    from infogan_dist import sample

    path = make_checkpoint(tmp_path / "run", ema=True)
    catalog = Catalog(path, torch.device("cpu"))
    entry = catalog.refresh()[path.name]
    spaces = {path.name: entry.space}
    for query, kind in [(f"ckpt={path.name}&gen=raw&seed=11&c1=4&c2=-2.75&c3=0.1", False),
                        (f"ckpt={path.name}&gen=ema&seed=2&c1=4&c2=1&c3=0.1&sweep=c1&rows=3",
                         True)]:
        view = parse_query(query, spaces, kind)
        words = reproduce(entry, view, torch.device("cpu"))["command"].split()
        sub = argparse.ArgumentParser().add_subparsers()
        sample.register(sub)
        args = sub.choices["sample"].parse_args(words[2:])
        assert args.raw_generator == view.raw and args.seed == view.seed
        ours = build_latents(entry.space, args.n, args.seed, args.fix,
                             args.sweep[0] if args.sweep else None)
        from infogan_dist.explore.render import latent_of

        theirs = latent_of(view, entry.space)
        assert ours[1] == theirs[1]
        for a, b in zip(dataclasses.astuple(ours[0]), dataclasses.astuple(theirs[0]),
                        strict=True):
            assert torch.equal(a, b)
    png = draw(catalog.generator(entry, raw=True), view)
    assert png.startswith(b"\x89PNG")


def test_sweep_all_classes_of_a_categorical_code():
    lat, nrow = build_latents(SPACE, 25, 0, ["c3=0.5"], "c1=all")
    assert nrow == 10 and len(lat) == 20  # 2 rows of the 10 classes
    assert lat.cat[:, 0].tolist() == list(range(10)) * 2
    assert torch.equal(lat.z[0], lat.z[9]) and not torch.equal(lat.z[0], lat.z[10])
    with pytest.raises(ValueError, match="c1 is also given to --fix"):
        build_latents(SPACE, 20, 0, ["c1=3"], "c1=all")


# --- the CLI imports only the command that runs ------------------------------------------
def test_help_imports_no_torch():
    code = ("import sys\nfrom infogan_dist.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
    assert "explore" in r.stdout and "sample" in r.stdout
    assert r.stderr.strip() == "False"


def test_the_help_listed_is_each_commands_own():
    import importlib

    for name, (module, help_text) in COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert list(sub.choices) == [name]
        assert sub._choices_actions[0].help == help_text, name
