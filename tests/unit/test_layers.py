"""The package imports downward only: no import cycle, and every import goes down (or
sideways within) these layers, bottom to top (docs/layers.md):

    1. errors       ConfigError, ShardError, Outage; redact (URL credentials masked);
                    import nothing of the package
    2. registry     Registry (raises ConfigError)
    3. config       the schema, YAML loading, resume rules; no registry, no loss term
    4. data.stores  byte stores by URL scheme: local, S3, HTTP(S), node cache, read-ahead;
                    nothing of tar, images, shards or the config
    5. core         latent, losses, models, ranks, augment, speed, guard, faults, stop,
                    console, runlock, disentangle; models import only config and
                    registry (and no accelerate, no torch.distributed); disentangle (the
                    four scores) only registry, and no torch
    6. data         the shard layer: tar, shards (index, decode), memory and stream modes,
                    labelled, prepare; asks data.stores for bytes (their package, not
                    s3/http/cache/ahead), imports no network client
    7. training     terms, updates, scores: the registries of loss terms, update rules,
                    metrics; extensions (the shipped extensions, one file each)
    8. choices      choice keys against the registries (above schema and registries)
    9. run          checkpoint, ema, tracking, pictures, features, fid, disentangle_eval
   10. entry        evaluate, sample, preflight, trainer, cli, reference (the config
                    reference generator), the package itself, and any module not placed

The graph is built from the source with ast: every `import` and `from ... import` of
infogan_dist modules, relative ones resolved, at module level and inside functions (a
lazy import must go downward too), plus importlib.import_module("literal") calls.
`from pkg import name` is an edge to pkg.name when that is a module, else to pkg; the
parent packages that Python initialises on the way are not edges (a package's
__init__ importing its submodules would otherwise be a cycle with each of them).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "infogan_dist"

LAYERS: list[tuple[str, list[str]]] = [  # bottom to top; a module is in the layer of its
    ("errors", ["errors", "redact"]),     # longest matching prefix
    ("registry", ["registry"]),
    ("config", ["config"]),
    ("data.stores", ["data.stores"]),
    ("core", ["latent", "losses", "models", "ranks", "augment", "speed", "guard", "faults",
              "stop", "console", "runlock", "disentangle"]),
    ("data", ["data"]),
    ("training", ["terms", "updates", "scores", "extensions"]),
    ("choices", ["choices"]),
    ("run", ["checkpoint", "ema", "tracking", "pictures", "features", "fid",
             "disentangle_eval"]),
    ("entry", ["evaluate", "sample", "preflight", "trainer", "cli", "reference"]),
]

# What the bottom layers may import of the package (prefixes), whatever the order says.
MAY_IMPORT = {
    "errors": [],
    "redact": [],
    "registry": ["errors"],
    "config": ["errors", "redact", "config"],
    "data.stores": ["errors", "registry", "data.stores"],
    "models": ["errors", "registry", "config", "models"],
    "disentangle": ["errors", "registry", "disentangle"],  # pure metrics: no model, no data
}
# Third-party and standard modules a part must not import (prefixes).
MUST_NOT_IMPORT = {
    "models": ["accelerate", "torch.distributed"],
    "disentangle": ["torch", "accelerate"],
    "data.stores": ["torch", "numpy", "PIL", "webdataset", "tarfile"],
    "data": ["boto3", "botocore", "urllib3", "http", "fcntl"],  # the shard layer
}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, without the package prefix ("" = the package)
    target: str  # imported module (of the package), or the external module's name
    line: int
    lazy: bool  # inside a function
    external: bool = False

    def where(self) -> str:
        return f"{_path(self.source)}:{self.line}"


def _path(module: str) -> str:
    base = ROOT / PACKAGE / module.replace(".", "/")
    return str((base / "__init__.py" if base.is_dir() else base.with_suffix(".py"))
               .relative_to(ROOT))


def package_modules(root: Path = ROOT / PACKAGE) -> dict[str, Path]:
    """Module name without the package prefix ("data.stores.base"; "" for the package,
    "data" for data/__init__.py) -> file."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _in_function(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a function (or lambda)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def module_edges(name: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    lazy = _in_function(tree)
    is_package = path.name == "__init__.py"
    here = [PACKAGE, *name.split(".")] if name else [PACKAGE]
    if not is_package:
        here = here[:-1]  # a module's relative imports start at its package
    edges = []

    def add(full: str, node: ast.AST) -> None:
        if full == PACKAGE or full.startswith(PACKAGE + "."):
            target = full[len(PACKAGE) + 1:]
            while target and target not in modules:  # a name inside a module
                target = target.rpartition(".")[0]
            edges.append(Edge(name, target, node.lineno, id(node) in lazy))
        else:
            edges.append(Edge(name, full, node.lineno, id(node) in lazy, external=True))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                is_module = sub.startswith(PACKAGE + ".") and sub[len(PACKAGE) + 1:] in modules
                add(sub if is_module else module, node)
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) in
              ("importlib.import_module", "import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            add(node.args[0].value, node)
    return [e for e in edges if e.external or e.target != name]


def all_edges() -> list[Edge]:
    modules = package_modules()
    return [e for name, path in modules.items() for e in module_edges(name, path, modules)]


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return all_edges()


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One import cycle as its edges in order, or None."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        if not e.external:
            graph.setdefault(e.source, []).append(e)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for e in graph.get(node, []):
            if state.get(e.target) == 1:
                start = next(i for i, p in enumerate(path) if p.source == e.target) \
                    if e.target != node else len(path)
                return [*path[start:], e]
            if state.get(e.target) is None:
                path.append(e)
                found = visit(e.target)
                if found:
                    return found
                path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def describe(cycle: list[Edge]) -> str:
    names = [_name(e.source) for e in cycle] + [_name(cycle[-1].target)]
    steps = "; ".join(f"{e.where()} imports {_name(e.target)}"
                      + (" (in a function)" if e.lazy else "") for e in cycle)
    return f"import cycle {' -> '.join(names)}: {steps}"


def _name(module: str) -> str:
    return f"{PACKAGE}.{module}" if module else PACKAGE


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    """Index in LAYERS (longest matching prefix); the top layer when not placed."""
    best, index = -1, len(LAYERS) - 1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if _matches(module, p) and len(p) > best:
                best, index = len(p), i
    return index


def rule_of(module: str, rules: dict[str, list[str]]) -> str | None:
    keys = [k for k in rules if _matches(module, k)]
    return max(keys, key=len) if keys else None


# --- the checks ---------------------------------------------------------------------------

def test_no_import_cycles(edges):
    cycle = find_cycle(edges)
    assert cycle is None, describe(cycle)


def test_every_import_goes_down_the_layers(edges):
    up = [f"{e.where()}: {_name(e.source)} ({LAYERS[layer_of(e.source)][0]}) imports "
          f"{_name(e.target)} ({LAYERS[layer_of(e.target)][0]})"
          + (" in a function" if e.lazy else "")
          for e in edges if not e.external and layer_of(e.target) > layer_of(e.source)]
    assert not up, "imports going up the layers (docs/layers.md):\n" + "\n".join(up)


def test_bottom_layers_import_only_what_they_may(edges):
    bad = []
    for e in edges:
        rule = rule_of(e.source, MAY_IMPORT)
        if e.external or rule is None:
            continue
        if not any(_matches(e.target, p) for p in MAY_IMPORT[rule]):
            bad.append(f"{e.where()}: {_name(e.source)} imports {_name(e.target)}; "
                       f"{rule} may import only {MAY_IMPORT[rule] or 'nothing of the package'}")
    assert not bad, "\n".join(bad)


def test_parts_import_no_forbidden_library(edges):
    bad = []
    for e in edges:
        rule = rule_of(e.source, MUST_NOT_IMPORT)
        if not e.external or rule is None:
            continue
        if any(_matches(e.target, p) for p in MUST_NOT_IMPORT[rule]):
            bad.append(f"{e.where()}: {_name(e.source)} imports {e.target}")
    assert not bad, "\n".join(bad)


def test_the_shard_layer_uses_the_stores_interface_only(edges):
    """data/* reads bytes through data.stores (the package's functions and errors), never
    one store's module: it knows nothing of S3, HTTP or caches."""
    bad = [f"{e.where()}: {_name(e.source)} imports {_name(e.target)}" for e in edges
           if not e.external and _matches(e.source, "data")
           and not _matches(e.source, "data.stores")
           and _matches(e.target, "data.stores") and e.target != "data.stores"]
    assert not bad, "\n".join(bad)


def test_the_walker_sees_every_kind_of_import(tmp_path):
    """The graph builder itself: relative imports at each level, names vs submodules,
    imports inside functions, importlib with a literal; and a cycle is found and named."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("from .mod import Y\n")
    (pkg / "sub" / "mod.py").write_text(
        "from ..low import X\nfrom . import other\nimport json\n\n"
        "def f():\n    from .. import high\n    return high\n\nY = X\n")
    (pkg / "sub" / "other.py").write_text(
        "import importlib\n\ndef g():\n    return importlib.import_module('infogan_dist.low')\n")
    (pkg / "high.py").write_text("from infogan_dist.sub.mod import Y\n")
    modules = package_modules(pkg)
    got = {(e.source, e.target, e.lazy, e.external)
           for n, p in modules.items() for e in module_edges(n, p, modules)}
    assert got == {
        ("sub", "sub.mod", False, False),
        ("sub.mod", "low", False, False), ("sub.mod", "sub.other", False, False),
        ("sub.mod", "json", False, True), ("sub.mod", "high", True, False),
        ("sub.other", "importlib", False, True), ("sub.other", "low", True, False),
        ("high", "sub.mod", False, False),
    }
    cycle = find_cycle([Edge(s, t, 1, lazy, ext) for s, t, lazy, ext in got])
    assert cycle is not None
    assert {e.source for e in cycle} == {"sub.mod", "high"}
    assert describe(cycle).startswith("import cycle infogan_dist.high -> "
                                      "infogan_dist.sub.mod -> infogan_dist.high")
