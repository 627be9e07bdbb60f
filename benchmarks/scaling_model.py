r"""A scaling model on paper: weak-scaling efficiency at 8, 64 and 512 GPUs from the
collectives a step issues (counted by benchmarks/collectives.py) and an assumed compute
time per step. It computes; it measures nothing.

    .venv/bin/python benchmarks/collectives.py --config configs/mnist.yaml \
        --json /tmp/counts_mnist.json data.shards=data/mnist/test10k
    .venv/bin/python benchmarks/scaling_model.py mnist=/tmp/counts_mnist.json:4.0 \
        smoke=/tmp/counts_smoke.json:1.5

Each argument is name=COUNTS.json:COMPUTE_MS (the step's compute time on one GPU at the
config's per-GPU batch, in ms). The counts are per step and per rank; they do not depend
on the number of ranks except the all_gather of CrossRankBatchNorm, whose received bytes
grow with it (n x what one rank sends), which the model accounts for.

Collective time (NCCL ring, alpha-beta model; nccl-tests' "bus bandwidth" convention):
  all_reduce(b bytes, n ranks)  = L(n) + 2 (n-1)/n * b / BW(n)
  all_gather(b per rank, n)     = L(n) + (n-1)/n * n b / BW(n)
  broadcast and the rest        = L(n) + b / BW(n)
Assumed figures (typical published nccl-tests results for H100 systems; replace them by
nccl-tests on the target cluster, `--latency-us`/`--busbw-gbs`):
  n = 8    one node, NVLink/NVSwitch:       L = 15 us, BW = 360 GB/s bus bandwidth
  n = 64   8 nodes, 400 Gb/s NIC per GPU:   L = 35 us, BW = 40 GB/s (50 GB/s line rate, 80%)
  n = 512  64 nodes, same fabric:           L = 70 us, BW = 40 GB/s (tree/ring latency grows)
The small-message latency L covers NCCL's launch, protocol and hop latencies; it is what
a launch-bound step of small networks pays per collective. Collectives are charged in
full (no overlap with compute): BatchNorm's sit on the critical path of the forward and
backward by construction; DDP's gradient buckets could overlap the backward, so the
model is pessimistic for them (a second column hides them behind the backwards, taken
as 2/3 of the compute).

    efficiency(n) = compute / (compute + communication(n))
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FABRIC = {8: (15e-6, 360e9), 64: (35e-6, 40e9), 512: (70e-6, 40e9)}  # n: (L s, BW B/s)
BACKWARD = 2 / 3  # share of a step's compute in backwards, which bucket all-reduces overlap
SITES = ("ddp_grads", "batchnorm", "stop", "metrics", "rank_check", "other")


def collective_s(op: str, nbytes: float, n: int, latency: float, busbw: float) -> float:
    if op == "all_reduce":
        return latency + 2 * (n - 1) / n * nbytes / busbw
    if op in ("all_gather", "all_gather_into_tensor"):
        return latency + (n - 1) / n * n * nbytes / busbw
    return latency + nbytes / busbw


def step_comm_s(steady: dict, n: int, latency: float, busbw: float
                ) -> dict[str, float]:
    """Seconds per step by site. `steady` has keys site.op/calls and site.op/bytes."""
    out = dict.fromkeys(SITES, 0.0)
    for key, calls in steady.items():
        if not key.endswith("/calls") or "." not in key:
            continue
        site, op = key[:-len("/calls")].split(".", 1)
        if not calls:
            continue
        per_call = steady.get(f"{site}.{op}/bytes", 0) / calls
        out[site] += calls * collective_s(op, per_call, n, latency, busbw)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="name=COUNTS.json:COMPUTE_MS")
    p.add_argument("--kind", default="steady", help="which steps of the counts (steady, log)")
    args = p.parse_args(argv)
    print("| config | compute ms | GPUs | collectives/step | MB/step | BN ms | grads ms | "
          "other ms | efficiency | efficiency, grads hidden |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for spec in args.configs:
        name, rest = spec.split("=", 1)
        path, compute_ms = rest.rsplit(":", 1)
        steady = json.loads(Path(path).read_text())["summary"][args.kind]
        compute = float(compute_ms) / 1e3
        calls = sum(steady.get(f"{s}/calls", 0) for s in SITES)
        mbytes = sum(steady.get(f"{s}/bytes", 0) for s in SITES) / 1e6
        for n, (latency, busbw) in FABRIC.items():
            t = step_comm_s(steady, n, latency, busbw)
            total = sum(t.values())
            rest_s = total - t["batchnorm"] - t["ddp_grads"]
            eff = compute / (compute + total)
            hidden = compute / (compute + total - min(t["ddp_grads"], BACKWARD * compute))
            print(f"| {name} | {compute_ms} | {n} | {calls:g} | {mbytes:.2f} | "
                  f"{1e3 * t['batchnorm']:.2f} | {1e3 * t['ddp_grads']:.2f} | "
                  f"{1e3 * rest_s:.3f} | {eff:.2f} | {hidden:.2f} |")


if __name__ == "__main__":
    main()
