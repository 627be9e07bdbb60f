"""Train InfoGAN. Thin entry point; the work is in infogan_dist.trainer.

    accelerate launch train.py          # the default recipe (configs/fashion_mnist.yaml)
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
diverged past train.nonfinite, a full disk or a file system that refuses writes (one
line), a collective timed out (one line), or anything else; 75 (EX_TEMPFAIL) an outage: a
store (S3, HTTP) stayed unreachable past data.retry_s (one line, and <run dir>/OUTAGE for
slurm/infogan.sh, which requeues the job).
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import os
import sys
import time
from pathlib import Path

from infogan_dist import console, startup, stop  # first: stop notes the launcher before torch

stop.install()  # SIGTERM/SIGINT/SIGUSR1 are stop requests from here on
stop.watch_launcher()  # and so is the launcher going away
console.keep_writing()  # and a reader of our output that went with it is no reason to die

from torch.distributed.elastic.multiprocessing.errors import record  # noqa: E402

from infogan_dist import redact  # noqa: E402
from infogan_dist.checkpoint import CheckpointError  # noqa: E402
from infogan_dist.choices import load_config  # noqa: E402
from infogan_dist.config import Config, ConfigError  # noqa: E402
from infogan_dist.config.load import dump_config  # noqa: E402
from infogan_dist.data import ShardError  # noqa: E402
from infogan_dist.errors import EX_TEMPFAIL, Outage  # noqa: E402
from infogan_dist.guard import TrainingFailed  # noqa: E402

DEFAULT_CONFIG = "configs/fashion_mnist.yaml"
OUTAGE_FILE = "OUTAGE"  # <run dir>/OUTAGE: the last segment ended in an outage (exit 75)
# What makes the default recipe's data, for the one-line error when it is missing.
DEFAULT_DATA_COMMAND = "make data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=None,
                   help=f"YAML file under configs/ (default: {DEFAULT_CONFIG}, the "
                        "default recipe)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=100")
    return p.parse_args(argv)


# errors of a file system that refuses writes mid-run (not a bug of ours, not bad input)
WRITE_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
# gloo's words when the other end of a collective went away (compared in lower case)
PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe")
# ... and when a collective waited past dist.timeout_s (a blocking call says "timed out
# waiting Nms", the wait() of an asynchronous one "application timeout caused pair
# closure"; the store of a rendezvous "timed out after")
TIMED_OUT = ("timed out waiting", "application timeout caused pair closure", "timed out after")


def report(e: BaseException | str, kind: str | None = None) -> None:
    """The one `error:` line, on stderr and in torchrun's error file; URL credentials
    masked (redact.py)."""
    message = redact.text(str(e))
    print(f"error: {message}", file=sys.stderr, flush=True)
    record_for_launcher(f"{kind or type(e).__name__}: {message}")


def outage(e: Outage, cfg: Config) -> int:
    """A store stayed unreachable: one line, <run dir>/OUTAGE (what slurm/infogan.sh reads:
    a launcher turns every worker's status into 1), exit 75."""
    message = (f"{e}; an outage, not bad input: launch again when the store is back "
               f"(exit {EX_TEMPFAIL}; slurm/infogan.sh requeues the job by itself)")
    report(message, "Outage")
    try:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / OUTAGE_FILE).write_text(redact.text(message) + "\n")
    except OSError:
        pass  # the run directory is unwritable too: the status still says it
    return EX_TEMPFAIL


