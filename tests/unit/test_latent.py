import math

import torch

from infogan_dist.config import LatentConfig
from infogan_dist.latent import LatentSpace


def space(**kw):
    return LatentSpace(LatentConfig(**kw))


def test_sizes_and_names():
    s = space(noise_dim=5, categorical=[10, 4], continuous=3, continuous_std="learned")
    assert s.input_dim == 5 + 14 + 3
    assert s.q_dim == 14 + 6
    assert s.cat_names == ["c1", "c2"] and s.cont_names == ["c3", "c4", "c5"]


def test_sampling_ranges_and_generator_input():
    s = space(noise_dim=4, categorical=[3], continuous=2)
    lat = s.sample(1000, torch.Generator().manual_seed(0))
    assert lat.z.abs().max() <= 1 and lat.cont.abs().max() <= 1
    assert set(lat.cat[:, 0].tolist()) == {0, 1, 2}
    x = s.generator_input(lat[:1])  # batch of one keeps its batch dimension
    assert x.shape == (1, 9)
    assert torch.equal(x[0, 4:7], torch.nn.functional.one_hot(lat.cat[0, 0], 3).float())


def test_step_samples_are_world_size_invariant():
    s = space()
    full = s.sample_step(seed=3, step=7, phase=0, global_batch=8, rank=0, world_size=1)
    parts = [s.sample_step(3, 7, 0, 8, r, 4) for r in range(4)]
    assert torch.equal(torch.cat([p.z for p in parts]), full.z)
    assert torch.equal(torch.cat([p.cat for p in parts]), full.cat)
    other = s.sample_step(3, 8, 0, 8, 0, 1)
    assert not torch.equal(other.z, full.z)


def test_info_loss_known_values():
    s = space(noise_dim=2, categorical=[4], continuous=1)
    lat = s.sample(2, torch.Generator().manual_seed(1))
    lat.cat[:] = torch.tensor([[0], [3]])
    lat.cont[:] = torch.tensor([[0.5], [-0.5]])
    q = torch.zeros(2, 5)  # uniform logits, mean 0
    loss, stats = s.info_loss(q, lat, lambda_cat=1.0, lambda_cont=1.0)
    ce = math.log(4)
    assert math.isclose(float(stats["mi/c1"]), 0.0, abs_tol=1e-6)  # ln K - ln K
    assert math.isclose(float(loss), ce + 0.5 * 0.25, rel_tol=1e-6)
    # Perfect logits: CE -> 0, MI bound -> ln K.
    q2 = torch.zeros(2, 5)
    q2[0, 0] = q2[1, 3] = 50.0
    q2[:, 4] = lat.cont[:, 0]
    loss2, stats2 = s.info_loss(q2, lat, 1.0, 1.0)
    assert math.isclose(float(stats2["mi/c1"]), math.log(4), abs_tol=1e-5)
    assert float(loss2) < 1e-5


def test_learned_variance_lowers_nll_when_confident():
    s = space(noise_dim=2, categorical=[2], continuous=1, continuous_std="learned")
    lat = s.sample(64, torch.Generator().manual_seed(2))
    q = torch.zeros(64, 4)
    q[:, 2] = lat.cont[:, 0]  # exact means
    _, wide = s.info_loss(q, lat, 0.0, 1.0)
    q[:, 3] = -4.0  # small log-variance
    _, narrow = s.info_loss(q, lat, 0.0, 1.0)
    assert float(narrow["mi/c2"]) > float(wide["mi/c2"])
