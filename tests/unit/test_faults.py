"""faults.poison_grads (INFOGAN_FAULT=overflow_<phase>:<rank>:<step>), and what
Accelerate's shared GradScaler does with the inf it makes: checked on CPU with a CPU
GradScaler inside Accelerate's own AcceleratedOptimizer, the same step/update code that
runs under fp16 on a GPU (tests/gpu/ checks it through the trainer)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState

from infogan_dist import faults


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """A fault fires once per process; every test here stands for a fresh process."""
    monkeypatch.setattr(faults, "_fired", False)

def _model_and_opt(seed: int = 0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    return m, torch.optim.Adam(m.parameters(), lr=1e-2)


def _backward(m: torch.nn.Module, scaler: torch.amp.GradScaler | None = None) -> None:
    loss = m(torch.ones(2, 4)).sum()
    (scaler.scale(loss) if scaler is not None else loss).backward()


@pytest.mark.parametrize("spec", [None, "overflow_G:0:3", "overflow_D:1:3", "overflow_D:0:4",
                                  "raise:0:3"])
def test_poison_grads_is_a_no_op_unless_phase_rank_and_step_match(monkeypatch, spec):
    if spec is None:
        monkeypatch.delenv("INFOGAN_FAULT", raising=False)
    else:
        monkeypatch.setenv("INFOGAN_FAULT", spec)
    m, opt = _model_and_opt()
    _backward(m)
    before = [p.grad.clone() for p in m.parameters()]
    assert faults.poison_grads("D", opt, rank=0, step=3) is False
    for p, g in zip(m.parameters(), before, strict=True):
        assert torch.equal(p.grad, g)


def test_poison_grads_fills_the_first_gradient_with_inf(monkeypatch):
    monkeypatch.setenv("INFOGAN_FAULT", "overflow_D:0:3")
    m, opt = _model_and_opt()
    _backward(m)
    first, *rest = list(m.parameters())
    rest_before = [p.grad.clone() for p in rest]
    assert faults.poison_grads("D", opt, rank=0, step=3) is True
    assert torch.isinf(first.grad).all()
    for p, g in zip(rest, rest_before, strict=True):
        assert torch.equal(p.grad, g)


def test_poison_grads_without_any_gradient_says_so(monkeypatch):
    monkeypatch.setenv("INFOGAN_FAULT", "overflow_info:0:1")
    _, opt = _model_and_opt()
    with pytest.raises(RuntimeError, match="no gradient"):
        faults.poison_grads("info", opt, rank=0, step=1)


def test_other_faults_ignore_overflow_specs(monkeypatch):
    monkeypatch.setenv("INFOGAN_FAULT", "overflow_D:0:3")
    faults.inject("step", 0, 3)  # neither raises nor kills
    faults.inject("save", 0, 3)


@pytest.fixture
def accelerator_state():
    """AcceleratedOptimizer needs an initialized Accelerate state; leave none behind."""
    Accelerator(cpu=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_shared_scaler_skips_exactly_the_poisoned_optimizer_and_halves_the_scale(
        monkeypatch, accelerator_state):
    """Two phases sharing one GradScaler, each strictly zero_grad -> backward -> step
    (AcceleratedOptimizer.step = scaler.step + scaler.update), as in the trainer under
    fp16. Poisoning phase D: D's parameters and Adam state stay as they were, its
    step_was_skipped is True, the scale halves once (65536 -> 32768) before G's backward;
    G steps normally with the halved scale; the next step is normal again."""
    monkeypatch.setenv("INFOGAN_FAULT", "overflow_D:0:2")
    scaler = torch.amp.GradScaler("cpu")  # defaults, as Accelerate creates it for fp16
    d, d_opt = _model_and_opt(0)
    g, g_opt = _model_and_opt(1)
    phases = {"D": (d, AcceleratedOptimizer(d_opt, scaler=scaler)),
              "G": (g, AcceleratedOptimizer(g_opt, scaler=scaler))}
    log = []
    for step in (1, 2, 3):
        for name, (m, opt) in phases.items():
            opt.zero_grad(set_to_none=True)
            _backward(m, scaler)  # as accelerator.backward: scaler.scale(loss).backward()
            faults.poison_grads(name, opt, rank=0, step=step)
            params = [p.detach().clone() for p in m.parameters()]
            opt.step()
            changed = any(not torch.equal(a, p) for a, p in zip(params, m.parameters(),
                                                                strict=True))
            log.append((step, name, opt.step_was_skipped, scaler.get_scale(), changed))
    assert log == [
        (1, "D", False, 65536.0, True), (1, "G", False, 65536.0, True),
        (2, "D", True, 32768.0, False), (2, "G", False, 32768.0, True),
        (3, "D", False, 32768.0, True), (3, "G", False, 32768.0, True),
    ]
    # the skipped D step left Adam's step count behind G's
    assert d_opt.state[next(iter(d.parameters()))]["step"].item() == 2
    assert g_opt.state[next(iter(g.parameters()))]["step"].item() == 3


def test_a_fault_armed_in_the_fault_file_fires_once_on_its_rank_and_site(monkeypatch, tmp_path):
    """INFOGAN_FAULT_FILE (the soak arms faults in a running job with it): the matching
    rank and site claim the file (renamed .fired) and fire; nothing fires after that."""
    armed = tmp_path / "fault"
    monkeypatch.setenv("INFOGAN_FAULT_FILE", str(armed))
    monkeypatch.delenv("INFOGAN_FAULT", raising=False)
    armed.write_text("raise:1:*\n")
    faults.inject("step", 0, 7)  # another rank
    faults.inject("save", 1, 7)  # another site
    assert armed.exists()
    with pytest.raises(RuntimeError, match="on rank 1 at step 7"):
        faults.inject("step", 1, 7)
    assert not armed.exists() and (tmp_path / "fault.fired").exists()
    faults.inject("step", 1, 8)  # claimed: fires no more
    armed.write_text("raise:1:9\n")
    faults.inject("step", 1, 8)  # another step
    with pytest.raises(RuntimeError):
        faults.inject("step", 1, 9)
