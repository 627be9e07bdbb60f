"""The `infogan` console script. Each subcommand lives in the module that does the work;
that module's `register(subparsers)` adds the parser and sets `func`.

Only the module of the command being run is imported: `infogan --help` imports no torch
and answers at once, and `infogan sample` does not pay for what `infogan eval` imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import redact
from .errors import EX_TEMPFAIL, Outage

# command -> (module that registers and runs it, its one-line help), in --help order. The
# help is repeated here so that listing the commands imports none of them; a unit test
# checks it against what each module registers.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("infogan_dist.data.prepare",
                     "write webdataset shards + index.json from IDX files, torchvision, a folder "
                     "or dSprites"),
    "eval": ("infogan_dist.evaluate",
             "score a checkpoint's codes: unsupervised accuracy, MI bounds, traversal pictures"),
    "sample": ("infogan_dist.sample",
               "save a grid of generated images; fix codes (--fix c1=3) or sweep one (--sweep)"),
    "train-features": ("infogan_dist.features",
                       "train the small classifier whose features FID/KID use (--features DIR)"),
    "explore": ("infogan_dist.explore",
                "serve a web page to turn a checkpoint's codes and watch the image follow"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command`'s full sub-parser (its module imported) and a stub, name
    and help only, for every other command."""
    parser = argparse.ArgumentParser(
        prog="infogan",
        description="InfoGAN trainer tools (training itself: accelerate launch train.py)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Our errors are one-line and name the file/key; no traceback for bad input.
        print(f"infogan {args.command}: error: {redact.text(str(e))}", file=sys.stderr)
        return 2
    except Outage as e:  # a store stayed unreachable: try again later, not bad input
        print(f"infogan {args.command}: error: {redact.text(str(e))}; an outage: run it "
              f"again when the store is back (exit {EX_TEMPFAIL})", file=sys.stderr)
        return EX_TEMPFAIL
    except OSError as e:  # a path the system refuses (read-only, no permission, full, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"infogan {args.command}: error: {redact.text(where + (e.strerror or str(e)))}"
              "; choose another path or fix its file system", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
