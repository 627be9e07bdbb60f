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
