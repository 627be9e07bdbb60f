"""The one-line errors that several layers raise, at the bottom of the package: this
module imports nothing of infogan_dist, so the schema, the registries, the data layer and
the entry points can all raise and catch them without importing each other.

Each message is one line meant for the user: it names the key, file or shard at fault
and what to do. Entry points print it and exit 2, never a traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad config file, key or value. The message is one line meant for the user."""


class ShardError(ValueError):
    """Bad or missing shards. One-line message naming the file (and member) and the fix."""


class Outage(Exception):
    """A store (S3, HTTP) stayed unreachable longer than data.retry_s: an outage, not bad
    input, so not a ShardError. One line naming the object and the last fault; train.py
    exits 75 (EX_TEMPFAIL) and leaves <run dir>/OUTAGE for slurm/infogan.sh to requeue."""


EX_TEMPFAIL = 75  # the exit status of an outage (sysexits.h): try again later
