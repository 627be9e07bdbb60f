"""Issue 3, points 1-3 and 5: ranks stay identical, training is world-size invariant, two
"machines" (two `accelerate launch` commands on one host) train and checkpoint, and
stream mode on 2 real ranks reads disjoint shards and sees each sample once per epoch.

Every run is a real `accelerate launch` of train.py over gloo. `INFOGAN_DUMP_STATE=<dir>`
makes every rank write all its state tensors (G and D parameters and buffers, the state
of all three Adam optimizers) to <dir>/rank{r}.safetensors at the end of training.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from infogan_dist.data import StreamSource, read_index
from infogan_dist.data.prepare import write_shards
from infogan_dist.data.stream import plan_epoch
from tests.helpers import (
    assert_trained_alike,
    launch_env,
    make_shards,
    metrics,
    train,
    two_machines,
)

pytestmark = pytest.mark.integration

STEPS = 20
BN_STATS = ("running_mean", "running_var")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # in the session's base temp dir: test_failures.py uses the same shards
    return make_shards(tmp_path_factory.getbasetemp() / "digits-256x64", limit=256, shard_size=64)


def _dump_env(dump: Path) -> dict[str, str]:
    env = launch_env()
    env["INFOGAN_DUMP_STATE"] = str(dump)
    return env


def _is_bn_stat(name: str) -> bool:
    return name.split(" ")[0].rsplit(".", 1)[-1] in BN_STATS


def _bitwise_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                         skip_bn_stats: bool = False) -> list[str]:
    assert a.keys() == b.keys()
    return [n for n in a if not (skip_bn_stats and _is_bn_stat(n))
            and not (a[n].dtype == b[n].dtype and torch.equal(a[n], b[n]))]


def _assert_complete_state(state: dict[str, torch.Tensor], info: bool = True) -> None:
    """The dump really holds every kind of state tensor the property is about."""
    names = list(state)
    info_prefixes = ("optimizer_info[G.", "optimizer_info[D.") if info else ()
    for prefix in ("G.", "D.", "optimizer_D[D.", "optimizer_G[G.", *info_prefixes):
        assert any(n.startswith(prefix) for n in names), (prefix, names)
    for key in ("].exp_avg", "].exp_avg_sq", "].step"):
        assert any(key in n for n in names), key
    assert any(_is_bn_stat(n) for n in names)


# --- 1. ranks identical ------------------------------------------------------------------

@pytest.mark.parametrize("batchnorm,update", [
    ("sync", []), ("local", []),
    ("sync", ["train.update=paper", "loss.q_augment=1"]),  # two optimizers, 3 D forwards
    ("sync", ["model.ema_half_life_images=200"]),  # the EMA generator is compared too
    # Q on real images (and their moved copies, one more D forward): the marginal and the
    # joint all-reduced inside the D step (ranks.global_mean)
    ("sync", ["train.update=paper", "loss.extra={real_mi: 0.3, real_iic: 1.0}"]),
], ids=["sync", "local", "paper-q_augment", "ema", "paper-real_mi-real_iic"])
def test_ranks_bitwise_identical_after_training(shards, tmp_path, batchnorm, update):
    """2 ranks, 20 steps of the conv model (BatchNorm in G, D's trunk and the Q head):
    every parameter, buffer and Adam state tensor is bitwise equal on both ranks. With
    dist.batchnorm=local only the BN running statistics may differ (documented drift).
    The built-in checker runs every step (dist.check_every=1) and at both checkpoints."""
    dump = tmp_path / "dump"
    r = train("launch/cpu_ddp.yaml", "configs/smoke.yaml", f"data.shards={shards}",
              f"run.output_dir={tmp_path}", "run.name=sync", "model.arch=infogan_mnist",
              "model.width=0.125", f"train.max_steps={STEPS}", f"dist.batchnorm={batchnorm}",
              "dist.check_every=1", "log.images_every=0", *update, env=_dump_env(dump))
    assert "2 process(es)" in r.stdout
    s0, s1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    _assert_complete_state(s0, info="train.update=paper" not in update)
    if "model.ema_half_life_images=200" in update:
        assert any(n.startswith("G_ema.") for n in s0), "the EMA is not in the fingerprint"
    if "loss.extra={real_mi: 0.3, real_iic: 1.0}" in update:
        for key in ("mi/real/c1", "mi/iic/c1"):
            assert all(key in m for m in metrics(tmp_path / "sync")), f"no {key}: never ran"
    assert (tmp_path / "sync/checkpoints/step-00000020/COMPLETE").is_file()

    differ = _bitwise_differences(s0, s1, skip_bn_stats=batchnorm == "local")
    assert not differ, f"rank 1 differs from rank 0 in {len(differ)} tensors: {differ[:10]}"
    if batchnorm == "local":
        # The comparison has teeth: per-rank statistics of per-rank batches do drift.
        assert any(_is_bn_stat(n) for n in _bitwise_differences(s0, s1)), \
            "dist.batchnorm=local left identical BN running statistics on both ranks"


# --- 2 and 3. world-size invariance, two machines -----------------------------------------

def test_world_size_invariance_and_two_machines(shards, tmp_path):
    """train.global_batch_size=16, data.mode=memory, 20 steps of configs/smoke.yaml on
    1 rank, 2 ranks on one machine and 2 machines x 1 process: the generators of the
    step-20 checkpoints (BatchNorm running statistics included) were trained alike (all but
    1 element in 1,000 within 1e-5: tests.helpers.assert_trained_alike; measured
    2026-12-05 on an Intel Xeon: 1 element of 113,120 beyond 1e-6, 2.0e-6), and
    the two-machine run trained, checkpointed and kept its ranks bitwise identical."""
    common = (f"data.shards={shards}", f"run.output_dir={tmp_path}", "data.mode=memory",
              "train.global_batch_size=16", f"train.max_steps={STEPS}", "log.images_every=0")
    train("launch/cpu.yaml", "configs/smoke.yaml", *common, "run.name=one")
    train("launch/cpu_ddp.yaml", "configs/smoke.yaml", *common, "run.name=two",
          env=_dump_env(tmp_path / "dump_two"))
    outs = two_machines("configs/smoke.yaml", *common, "run.name=nodes",
                         env=_dump_env(tmp_path / "dump_nodes"))

    # 3. the two-machine run: both machines joined one 2-process group, trained, saved
    assert "2 process(es)" in outs[0] and "machine 0" in outs[0]
    assert "machine 1 on cpu" in outs[1], outs[1][-3000:]
    nodes = tmp_path / "nodes"
    for step in (10, 20):
        ck = nodes / "checkpoints" / f"step-{step:08d}"
        assert (ck / "COMPLETE").is_file() and (ck / "generator.safetensors").is_file()
        assert (ck / "random_states_0.pkl").is_file() and (ck / "random_states_1.pkl").is_file()
    assert [m["step"] for m in metrics(nodes)] == [5, 10, 15, 20]
    for run in ("dump_two", "dump_nodes"):
        s0 = load_file(str(tmp_path / run / "rank0.safetensors"))
        s1 = load_file(str(tmp_path / run / "rank1.safetensors"))
        assert not _bitwise_differences(s0, s1), run

    # 2. world-size invariance of the generator
    final = "checkpoints/step-00000020/generator.safetensors"
    gens = {name: load_file(str(tmp_path / name / final)) for name in ("one", "two", "nodes")}
    assert any(_is_bn_stat(k) for k in gens["one"])  # running statistics are compared too
    for name in ("two", "nodes"):
        assert_trained_alike(gens["one"], gens[name], f"{name} vs one rank: ")
    # the bound is meaningful: 10 steps of training move the generator far more than 1e-5
    g10 = load_file(str(tmp_path / "one/checkpoints/step-00000010/generator.safetensors"))
    moved = max((gens["one"][k].double() - g10[k].double()).abs().max().item() for k in g10)
    assert moved > 1e-3, moved


# --- 5. stream mode on 2 real ranks --------------------------------------------------------

# (samples, shard size, global batch, workers, shuffle buffer)
STREAM_CASES = {
    "even": (256, 32, 16, 0, 1000),  # 8 shards, 4 per rank: every sample fits in a batch
    "even_workers": (256, 32, 16, 2, 10),  # 2 DataLoader workers per rank, small buffer
    "uneven": (300, 64, 16, 2, 50),  # 64 x 4 + 44: ranks get 3 and 2 shards
}
EPOCHS = 2


def _stream_worker(rank: int, store: str, root: str) -> None:
    """One real rank: a StreamSource for (rank, world 2) over shards whose labels are the
    sample ids; gathers what every rank yields in each epoch and checks it (both ranks)."""
    torch.set_num_threads(1)
    # A child of mp.spawn inherits "spawn" for its own children; a torchrun worker (what
    # the trainer runs in) forks its DataLoader workers. Fork, as there (and fast).
    mp.set_start_method("fork", force=True)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                             timeout=datetime.timedelta(seconds=60))
    for case, (n, shard, batch, workers, buffer) in STREAM_CASES.items():
        index = read_index(f"{root}/{case}")
        src = StreamSource(index, rank=rank, world_size=2, global_batch=batch, seed=7,
                           num_workers=workers, shuffle_buffer=buffer)
        batches = iter(src)
        for epoch in range(EPOCHS):
            assert src.epoch == epoch
            planned = src.batches_per_epoch
            ids = []
            for _ in range(planned):
                images, labels = next(batches)
                assert images.shape == (batch // 2, 1, 4, 4) and labels.shape == (batch // 2,)
                assert torch.equal(images[:, 0, 0, 0], (labels % 251).to(torch.uint8))
                ids += labels.tolist()
            assert src.epoch == epoch + 1, "the planned batches did not end the epoch"
            gathered: list = [None, None]
            tdist.all_gather_object(gathered, (planned, ids))
            where = f"{case}, epoch {epoch}"
            # every rank yields the same number of batches
            assert gathered[0][0] == gathered[1][0] > 0, (where, gathered[0][0], gathered[1][0])
            per_rank = [set(g[1]) for g in gathered]
            # no sample twice, on a rank or across ranks
            for g in gathered:
                assert len(g[1]) == len(set(g[1])), f"{where}: a rank saw a sample twice"
            assert not per_rank[0] & per_rank[1], f"{where}: ranks shared samples"
            # ranks read disjoint shards
            shards = [{i // shard for i in s} for s in per_rank]
            assert not shards[0] & shards[1], f"{where}: ranks read shards {shards}"
            seen = per_rank[0] | per_rank[1]
            if case.startswith("even"):
                assert seen == set(range(n)), f"{where}: {n - len(seen)} samples not seen"
            else:  # the end-of-epoch remainder is dropped, nothing else
                plan = plan_epoch(index, 7, epoch, (), 2, batch // 2)
                assert planned == plan.batches == min(
                    sum(index.counts[i] for i in r) for r in plan.ranks) // (batch // 2)
                assert len(seen) == planned * batch
                for r in range(2):  # each rank read only from the shards planned for it
                    assert shards[r] <= set(plan.ranks[r]), (where, r, shards[r])
        batches.close()  # stops this epoch's DataLoader workers
    # torch 2.14: a process that used a gloo group aborts now and then in interpreter
    # teardown (SIGABRT, after all its work; see tests/unit/test_rank_check.py): a passing
    # child skips that teardown. A failing one never gets here; mp.spawn reports it.
    tdist.barrier()
    tdist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_stream_mode_two_ranks_disjoint_shards_each_sample_once(tmp_path):
    """data.mode=stream on 2 real gloo ranks, 2 epochs each of: 8 even shards (0 and 2
    workers) and 5 uneven shards. Labels are unique sample ids, image pixels encode them
    too. Ranks read disjoint shards, yield the same number of batches, never repeat a
    sample, and (even shards) see every sample exactly once per epoch."""
    for case, (n, shard, _batch, _workers, _buffer) in STREAM_CASES.items():
        ids = np.arange(n)
        images = np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None, None],
                                 (n, 1, 4, 4)).copy()
        write_shards(images, ids, tmp_path / case, shard_size=shard, source="sample ids",
                     num_classes=n)
    mp.spawn(_stream_worker, args=(str(tmp_path / "filestore"), str(tmp_path)), nprocs=2,
             join=True)
