r"""Images per second of the data loader alone (no model), as one rank of a 1-rank run.

    infogan prepare-data --out /tmp/fmnist/train --images \
        /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz --labels \
        /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
    python benchmarks/loader.py --shards /tmp/fmnist/train --mode memory --batch 128 --seconds 10
    python benchmarks/loader.py --shards /tmp/fmnist/train --mode stream --workers 2 --seconds 10
    python benchmarks/loader.py --shards s3://bucket/fmnist/train --mode stream --workers 2
    python benchmarks/loader.py --shards https://host/fmnist/train --mode stream --workers 2 \
        --cache-dir /tmp/shard-cache

Remote shards (s3://, http(s)://) read with the standard AWS credential chain and
AWS_ENDPOINT_URL_S3 (or --s3-endpoint-url); --cache-dir turns on the node cache (run twice
to time a warm cache; delete the directory for a cold one).

Memory mode also reports its one-off decode time. Batches are moved to --device (default
cuda when present) as the trainer would; the timed loop waits for the device at the end.
"""

from __future__ import annotations

import argparse
import time

import torch

from infogan_dist.config import DataConfig
from infogan_dist.data import open_source, read_index, stores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", required=True, help="shard dir with index.json, or a pattern")
    p.add_argument("--mode", choices=["memory", "stream"], default="memory")
    p.add_argument("--batch", type=int, default=128, help="images per batch")
    p.add_argument("--workers", type=int, default=0, help="stream mode: DataLoader workers")
    p.add_argument("--shuffle-buffer", type=int, default=1000, help="stream mode: block size")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the timed loop")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache-dir", default="", help="remote shards: node cache dir (off: '')")
    p.add_argument("--s3-endpoint-url", default="", help="S3-compatible store (or env vars)")
    args = p.parse_args()

    cfg = DataConfig(shards=args.shards, mode=args.mode, num_workers=args.workers,
                     shuffle_buffer=args.shuffle_buffer, cache_dir=args.cache_dir,
                     s3_endpoint_url=args.s3_endpoint_url)
    stores.configure(cfg)
    index = read_index(args.shards)
    t0 = time.perf_counter()
    source = open_source(cfg, index, rank=0, world_size=1, global_batch=args.batch, seed=0,
                         device=args.device)
    setup = time.perf_counter() - t0
    it = iter(source)
    for _ in range(3):  # warm-up: worker start, first shard open, CUDA context
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        images, labels = next(it)
        images = images.to(args.device, non_blocking=True)  # no-op in memory mode
        n += images.shape[0]
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    it.close()
    extra = f", {args.workers} workers" if args.mode == "stream" else ""
    if args.cache_dir:
        extra += f", cache {args.cache_dir}"
    print(f"{args.mode} mode ({index.total} images {list(index.image_shape)} in "
          f"{len(index.paths)} shards, batch {args.batch}{extra}, device {args.device}): "
          f"{n / elapsed:,.0f} images/s over {elapsed:.1f} s; setup {setup:.2f} s")


if __name__ == "__main__":
    main()
