r"""Latency of one small collective on this machine: 2 gloo processes over loopback.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gloo_latency.py --iters 2000

Times `all_reduce` of a tensor of --floats floats (default 64: a BatchNorm layer's
statistics) back to back, and the same interleaved with --compute-ms of matrix products
between collectives (as in a training step, where the peer may still be computing and
the waiting process sleeps). Prints the median and 10th/90th percentiles per call on rank
0. What it answers: how much of the 2-rank step of configs/smoke.yaml (17 collectives) is
the collectives' own latency on this machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _busy(ms: float, a: torch.Tensor) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        a @ a


def _worker(rank: int, port: int, args: argparse.Namespace, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, a = torch.ones(args.floats), torch.randn(64, 64)
    results = {}
    for name, compute in (("back to back", 0.0), (f"after {args.compute_ms} ms compute",
                                                   args.compute_ms)):
        for _ in range(50):
            dist.all_reduce(x)
        times = []
        for _ in range(args.iters):
            if compute:
                _busy(compute, a)
            t0 = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - t0)
        results[name] = times
    if rank == 0:
        out.put(results)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--floats", type=int, default=64)
    p.add_argument("--compute-ms", type=float, default=1.0)
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, args, out)) for r in (0, 1)]
    for proc in procs:
        proc.start()
    results = out.get()
    for proc in procs:
        proc.join()
    print(f"# torch {torch.__version__}, gloo, 2 processes on {os.cpu_count()} cores, "
          f"{args.floats} floats, {args.iters} calls; load average {os.getloadavg()[0]:.2f}")
    for name, times in results.items():
        q = statistics.quantiles(times, n=10)
        print(f"{name:24s} median {1e6 * statistics.median(times):7.0f} us  "
              f"p10 {1e6 * q[0]:7.0f}  p90 {1e6 * q[-1]:7.0f}")


if __name__ == "__main__":
    main()
