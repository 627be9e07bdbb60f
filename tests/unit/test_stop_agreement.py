"""`ranks.StopAgreement` on two real gloo processes: a request seen by one rank at step
s is agreed by both ranks at step s + 1 (the asynchronous all-reduce started at s is
read at s + 1), never earlier and never by one rank alone; with one process it is
immediate. Also: CrossRankBatchNorm issues exactly one collective per forward and one
per backward (counted by wrapping torch.distributed in the child)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist

from infogan_dist import ranks
from infogan_dist.ranks import CrossRankBatchNorm
from tests.unit.test_rank_check import _finish, _init, _spawn

REQUEST_STEP = {0: None, 1: 3}  # rank 1 sees a request at step 3


def _agreement_worker(rank: int, store: str) -> None:
    _init(rank, store)
    agreement = ranks.StopAgreement()
    seen = []
    for step in range(1, 7):
        seen.append(agreement.poll(step == REQUEST_STEP[rank]))
    agreement.drain()
    assert seen == [False, False, False, True, False, False], (rank, seen)

    # one collective per CrossRankBatchNorm forward and one per backward
    calls = []
    wrapped = {n: getattr(tdist, n) for n in ("all_reduce", "all_gather")}
    for name, fn in wrapped.items():
        setattr(tdist, name, lambda *a, _fn=fn, _n=name, **k: calls.append(_n) or _fn(*a, **k))
    bn = CrossRankBatchNorm(4)
    x = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(rank),
                    requires_grad=True)
    y = bn(x)
    assert calls == ["all_gather"], calls
    (y * y).sum().backward()
    assert calls == ["all_gather", "all_reduce"], calls
    for name, fn in wrapped.items():
        setattr(tdist, name, fn)
    _finish()


@pytest.mark.integration  # two real processes over gloo (a few seconds)
def test_stop_is_agreed_one_step_later_on_every_rank(tmp_path):
    _spawn(_agreement_worker, tmp_path)


def test_one_process_agrees_at_once():
    agreement = ranks.StopAgreement()
    assert [agreement.poll(s == 2) for s in range(4)] == [False, False, True, False]


def test_a_stop_directory_is_a_request_and_no_traceback(tmp_path, capsys):
    """Issue 29: STOP made as a directory stopped the run, then deleting it raised
    IsADirectoryError (a traceback at start, or at the end after the stop checkpoint)."""
    import os

    from infogan_dist.stop import StopRequest

    stop_dir = tmp_path / "STOP"
    (stop_dir / "inside").mkdir(parents=True)
    request = StopRequest(stop_dir, is_main=True)
    assert request.local()  # anything named STOP asks to stop
    request.clear_file()  # not ours to delete: kept, with a warning
    assert stop_dir.is_dir() and "is a directory, not a STOP file" in capsys.readouterr().err
    os.rmdir(stop_dir / "inside")
    os.utime(stop_dir, (0, 0))  # left by an earlier segment
    request.clear_stale_file()  # an empty directory holds nothing: removed
    assert not stop_dir.exists()
