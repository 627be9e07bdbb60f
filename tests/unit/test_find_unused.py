"""DDP's find_unused_parameters is chosen from the update rule: on only where a phase
whose D forwards go through DDP leaves one of D's heads without a gradient."""

from __future__ import annotations

import pytest

from infogan_dist.config import load_config
from infogan_dist.updates import UPDATE_RULES


@pytest.mark.parametrize("config,overrides,unused", [
    ("configs/mnist.yaml", [], False),  # paper, q_augment: the D step reads both heads
    ("configs/mnist.yaml", ["loss.q_augment=0"], False),  # the fake view reads both
    ("configs/smoke.yaml", [], True),  # three_optimizers: D step without Q, info without adv
    ("configs/smoke.yaml", ["train.update=paper"], False),
    ("configs/mnist.yaml", ["train.update=three_optimizers"], True),
])
def test_find_unused_parameters_follows_the_heads_each_phase_reads(config, overrides, unused):
    cfg = load_config(config, overrides)
    assert UPDATE_RULES[cfg.train.update].leaves_parameters_unused(cfg) is unused
