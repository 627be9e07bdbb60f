"""docs/extending.md: a loss term registered from this file alone (no edit of the
package) joins the D phase through its registry entry and trains 5 steps.

The term is Progressive GAN's drift penalty, eps * E[D(x_real)^2], which keeps D's
logits near zero. Training runs in this process (one rank, no launcher), so the
registration made at import of this module is the one the Trainer sees.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from infogan_dist.choices import load_config
from infogan_dist.config import ConfigError
from infogan_dist.data import read_index
from infogan_dist.terms import LossTerm, View, register_term
from tests.helpers import ROOT, make_shards, metrics

pytestmark = pytest.mark.integration


@register_term("drift")
class Drift(LossTerm):
    view = "real"  # judged on real images ...
    head = "adv"  # ... through D's adversarial head
    roles = ("D",)  # joins every phase that trains D; weight: loss.extra.drift

    def __call__(self, v: View) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.weight(self.cfg) * (v.logit.float() ** 2).mean()
        return loss, {"loss/drift": loss.detach()}


def _train(shards, out, name, *extra):
    from infogan_dist.trainer import Trainer

    cfg = load_config(ROOT / "configs/smoke.yaml", [
        f"data.shards={shards}", f"run.output_dir={out}", f"run.name={name}",
        "train.max_steps=5", "log.every=1", "checkpoint.every=5", "log.images_every=0",
        *extra])
    assert Trainer(cfg, read_index(cfg.data.shards)).fit() == "complete"
    return out / name


def test_a_loss_term_registered_in_a_test_file_trains(tmp_path):
    shards = make_shards(tmp_path / "shards", limit=256, shard_size=128)
    with_term = _train(shards, tmp_path, "drift", "loss.extra={drift: 0.5}")
    without = _train(shards, tmp_path, "plain")

    rows = metrics(with_term)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["loss/drift"] > 0 for r in rows), "the term never ran"
    assert "loss/drift" not in metrics(without)[-1]
    ck = "checkpoints/step-00000005/model_1.safetensors"  # D
    a, b = load_file(str(with_term / ck)), load_file(str(without / ck))
    assert any(not torch.equal(a[k], b[k]) for k in a), "the term did not move D"


def test_an_unregistered_term_is_a_config_error_naming_the_registered_ones():
    with pytest.raises(ConfigError, match=r"loss.extra: bad value 'nope'.*drift"):
        load_config(None, ["loss.extra={nope: 1}"])
