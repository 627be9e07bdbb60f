"""The one-line errors that several layers raise, at the bottom of the package: this
module imports nothing of infogan_dist, so the schema, the registries, the data layer and
the entry points can all raise and catch them without importing each other.

Each message is one line meant for the user: it names the key, file or shard at fault
and what to do. Entry points print it and exit 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ConfigError(ValueError):
    """A bad config file, key or value. The message is one line meant for the user."""


class ShardError(ValueError):
    """Bad or missing shards. One-line message naming the file (and member) and the fix."""


class Outage(Exception):
    """A store (S3, HTTP) stayed unreachable longer than data.retry_s: an outage, not bad
    input, so not a ShardError. One line naming the object and the last fault; train.py
    exits 75 (EX_TEMPFAIL) and leaves <run dir>/OUTAGE for slurm/infogan.sh to requeue."""


EX_TEMPFAIL = 75  # the exit status of an outage (sysexits.h): try again later


@contextmanager
def naming(path: Path | str) -> Iterator[None]:
    """An OSError inside names `path` when it named no file: a buffered write's flush or
    a library's save (PIL) raises ENOSPC with no filename, and the one line that reports
    a full disk must say which file it could not write."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None
