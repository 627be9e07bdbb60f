"""Golden loss traces: a refactor must not move the numbers unseen.

20-step runs on one rank, every step logged: `configs/smoke.yaml` (seed MLP, three
optimizers) and `configs/mnist.yaml` at model.width=0.25 (paper conv nets, paper update,
loss.q_augment), without and with loss.extra.real_iic (at weight 2, not the config's 1).
Their `loss/D`, `loss/G`, `loss/info` and `mi/c1` are compared with tests/assets/losses/
(the cases, the layout and the tolerance: tests/golden.py).

On a CPU type with a recorded set: bitwise. One CPU process with OMP_NUM_THREADS=1
(tests/helpers.py) runs the same kernels in the same order every time on one machine
type, and every random draw is keyed by (seed, step), so equal code gives equal floats.
Another CPU type runs other float kernels (torch dispatches on its SIMD level, MKL also on
the vendor) and differs in the last bits from some step on, so each type has its own set.

On a CPU type without one: within the measured cross-type tolerance of the nearest
recorded type (tests/golden.py states it), and a warning says which type ran, that it is
not pinned, and the command that pins it. A CI machine of a new type never fails for its
kernels, and a numeric change larger than other kernels' rounding still fails.

A deliberate numeric change (another Adam implementation, another summation order) moves
the traces: re-record in a commit of its own that names the change, on every CPU type it
can reach, with `INFOGAN_RECORD_GOLDEN=1 pytest tests/integration/test_golden.py` (writes
this type's set, tests/assets/losses/<cpu type>/).
"""

from __future__ import annotations

import json
import os
import warnings

import pytest

from tests.golden import (
    ASSET,
    ASSETS,
    CASES,
    RECORD_COMMAND,
    SAFETY,
    cpu_kernels,
    envelope,
    golden_shards,
    machine,
    read_trace,
    recorded_types,
    run_case,
    worst_ratio,
    write_trace,
)
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return golden_shards(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_trace(name, digits, tmp_path):
    got = run_case(name, digits, tmp_path)
    assert [r["step"] for r in got] == list(range(1, 21))
    kind = cpu_kernels()
    own = ASSETS / kind
    if os.environ.get("INFOGAN_RECORD_GOLDEN") and name not in ASSET:
        write_trace(own / f"{name}.json", got)
        (own / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")
    types = recorded_types()
    if kind in types:
        want = read_trace(own, name)
        asset = (own / f"{ASSET.get(name, name)}.json").relative_to(ROOT)
        for g, w in zip(got, want, strict=True):
            assert g == w, (f"{name}: step {w['step']} moved: got {g}, pinned {w} "
                            f"({asset}; this CPU: {kind})")
        return
    env = envelope(name)
    ratios = {t: worst_ratio(got, read_trace(d, name), env) for t, d in types.items()}
    nearest = min(ratios, key=lambda t: ratios[t][0])
    worst, where = ratios[nearest]
    warnings.warn(
        f"golden {name}: this CPU type ({kind}) has no pinned traces, so it was compared "
        f"with the nearest recorded type, {nearest}, within the measured cross-type "
        f"tolerance ({SAFETY:g}x the widest spread; {worst:.2f} of it used). Pin it bitwise: "
        f"{RECORD_COMMAND}", stacklevel=1)
    assert worst <= 1.0, (
        f"{name}: outside the cross-type tolerance of every recorded CPU type (nearest "
        f"{nearest}: {where}; this CPU: {kind}, not pinned; recorded: {', '.join(types)})")
