"""Resident memory of holding a shard set the way memory mode and the disentanglement
scores do (a measurement of memory, not of time: a busy machine does not change it).

    .venv/bin/infogan prepare-data --out data/dsprites --sprites
    .venv/bin/python benchmarks/dsprites_memory.py data/dsprites [--factors]

Prints one JSON object: the process's RSS before and after a memory-mode load
(MemorySource, one process, its first batch drawn), the peak RSS of the forked decoding
processes, what is held (PackedImages for binary shards) and, with --factors, the RSS
after also decoding the shards with their factor classes (FactorImages.load, what
`infogan eval --disentanglement` and the metric hold).
"""

from __future__ import annotations

import argparse
import json
import resource

import psutil

from infogan_dist.data import MemorySource, read_index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shards")
    p.add_argument("--factors", action="store_true")
    args = p.parse_args()
    index = read_index(args.shards)
    proc = psutil.Process()
    before = proc.memory_info().rss
    source = MemorySource(index, rank=0, world_size=1, global_batch=64, seed=0)
    images, _ = next(iter(source))
    out = {"images": source.n, "held": type(source.images).__name__,
           "held_image_bytes": source.images.nbytes if hasattr(source.images, "nbytes")
           else source.images.numel(),
           "rss_before_mb": before / 1e6, "rss_after_memory_mode_mb": proc.memory_info().rss / 1e6,
           "peak_rss_decoding_children_mb":
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3,
           "batch": list(images.shape), "batch_dtype": str(images.dtype)}
    if args.factors:
        from infogan_dist.disentangle_eval import FactorImages

        held = FactorImages.load(args.shards).set
        out["rss_after_factor_images_mb"] = proc.memory_info().rss / 1e6
        out["factor_images_held_bytes"] = held.images.nbytes + held.factors.nbytes
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
