"""Extensions shipped with the package, one file each (docs/extending-infogan-cr.md).

Every module of this package is imported here, in name order, so an extension is one
file whose `register_extension` (or `register_term`) line registers it: nothing else
to edit. choices.py imports this package (with the other registries) before it checks
the names in loss.extra; a module here is in the training layer (docs/layers.md).
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
