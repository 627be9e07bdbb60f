"""Part `precisions`: configs/mnist.yaml in fp32, bf16 and fp16, finite losses."""

from __future__ import annotations

from .common import Ctx, PartFailed
from .throughput import PRECISIONS, trainer_point


def part_precisions(ctx: Ctx) -> dict:
    """configs/mnist.yaml at its batch (128) in fp32, bf16 and fp16: finite losses."""
    precs = PRECISIONS if ctx.gpu else ("bf16",)  # self-test: one run (start-up costs)
    batch = 128 if ctx.gpu else 16
    out, failures = {}, []
    for p in precs:
        try:
            pt = trainer_point(ctx, "configs/mnist.yaml", batch, p)
            out[p] = pt
            if not pt["finite"]:
                failures.append(f"{p}: non-finite {pt.get('nonfinite')}")
        except PartFailed as e:
            out[p] = {"error": str(e)[:2000]}
            failures.append(f"{p}: {str(e).splitlines()[0]}")
    if failures:
        raise PartFailed("; ".join(failures), out)
    return out
