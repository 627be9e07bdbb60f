"""Secrets never written: URLs with their credentials masked, for every copy of the config
(config.yaml in the run directory and in every checkpoint, W&B's config, --dry-run), the
command line W&B records, and every error line.

What is masked in a URL (any scheme://, anywhere in a string):
- the user info: `http://user:pass@host/x` -> `http://***@host/x` (a token alone in the
  user part is a secret too);
- every query value: `...?X-Amz-Signature=abc&X-Amz-Credential=k` ->
  `...?X-Amz-Signature=***&X-Amz-Credential=***` (a presigned URL is a credential).
The training itself keeps the real values: they come from the command line or the
config file at every launch. A masked URL used as input (a run's config.yaml passed as
--config) is refused with one line (`masked_keys`), never sent to a server.

Imports nothing of the package: every layer may use it.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# scheme://[userinfo@]rest, rest up to whitespace or a quote; userinfo runs to the LAST @
# before the path (a password may hold an unencoded @, as urllib's parser allows)
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:(?P<user>[^\s/?#'\"]*)@)?"
                  r"(?P<rest>[^\s'\"]*)")
_QUERY_VALUE = re.compile(r"(?P<key>[?&;][^=&;#\s]*)=(?P<value>[^&;#\s]*)")


def _mask_url(m: re.Match) -> str:
    user, rest = m.group("user"), m.group("rest")
    head, sep, tail = rest.partition("?")
    if sep:
        query, hash_, frag = tail.partition("#")
        tail = _QUERY_VALUE.sub(lambda q: f"{q.group('key')}={MASK}"
                                if q.group("value") else q.group(0), "?" + query)[1:]
        tail += hash_ + frag
    return f"{m.group('scheme')}{'' if user is None else MASK + '@'}{head}{sep}{tail}"


def text(s: str) -> str:
    """`s` with the credentials of every URL in it masked."""
    return _URL.sub(_mask_url, s) if "://" in s else s


def tree(value: Any) -> Any:
    """A copy of a config dict (or list, or string) with every string masked by text()."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {k: tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(tree(v) for v in value)
    return value


def is_masked(s: str) -> bool:
    """Whether a URL in `s` carries a mask where a credential was."""
    return any(f"://{MASK}@" in m.group(0) or f"={MASK}" in m.group(0)
               for m in _URL.finditer(s))


def masked_keys(flat: dict[str, Any]) -> list[str]:
    """Keys of a flat {section.key: value} config whose URL was masked."""
    return [k for k, v in flat.items() if isinstance(v, str) and is_masked(v)]
