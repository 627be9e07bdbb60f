"""The `infogan` console script. Each subcommand lives in the module that does the work;
that module's `register(subparsers)` adds the parser and sets `func`."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import redact

# module path of each subcommand, in --help order
SUBCOMMANDS = ["infogan_dist.data.prepare", "infogan_dist.evaluate", "infogan_dist.sample",
               "infogan_dist.features"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infogan",
        description="InfoGAN trainer tools (training itself: accelerate launch train.py)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Our errors are one-line and name the file/key; no traceback for bad input.
        print(f"infogan {args.command}: error: {redact.text(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refuses (read-only, no permission, full, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"infogan {args.command}: error: {redact.text(where + (e.strerror or str(e)))}"
              "; choose another path or fix its file system", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
