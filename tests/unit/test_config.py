import subprocess
import sys
from pathlib import Path

import pytest

from infogan_dist.choices import load_config
from infogan_dist.config import ConfigError, frozen_differences

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.run.name


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr_g=1e-3", "latent.categorical=[10, 5]", "log.progress=false",
                             "run.name=123"])
    assert cfg.optim.lr_g == 1e-3 and cfg.latent.categorical == [10, 5]
    assert cfg.log.progress is False and cfg.run.name == "123"


@pytest.mark.parametrize("override, names", [
    ("train.bogus=1", ["train.bogus", "keys of train"]),
    ("nosuch.key=1", ["nosuch.key", "sections"]),
    ("train.update=foo", ["train.update", "three_optimizers", "paper"]),
    ("model.arch=resnet", ["model.arch", "dcgan64"]),
    ("train.max_steps=ten", ["train.max_steps", "integer"]),
    ("checkpoint.keep=1", ["checkpoint.keep", ">= 2"]),
    ("latent.categorical=[1]", ["latent.categorical", ">= 2"]),
    ("optim.betas=[0.5]", ["optim.betas"]),
    ("loss.q_augment=-1", ["loss.q_augment", ">= 0"]),
    # issue 29: hostile names and counts, refused before anything is made
    ("run.name=" + "x" * 300, ["run.name", "at most 200 bytes", "300 characters"]),
    ("run.name=..", ["run.name", "not . or .."]),
    ("eval.fid_samples=100000000", ["eval.fid_samples", "2..200000"]),
])
def test_bad_values_name_the_key(override, names):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    for n in names:
        assert n in msg


def test_q_augment_needs_a_categorical_code():
    with pytest.raises(ConfigError, match=r"loss.q_augment.*latent.categorical"):
        load_config(None, ["loss.q_augment=1", "latent.categorical=[]"])
    assert load_config(None, ["loss.q_augment=1", "latent.categorical=[]",
                              "loss.q_augment=0"]).loss.q_augment == 0


def test_bad_yaml_file_names_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.max_stepz"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_world_size_must_divide_batch():
    cfg = load_config(None, ["train.global_batch_size=6"])
    assert cfg.batch_per_rank(2) == 3
    with pytest.raises(ConfigError, match="global_batch_size=6.*4 processes"):
        cfg.batch_per_rank(4)


def test_frozen_differences():
    a = load_config(None)
    b = load_config(None, ["model.arch=mlp", "train.max_steps=9", "latent.continuous=1"])
    assert frozen_differences(a, b) == ["latent.continuous", "model.arch"]


def test_train_py_bad_config_exits_2_with_one_line():
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config",
                        str(ROOT / "configs/smoke.yaml"), "train.update=foo"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.update" in lines[0], r.stderr


def test_yaml_booleans_map_to_words(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("log:\n  wandb: off\ntrain:\n  precision: no\n")
    cfg = load_config(f, ["log.wandb=off"])
    assert cfg.log.wandb == "off" and cfg.train.precision == "no"


# --- registries, duplicate keys, the default recipe (issue 10) ---------------------------
@pytest.mark.parametrize("key, registry", [
    ("model.arch", "infogan_dist.models:MODELS"),
    ("loss.adversarial", "infogan_dist.losses:ADVERSARIAL"),
    ("train.update", "infogan_dist.updates:UPDATE_RULES"),
    ("data.mode", "infogan_dist.data:SOURCES"),
])
def test_choice_keys_allow_what_is_registered_and_name_it_otherwise(key, registry):
    import importlib

    module, name = registry.split(":")
    registered = list(getattr(importlib.import_module(module), name))
    for value in registered:
        load_config(None, [f"{key}={value}"])
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}=nonesuch"])
    msg = str(e.value)
    assert key in msg and "nonesuch" in msg and all(v in msg for v in registered)


def test_duplicate_yaml_keys_are_refused_with_the_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  max_steps: 10\n  max_steps: 20\n")
    with pytest.raises(ConfigError, match=r"dup.yaml line 3: key 'max_steps' is given twice"):
        load_config(path)


