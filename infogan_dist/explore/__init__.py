"""`infogan explore`: a web page to turn a checkpoint's codes and watch the image follow.

    infogan explore runs/quickstart
    infogan explore runs/mnist/checkpoints/step-00005000 --port 8001
    infogan explore runs/mnist --host 0.0.0.0 --port 8000   # other machines too

Serves the newest complete checkpoint of RUN_DIR (or the CHECKPOINT named) at
http://127.0.0.1:PORT/: a slider per continuous code, a picker per categorical code
(labelled with the label `infogan eval`'s mapping gives each category, from the run's
data.eval_shards), the noise seed, the EMA/raw generator switch, a traversal of one code
over several noises, and the `infogan sample` command that writes the same PNG. A new
checkpoint of a running training appears in the checkpoint picker without a restart.
Binds 127.0.0.1 (this machine only) unless --host says otherwise; stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

from .labels import DEFAULT_IMAGES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore",
        help="serve a web page to turn a checkpoint's codes and watch the image follow",
        description=__doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1],
    )
    p.add_argument("target", metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory (its newest complete checkpoint) or a checkpoints/"
                        "step-N directory")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 "
                        "serves every machine that can reach this one, without a password)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--eval-images", type=int, default=DEFAULT_IMAGES,
                   help="labelled images that name the categories (default "
                        f"{DEFAULT_IMAGES}; 0: no labels)")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.set_defaults(func=run)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import pick_device
    from .catalog import Catalog
    from .labels import Labels
    from .server import Explorer, Server

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: expected 0..65535")
    if args.eval_images < 0:
        raise ValueError(f"--eval-images must be >= 0, got {args.eval_images}")
    device = pick_device(args.device)
    catalog = Catalog(Path(args.target), device)
    first = catalog.refresh()[catalog.default_id()]
    catalog.generator(first, raw=False)  # a checkpoint that cannot load fails here, once
    labels = Labels(device, args.eval_images)
    try:  # whatever happens, the labels' worker ends (a waiting worker would block exit)
        try:
            server = Server(args.host, args.port, Explorer(catalog, labels), args.verbose)
        except OSError as e:
            why = ("is in use" if e.errno == errno.EADDRINUSE
                   else f"cannot be bound ({e.strerror})")
            raise ValueError(f"--host {args.host} --port {args.port}: the address {why}; "
                             "pass another --port (0: any free one)") from None
        labels.get(first)  # queued now, computed after the first image
        host, port = server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        where = ("this machine only; --host 0.0.0.0 to serve other machines"
                 if server.loopback else "reachable from other machines, with no password")
        print(f"infogan explore: {len(catalog.refresh())} checkpoint(s), showing {first.id} "
              f"of {catalog.run_dir or first.path}", flush=True)
        print(f"infogan explore: serving http://{shown}:{port}/ (bound to {host}: {where}); "
              "Ctrl-C stops", flush=True)
        signal.signal(signal.SIGTERM, _stop)
        try:
            server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        labels.close()
    print("infogan explore: stopped", file=sys.stderr, flush=True)
    return 0
