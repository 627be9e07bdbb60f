"""FID and KID (infogan_dist/fid.py) and the feature networks (features.py): the math
against scipy, KID's unbiasedness, the cache (keying, atomic writes, fallback), the FID
Inception loader's plumbing (random weights: the real ones are not available here), and
2 real gloo ranks giving the 1-rank result."""

from __future__ import annotations

import datetime
import json
import os
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from safetensors.torch import save_file

from infogan_dist import fid
from infogan_dist.data.prepare import write_shards
from infogan_dist.features import (
    FIDInception,
    SmallClassifier,
    load_classifier,
    load_features,
    load_inception,
)


def feats(n=400, d=8, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ a + shift


def scipy_fid(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def fid_of(x, y):
    a, b = fid.FeatureStats.of(x), fid.FeatureStats.of(y)
    return fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    x = feats()
    assert abs(fid_of(x, x)) < 1e-3
    values = [fid_of(x, feats(seed=1, shift=s)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > values[0] + 10


@pytest.mark.parametrize("d,shift", [(8, 0.3), (32, 1.0)])
def test_fid_matches_scipy_sqrtm(d, shift):
    x, y = feats(n=300, d=d), feats(n=500, d=d, shift=shift, seed=3)
    want = scipy_fid(x, y)
    assert fid_of(x, y) == pytest.approx(want, rel=1e-4)


def test_mmd2_unbiased_on_a_hand_case():
    # d = 1, x = [0, 1], y = [1, 2]: k(a, b) = (ab + 1)^3
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    kxx_off = 2 * (0 * 1 + 1) ** 3  # k(0,1) twice
    kyy_off = 2 * (1 * 2 + 1) ** 3  # k(1,2) twice
    kxy = [(0 * 1 + 1) ** 3, (0 * 2 + 1) ** 3, (1 * 1 + 1) ** 3, (1 * 2 + 1) ** 3]
    want = kxx_off / 2 + kyy_off / 2 - 2 * np.mean(kxy)  # m(m-1) = 2
    assert fid.mmd2_unbiased(x, y) == pytest.approx(want)
    assert want == pytest.approx(1 + 27 - 2 * (1 + 1 + 8 + 27) / 4)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    draws = [fid.mmd2_unbiased(rng.normal(size=(20, 4)), rng.normal(size=(20, 4)))
             for _ in range(2000)]
    spread = np.std(draws) / np.sqrt(len(draws))
    assert abs(np.mean(draws)) < 4 * spread, (np.mean(draws), spread)
    # the biased V-statistic (diagonal kept) would sit well above 0 here
    assert spread < 0.05
    x, y = feats(n=300, d=4), feats(n=300, d=4, shift=1.0, seed=1)
    assert fid.kid(x, y, subsets=10, subset_size=100) > 20 * spread


# --- the cache -------------------------------------------------------------------------------
@pytest.fixture
def tiny_shards(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 1, 28, 28), dtype=np.uint8)
    write_shards(images, rng.integers(0, 10, 40), tmp_path / "shards", shard_size=20,
                 source="random", num_classes=10)
    return str(tmp_path / "shards")


def tiny_classifier(tmp_path, seed=0):
    torch.manual_seed(seed)
    model = SmallClassifier(1, 10, width=4)
    d = tmp_path / f"feat{seed}"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(d / "features.safetensors"))
    (d / "features.json").write_text(json.dumps(
        {"in_channels": 1, "classes": 10, "width": 4, "image_shape": [1, 28, 28]}))
    return d


def test_real_stats_are_cached_by_shards_and_weights(tiny_shards, tmp_path, capsys):
    net = load_classifier(tiny_classifier(tmp_path))
    fallback = tmp_path / "fallback"
    first = fid.real_stats(tiny_shards, net, 16, "cpu", fallback)
    cached = list((tmp_path / "shards" / fid.CACHE_DIR).iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".safetensors"  # no partial left
    assert "cached in" in capsys.readouterr().err
    again = fid.real_stats(tiny_shards, net, 16, "cpu", fallback)
    assert "cached in" not in capsys.readouterr().err  # read, not recomputed
    np.testing.assert_array_equal(first.sigma, again.sigma)
    # other weights: another key
    other = load_classifier(tiny_classifier(tmp_path, seed=1))
    assert other.identity != net.identity
    fid.real_stats(tiny_shards, other, 16, "cpu", fallback)
    assert len(list((tmp_path / "shards" / fid.CACHE_DIR).iterdir())) == 2
    # a subset of the shards: another key
    sub = tiny_shards + "/shard-{000000..000000}.tar"
    assert fid.cache_key(sub, net.identity) != fid.cache_key(tiny_shards, net.identity)


def test_real_stats_follow_the_images_not_the_index(tiny_shards, tmp_path, capsys):
    """Issue 29: eval shards rewritten with other images under an unchanged index.json
    without sha256 (and sizes) reused the cached statistics: FID against the old set.
    The key is the images' pixels: they are recomputed, equal to a fresh computation; and
    a cache file copied onto the new key's name is not believed."""
    from infogan_dist.data.prepare import write_shards

    net = load_classifier(tiny_classifier(tmp_path))
    fallback = tmp_path / "fallback"
    index_path = tmp_path / "shards" / "index.json"
    index = json.loads(index_path.read_text())
    for entry in index["shards"]:  # an index from before sizes and sha256 were recorded
        entry.pop("sha256", None)
        entry.pop("size", None)
    index_path.write_text(json.dumps(index))
    old = fid.real_stats(tiny_shards, net, 16, "cpu", fallback)
    stale = next((tmp_path / "shards" / fid.CACHE_DIR).iterdir()).read_bytes()
    capsys.readouterr()
    rng = np.random.default_rng(1)  # other images, same count, same shard names
    write_shards(rng.integers(0, 128, size=(40, 1, 28, 28), dtype=np.uint8),
                 rng.integers(0, 10, 40), tmp_path / "other", shard_size=20, source="random",
                 num_classes=10)
    for f in (tmp_path / "other").glob("shard-*.tar"):
        os.replace(f, tmp_path / "shards" / f.name)
    assert json.loads(index_path.read_text()) == index  # the index did not change
    new = fid.real_stats(tiny_shards, net, 16, "cpu", fallback)
    assert "cached in" in capsys.readouterr().err  # recomputed
    assert not np.array_equal(new.mu, old.mu)
    for f in (tmp_path / "shards" / fid.CACHE_DIR).iterdir():
        f.unlink()
    fresh = fid.real_stats(tiny_shards, net, 16, "cpu", fallback)
    np.testing.assert_array_equal(new.sigma, fresh.sigma)
    # the old file put where the new key's file goes: it records another key, recomputed
    next((tmp_path / "shards" / fid.CACHE_DIR).iterdir()).write_bytes(stale)
    capsys.readouterr()
    again = fid.real_stats(tiny_shards, net, 16, "cpu", fallback)
    assert "cached in" in capsys.readouterr().err
    np.testing.assert_array_equal(again.sigma, fresh.sigma)


def test_unwritable_shard_directory_falls_back(tiny_shards, tmp_path, capsys):
    net = load_classifier(tiny_classifier(tmp_path))
    # the cache dir's name taken by a file: the shard directory cannot hold the cache (a
    # read-only mount fails the same way; tests run as root, which chmod cannot stop)
    (tmp_path / "shards" / fid.CACHE_DIR).write_text("not a directory")
    fallback = tmp_path / "fallback"
    fid.real_stats(tiny_shards, net, 16, "cpu", fallback)
    assert "is not writable" in capsys.readouterr().err
    assert len(list(fallback.glob("*.safetensors"))) == 1
    assert fid.read_cached(tiny_shards, net.identity, fallback) is not None


# --- feature networks --------------------------------------------------------------------------
def test_inception_loader_plumbing_with_random_weights(tmp_path):
    """The real pt_inception-2015-12-05 weights are not available offline: a randomly
    initialised network of the same architecture, saved as safetensors, goes through the
    loader; 2048-d features of grey 28x28 images, the same after reloading."""
    torch.manual_seed(0)
    state = FIDInception().state_dict_for_file()
    assert "fc.weight" in state and state["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)
    path = tmp_path / "inception.safetensors"
    save_file(state, str(path))
    net = load_features("inception", str(path))
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    out = net(x)
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    assert torch.equal(load_inception(path)(x), out)
    assert net.identity.startswith("inception:")
    del state["fc.weight"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not the weights of the FID Inception"):
        load_inception(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="eval.inception_weights"):
        load_features("inception", "")


def test_classifier_rejects_other_image_shapes(tmp_path):
    net = load_classifier(tiny_classifier(tmp_path))
    with pytest.raises(ValueError, match="takes \\[1, 28, 28\\] images"):
        net(torch.zeros(1, 3, 32, 32))


# --- 2 ranks = 1 rank ----------------------------------------------------------------------------
def _two_rank_worker(rank, store, shards, featdir, out):
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                             timeout=datetime.timedelta(seconds=60))
    from infogan_dist.config import LatentConfig, ModelConfig
    from infogan_dist.latent import LatentSpace
    from infogan_dist.models import build_models

    net = load_classifier(featdir)
    real = fid.real_stats(shards, net, 16, "cpu", out / "fallback2")
    space = LatentSpace(LatentConfig(noise_dim=8))
    torch.manual_seed(0)
    G, _ = build_models(ModelConfig(arch="mlp", width=0.125), space.input_dim, space.q_dim,
                        (1, 28, 28))
    fake = fid.generated_stats(G, space, net, 70, 5, 16, "cpu")
    result = fid.fid_kid(real, fake)
    if rank == 0:
        np.save(out / "real_feats.npy", real.features)
        np.save(out / "fake_feats.npy", fake.features)
        (out / "two.json").write_text(json.dumps(result))
    tdist.barrier()
    tdist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # see test_ddp_sync.py: skip gloo's teardown


def test_two_ranks_give_the_one_rank_result(tiny_shards, tmp_path):
    featdir = tiny_classifier(tmp_path)
    # two ranks first: they compute the real statistics (split) and write the cache
    mp.spawn(_two_rank_worker, args=(str(tmp_path / "store"), tiny_shards, featdir, tmp_path),
             nprocs=2, join=True)
    two = json.loads((tmp_path / "two.json").read_text())
    for f in (tmp_path / "shards" / fid.CACHE_DIR).iterdir():
        f.unlink()  # one rank recomputes the real features itself
    from infogan_dist.config import LatentConfig, ModelConfig
    from infogan_dist.latent import LatentSpace
    from infogan_dist.models import build_models

    # one thread like the ranks: a conv's float rounding depends on the thread split
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = load_classifier(featdir)
        real = fid.real_stats(tiny_shards, net, 16, "cpu", tmp_path / "fallback1")
        space = LatentSpace(LatentConfig(noise_dim=8))
        torch.manual_seed(0)
        G, _ = build_models(ModelConfig(arch="mlp", width=0.125), space.input_dim,
                            space.q_dim, (1, 28, 28))
        fake = fid.generated_stats(G, space, net, 70, 5, 16, "cpu")
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(real.features, np.load(tmp_path / "real_feats.npy"))
    np.testing.assert_array_equal(fake.features, np.load(tmp_path / "fake_feats.npy"))
    one = fid.fid_kid(real, fake)
    assert one == two and one["fid"] > 0
