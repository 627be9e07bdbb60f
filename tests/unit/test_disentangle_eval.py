"""The scores of a model (disentangle_eval.py): the representation is Q's reading of the
images, each image goes through Q once, and 2 real gloo ranks (each a share of the
images, gathered) give the 1-rank scores."""

from __future__ import annotations

import datetime
import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from infogan_dist.config import LatentConfig, ModelConfig
from infogan_dist.data import to_float
from infogan_dist.data.prepare import write_shards
from infogan_dist.data.sprites import NAMES, generate
from infogan_dist.disentangle_eval import CodeTable, FactorImages, QCodes, code_names, scores
from infogan_dist.latent import LatentSpace
from infogan_dist.models import build_models

SIZES = [3, 2, 4, 4, 4]
FRACTION, BATCH = 0.01, 50  # FactorVAE: 150 votes of 64 images (9,600 look-ups of 384)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    images, factors, values = generate(SIZES, 32)
    out = tmp_path_factory.mktemp("dis") / "shards"
    order = np.random.default_rng(1).permutation(len(images))
    write_shards(images[order], factors[order, 0].astype(np.int64), out, 100, "test", 3,
                 factors[order], {"names": NAMES, "sizes": SIZES, "values": values})
    return str(out)


def model():
    space = LatentSpace(LatentConfig(noise_dim=8, categorical=[3], continuous=3))
    torch.manual_seed(0)
    _, D = build_models(ModelConfig(arch="mlp", width=0.125), space.input_dim, space.q_dim,
                        (1, 32, 32))
    return D.eval(), space


def test_codes_are_q_means_and_argmax_and_each_image_is_computed_once(shards):
    D, space = model()
    images = FactorImages.load(shards)
    held = images.set.images
    calls = []
    q = QCodes(D, space)

    def counting(x):
        calls.append(len(x))
        return q(x)

    counting.dim = q.dim
    table = CodeTable(counting, held, batch=BATCH, device="cpu")
    rows = np.array([5, 7, 5, 300, 7])
    with torch.no_grad():
        got = table(rows)
        again = table(np.array([300, 5, 11]))
        _, out = D(to_float(held[0:384]), head="q")
    assert calls == [3, 1]  # 3 distinct rows, then only the new one
    assert code_names(space) == ["c1", "c2", "c3", "c4"]
    want = torch.cat([space.predict_categories(out).float(), space.split_q(out).mean], 1)
    np.testing.assert_allclose(got, want[rows].numpy(), atol=1e-6)
    np.testing.assert_allclose(again, want[[300, 5, 11]].numpy(), atol=1e-6)
    assert set(got[:, 0].tolist()) <= {0.0, 1.0, 2.0}  # c1's argmax: a class number


def _rank(rank, store, spec, out):
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                             timeout=datetime.timedelta(seconds=120))
    D, space = model()
    report = scores(D, space, FactorImages.load(spec), "cpu", seed=0, fraction=FRACTION,
                    batch=BATCH)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    tdist.barrier()
    tdist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # see test_ddp_sync.py: skip gloo's teardown


def test_two_ranks_give_the_one_rank_scores(shards, tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), shards, tmp_path), nprocs=2, join=True)
    two = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the ranks: a float's rounding may depend on threads
    try:
        D, space = model()
        one = scores(D, space, FactorImages.load(shards), "cpu", seed=0, fraction=FRACTION,
                     batch=BATCH)
    finally:
        torch.set_num_threads(threads)
    one = json.loads(json.dumps(one))
    assert two[0] == two[1]  # every rank gets every code and the same scores
    for name in ("factorvae", "mig", "dci", "sap"):
        assert abs(one[name] - two[0][name]) <= 1e-6, name
        assert 0 <= one[name] <= 1
    assert one["details"] == two[0]["details"]
    assert 0 < one["codes_computed"] <= 384 and one["codes_computed"] == two[0]["codes_computed"]
    assert one["factors"] == NAMES and one["codes"] == ["c1", "c2", "c3", "c4"]
    assert np.asarray(one["mi_normalised"]).shape == (4, 5)


def test_shards_without_every_combination_are_refused_before_and_at_scoring(shards, tmp_path):
    """A --limit subset of the grid: preflight counts (no decoding) and refuses it in one
    line; loading it for the scores names the missing combination."""
    from infogan_dist.config import ConfigError, load_config
    from infogan_dist.data.shards import ShardError
    from infogan_dist.preflight import preflight

    subset = tmp_path / "subset"
    images, factors, values = generate(SIZES, 32)
    write_shards(images[:300], None, subset, 100, "test", None, factors[:300],
                 {"names": NAMES, "sizes": SIZES})
    overrides = [f"data.shards={shards}", f"data.eval_shards={subset}",
                 f"run.output_dir={tmp_path}", "log.eval_every=5",
                 "log.eval_metrics=[disentanglement]", "model.arch=mlp"]
    with pytest.raises(ConfigError, match=r"samples all 384 factor combinations, but .*subset "
                                          r"holds 300 samples"):
        preflight(load_config(None, overrides))
    preflight(load_config(None, overrides[:1] + overrides[2:]))  # the whole grid: fine
    with pytest.raises(ShardError, match=r"holds 300 of the 384 factor combinations.*missing"):
        FactorImages.load(str(subset))


def test_a_factor_of_one_value_is_left_out_of_the_scores(tmp_path):
    """`--sprites --factor-sizes 3,1,2,2,2`: scale takes one value, so it is no factor of
    variation and the scores leave it out, as disentanglement_lib does with dSprites'
    color (it was refused: "factor sizes ... must be >= 2"); fewer than 2 varying
    factors are refused in one line."""
    from infogan_dist.data.shards import ShardError
    from infogan_dist.evaluate import format_disentanglement

    def make(sizes, name):
        images, factors, values = generate(sizes, 32)
        write_shards(images, factors[:, 0].astype(np.int64), tmp_path / name, 100, "test", 3,
                     factors, {"names": NAMES, "sizes": sizes, "values": values})
        return str(tmp_path / name)

    images = FactorImages.load(make([3, 1, 2, 2, 2], "one_scale"))
    assert images.data.names == ["shape", "orientation", "pos_x", "pos_y"]
    assert images.data.sizes == [3, 2, 2, 2] and images.constant == ["scale"]
    D, space = model()
    report = scores(D, space, images, "cpu", seed=0, fraction=FRACTION, batch=BATCH)
    assert report["factors"] == images.data.names and report["constant_factors"] == ["scale"]
    assert np.asarray(report["mi_normalised"]).shape == (4, 4)
    assert all(0 <= report[name] <= 1 for name in ("factorvae", "mig", "dci", "sap"))
    assert "left out (one value in these shards): scale" in format_disentanglement(report)
    shape_only = make([3, 1, 1, 1, 1], "shape_only")
    with pytest.raises(ShardError, match=r"factor sizes \[3, 1, 1, 1, 1\] .*1 factor\(s\) "
                                         r"vary, the scores need 2 or more"):
        FactorImages.load(shape_only)
    # and a training that would score them refuses to start
    from infogan_dist.config import ConfigError, load_config
    from infogan_dist.preflight import preflight

    with pytest.raises(ConfigError, match=r"needs 2 or more factors that vary, but the factor "
                                          r"sizes of .*shape_only are \[3, 1, 1, 1, 1\]"):
        preflight(load_config(None, [f"data.shards={shape_only}", f"run.output_dir={tmp_path}",
                                     "log.eval_every=5", "log.eval_metrics=[disentanglement]",
                                     "model.arch=mlp"]))