def record_for_launcher(message: str) -> None:
    """Write our one-line error where torchrun looks for a worker's error
    ($TORCHELASTIC_ERROR_FILE, in the format of torch's ErrorHandler.record_exception),
    so its failure summary shows the line instead of "error_file: <N/A>"."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        data = {"message": {"message": message, "extraInfo": {
            "py_callstack": message, "timestamp": str(int(time.time()))}}}
        with open(path, "w") as f:
            json.dump(data, f)


def disk_full_message(e: OSError, run_dir: Path) -> str:
    """One line for a write that found the disk full outside a checkpoint save (which
    says so itself): metrics, pictures, W&B's files, the node cache. Checkpoints are
    written whole or not at all, so the newest complete one is what a resume uses."""
    from infogan_dist.checkpoint import CheckpointError, list_checkpoints

    target = e.filename2 if getattr(e, "filename2", None) else e.filename
    where = f" (writing {target})" if target else f" (run directory {run_dir})"
    try:
        good = list_checkpoints(run_dir)[0]
    except (CheckpointError, OSError):
        good = []
    kept = good[-1].name if good else "(none yet)"
    return (f"{'disk quota exceeded' if e.errno == errno.EDQUOT else 'no space left on the device'}"
            f"{where}; newest checkpoint {kept} kept; free space, then launch again "
            "(train.resume=auto continues from it)")


@record  # torchrun prints this rank's traceback in its failure summary
def main(argv: list[str] | None = None) -> int:
    startup.mark("interpreter and imports")
    args = parse_args(argv)
    default = args.config is None
    try:
        cfg = load_config(Path(__file__).parent / DEFAULT_CONFIG if default else args.config,
                          args.overrides)
        # What W&B (and anything else) records of the command line: credentials masked.
        sys.argv[:] = [redact.text(a) for a in sys.argv]
        if args.dry_run:
            print(dump_config(cfg), end="")
            return 0
        if default and not (Path(cfg.data.shards) / "index.json").exists():
            raise ConfigError(
                f"the default recipe ({DEFAULT_CONFIG}) trains on data.shards="
                f"{cfg.data.shards}, which is not there yet; make it with: "
                f"{DEFAULT_DATA_COMMAND} (or pass --config and data.shards=...)")
        from infogan_dist.preflight import preflight

        index = preflight(cfg)
        startup.mark("checks")
    except (ConfigError, ShardError, CheckpointError) as e:
        report(e)
        return 2
    except Outage as e:
        return outage(e, cfg)
    from infogan_dist import runlock
    from infogan_dist.trainer import Trainer

    startup.mark("trainer imports")
    lock = None
    try:
        if int(os.environ.get("RANK", "0")) == 0:  # the main process holds the run lock
            lock, warnings = runlock.acquire(cfg.run_dir)
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr, flush=True)
            (cfg.run_dir / OUTAGE_FILE).unlink(missing_ok=True)  # an earlier segment's
        # ShardError: a bad image or tar met while decoding (memory mode, at start) or
        # streaming (stream mode, any step); one line naming shard and member.
        Trainer(cfg, index).fit()
    except (CheckpointError, ShardError, runlock.RunLockError) as e:
        report(e)
        return 2
    except TrainingFailed as e:  # diverged past train.nonfinite, or a full disk
        report(e)
        return 1
    except Outage as e:  # a store stayed down past data.retry_s (stream mode: any step)
        return outage(e, cfg)
    except OSError as e:
        # The file system of a write refused it mid-run (full, read-only after an error,
        # a quota, an I/O error): a save already says so itself (TrainingFailed); the
        # other writes (metrics, pictures, the lock, W&B's files, the node cache) say it
        # here, in one line.
        if e.errno not in WRITE_REFUSED:
            raise
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            report(disk_full_message(e, cfg.run_dir), "OSError")
            return 1
        where = e.filename or f"into the run directory {cfg.run_dir}"
        report(f"cannot write {where}: {e.strerror}; the last complete checkpoint is kept: "
               "free space or repair the file system, then launch again (train.resume=auto "
               "continues from it)", "WriteRefused")
        return 1
    except RuntimeError as e:
        text = " ".join(str(e).split())
        low, rank = text.lower(), os.environ.get("RANK", "0")
        if any(s in low for s in PEER_GONE):
            # Another rank ended (its own error, e.g. a bad shard, is printed above) while
            # this one waited in a collective: one line, not a second traceback.
            gone = text[min(low.find(s) for s in PEER_GONE if s in low):].split(". ")[0]
            print(f"error: rank {rank}: another rank ended while this one waited for it "
                  f"(gloo: {gone}); the cause is that rank's error", file=sys.stderr, flush=True)
            return 1
        if any(s in low for s in TIMED_OUT):
            # A rank is stuck (or far slower): this one waited dist.timeout_s for it.
            said = text[min(low.find(s) for s in TIMED_OUT if s in low):].split(". ")[0]
            message = (
                f"rank {rank}: a collective waited longer than dist.timeout_s="
                f"{cfg.dist.timeout_s} s for another rank ({said}); that rank is hung or far "
                "slower (a stuck data read or file system, an overloaded machine): see its "
                "output; then launch again (train.resume=auto continues from the newest "
                "checkpoint), with a larger dist.timeout_s if the ranks are only slow")
            report(message, "CollectiveTimeout")
            return 1
        raise
    finally:
        if lock is not None:
            lock.release()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        # Leaving the interpreter collects every object the imports made (torch and the
        # rest: millions), seconds of CPU during which a failed rank's peers wait for its
        # sockets to close and torchrun for its exit before a restart. Nothing left needs
        # collecting: frozen objects are skipped by that last collection (atexit still runs).
        gc.freeze()
    sys.exit(code)