def test_a_config_without_codes_is_refused():
    with pytest.raises(ConfigError, match="latent.categorical.*at least one code"):
        load_config(None, ["latent.categorical=[]", "latent.continuous=0"])


def test_train_without_arguments_names_the_command_that_makes_its_data(tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    r = subprocess.run([sys.executable, str(ROOT / "train.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "make data" in r.stderr
    assert "configs/fashion_mnist.yaml" in r.stderr
    dry = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "name: fashion_mnist" in dry.stdout


def test_every_choice_key_has_its_registry_in_choices():
    """choices.py checks each schema field made with choice(...) against one registry; the
    field's metadata says where that registry is defined, and it is the same object."""
    import importlib

    from infogan_dist.choices import REGISTRIES, choice_fields

    fields = dict(choice_fields())
    assert sorted(fields) == sorted(REGISTRIES)
    for key, f in fields.items():
        module, name = f.metadata["registry"].split(":")
        assert getattr(importlib.import_module(module), name) is REGISTRIES[key], key


# --- hostile config files (issue 29) ---------------------------------------------------

def _flow_bomb(levels: int, width: int) -> str:
    """Anchors in one flow sequence, each list `width` aliases of the previous one:
    width**levels leaves once expanded."""
    parts = [f"&a0 [{', '.join(['1'] * width)}]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return ", ".join(parts)


def _bomb(levels: int, width: int) -> str:
    """A config file whose latent.noise_dim is the bomb: the one-line error for a bad
    value (its repr) walks and expands all of it."""
    return f"latent:\n  noise_dim: [{_flow_bomb(levels, width)}]\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    """A few hundred bytes that expand to more than MAX_NODES nodes: one line. (5 levels of
    10: 111,111 nodes, harmless to build; the real bomb is the test below.)"""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(5, 10))
    with pytest.raises(ConfigError, match=r"^config file .*bomb.yaml expands to more than "
                                          r"10000 YAML nodes through its aliases"):
        load_config(bomb)
    with pytest.raises(ConfigError, match=r"^override latent.noise_dim: expands to more"):
        load_config(None, [f"latent.noise_dim=[{_flow_bomb(4, 10)}]"])
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("latent:\n  categorical: &a [2, *a]\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(recursive)
    fine = tmp_path / "anchors.yaml"  # anchors as people use them: still fine
    fine.write_text("optim:\n  lr_d: &lr 0.0002\n  lr_info: *lr\n")
    assert load_config(fine).optim.lr_info == 2e-4


LOAD = """\
import sys
from infogan_dist.config import ConfigError, load_config
try:
    load_config(sys.argv[1])
except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
"""


def test_a_real_alias_bomb_costs_a_line_not_the_memory(tmp_path):
    """9 levels of 9 (387 million leaves) loaded under a 1 GB address-space cap: one
    line (before: it grew until the cap, a MemoryError after seconds of work)."""
    import resource

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(9, 9))

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    r = subprocess.run([sys.executable, "-c", LOAD, str(bomb)], capture_output=True,
                       text=True, timeout=300, preexec_fn=cap, cwd=ROOT)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "expands to more than" in lines[0], \
        r.stderr[-2000:]


@pytest.mark.parametrize("make, said", [
    (lambda p: p.mkdir(), "is a directory; pass a YAML file"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10), "is not a text file"),
    (lambda p: p.write_text("# padding\n" * 200_000), "bytes, more than a config"),
])
def test_a_config_file_that_is_not_one_is_one_line(tmp_path, make, said):
    path = tmp_path / "config.yaml"
    make(path)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"config file {path} ") and said in str(e.value)
    assert "\n" not in str(e.value)


def test_a_checkpoint_config_is_read_with_the_same_bounds(tmp_path):
    from infogan_dist.checkpoint import read_config

    (tmp_path / "config.yaml").write_text(_bomb(5, 10))
    with pytest.raises(ConfigError, match=r"config.yaml expands to more than 10000"):
        read_config(tmp_path)
