"""The EMA generator (infogan_dist/ema.py): the ramp-up rule, parameters averaged and
buffers copied, nothing when off, and the checkpoint Part round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infogan_dist.ema import EMA, EMA_FILE, ema_beta
from infogan_dist.ranks import CrossRankBatchNorm, convert_batchnorm


def small_g() -> nn.Module:
    torch.manual_seed(0)
    return convert_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)))


def test_beta_follows_the_half_life_with_its_ramp_up():
    # past the ramp: after half_life images the weight of the old average is 1/2
    assert ema_beta(1000, 0.05, 10**9, 1000) == pytest.approx(0.5)
    assert ema_beta(1000, 0.05, 10**9, 100) ** 10 == pytest.approx(0.5)
    # during the ramp the half-life is 0.05 x images seen: step 1 of batch 128 -> 0.5**20
    assert ema_beta(10_000, 0.05, 128, 128) == pytest.approx(0.5 ** 20)
    assert ema_beta(10_000, 0.0, 128, 128) == pytest.approx(0.5 ** (128 / 10_000))
    assert ema_beta(1000, 0.05, 0, 16) == 0.0  # nothing seen yet: a copy


def test_update_averages_parameters_and_copies_buffers():
    G = small_g()
    ema = EMA(G, half_life_images=100, rampup=0.0, batch=100)  # beta = 1/2
    assert isinstance(ema.module[1], CrossRankBatchNorm)  # made from the converted G
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
        G[1].running_mean.add_(3.0)
        G[1].num_batches_tracked.add_(5)
    ema.update(G, images_seen=10**6)
    for old, p_ema, p in zip(before, ema.module.parameters(), G.parameters(), strict=True):
        torch.testing.assert_close(p_ema, (old + p) / 2)
    for b_ema, b in zip(ema.module.buffers(), G.buffers(), strict=True):
        assert torch.equal(b_ema, b)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_off_is_nothing():
    G = small_g()
    ema = EMA(G, half_life_images=0, rampup=0.05, batch=16)
    assert ema.module is None and ema.parts() == [] and ema.models() == {}
    assert ema.sampler(G) is G
    ema.update(G, 16)  # no-op


def test_part_round_trip(tmp_path):
    G = small_g()
    ema = EMA(G, 50, 0.05, 16)
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(2)
    ema.update(G, 1000)
    (part,) = ema.parts()
    assert part.name == EMA_FILE
    part.save(tmp_path / part.name)
    other = EMA(small_g(), 50, 0.05, 16)
    part_other = other.parts()[0]
    part_other.load(tmp_path / part.name)  # a Part reads its own file
    for a, b in zip(ema.module.state_dict().values(), other.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    with pytest.raises(Exception, match="no generator_ema.safetensors"):
        part_other.load(tmp_path / "missing" / part.name)
