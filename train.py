"""Train InfoGAN. Thin entry point; the work is in infogan_dist.trainer.

    accelerate launch train.py          # the README's default recipe (configs/fashion_mnist.yaml)
    accelerate launch --config_file launch/cpu.yaml train.py --config configs/smoke.yaml
    accelerate launch --config_file launch/cpu_ddp.yaml train.py --config configs/mnist.yaml \
        data.shards=data/mnist/train train.max_steps=5000
    accelerate launch --config_file launch/gpu.yaml train.py --config configs/mnist.yaml \
        train.precision=bf16
    accelerate launch --config_file launch/multi_gpu.yaml --num_processes 8 train.py \
        --config configs/mnist.yaml
    python train.py --config configs/mnist.yaml --dry-run     # print the resolved config

Exit status: 0 finished or stopped on request (checkpoint saved); 2 bad config, data or
checkpoints (one-line error, before any process group starts where possible); 1 training
diverged past train.nonfinite, a full disk (one line), or anything else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from torch.distributed.elastic.multiprocessing.errors import record

from infogan_dist.checkpoint import CheckpointError
from infogan_dist.config import ConfigError, load_config
from infogan_dist.data import ShardError
from infogan_dist.guard import TrainingFailed

DEFAULT_CONFIG = "configs/fashion_mnist.yaml"
# What makes the default recipe's data, for the one-line error when it is missing.
DEFAULT_DATA_COMMAND = "make data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=None,
                   help=f"YAML file under configs/ (default: {DEFAULT_CONFIG}, the README's "
                        "default recipe)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=100")
    return p.parse_args(argv)


@record  # torchrun prints this rank's traceback in its failure summary
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    default = args.config is None
    try:
        cfg = load_config(Path(__file__).parent / DEFAULT_CONFIG if default else args.config,
                          args.overrides)
        if args.dry_run:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        if default and not (Path(cfg.data.shards) / "index.json").exists():
            raise ConfigError(
                f"the default recipe ({DEFAULT_CONFIG}) trains on data.shards="
                f"{cfg.data.shards}, which is not there yet; make it with: "
                f"{DEFAULT_DATA_COMMAND} (or pass --config and data.shards=...)")
        from infogan_dist.preflight import preflight

        index = preflight(cfg)
    except (ConfigError, ShardError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    from infogan_dist.trainer import Trainer

    try:
        Trainer(cfg, index).fit()
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except TrainingFailed as e:  # diverged past train.nonfinite, or a full disk
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
