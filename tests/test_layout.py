"""The package's layout is its flow: each stage imports only the stages below it, never one above, never in a cycle.

From the bottom: the shared core (models, errors, addresses, progress, metrics, heap, atomic), then matching,
relevance, config, store, arxiv, render, channels, outbox, summaries, embeddings, web, and the application on top
(cli, commands, daemon, lock, demo).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import notifier

PACKAGE = Path(notifier.__file__).parent
LAYERS = (
    {"__init__", "models", "errors", "exit_codes", "addresses", "progress", "logs", "metrics", "heap", "atomic"},
    {"matching"},
    {"relevance"},
    {"config"},
    {"store"},
    {"arxiv"},
    {"render"},
    {"channels"},
    {"outbox"},
    {"summaries"},
    {"embeddings"},
    {"web"},
    {"cli", "commands", "daemon", "lock", "demo", "__main__"},
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """``notifier.arxiv.poller`` -> ``arxiv``; ``notifier.models`` -> ``models``; ``notifier`` -> ``__init__``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """Every notifier module that ``path`` imports, at its top or inside a function, typing-only ones included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "notifier":  # ``from notifier import x``: a module, or a name of notifier/__init__
                found.update(
                    f"notifier.{a.name}" if (PACKAGE / f"{a.name}.py").exists() else "notifier" for a in node.names
                )
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module == "notifier" or module.startswith("notifier.")}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        found[".".join(relative.parts).removesuffix(".__init__")] = path
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(module) for module in modules()}
    assert parts - RANK.keys() == set(), "add the new module or sub-package to LAYERS"


def test_imports_go_down_the_layers_only():
    upward = []
    for module, path in modules().items():
        here = RANK[part_of(module)]
        upward += [f"{module} imports {imported}" for imported in imports_of(path) if RANK[part_of(imported)] > here]
    assert upward == []


def test_no_module_imports_itself_through_others():
    known = modules()
    graph = {module: {m for m in imports_of(path) if m in known} for module, path in known.items()}
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join((*trail, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert cycles == []


def test_every_sub_package_is_installed():
    """pyproject.toml lists the packages an install copies: a sub-package missing there works from the source tree
    and fails once installed."""
    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("notifier", *path.parent.relative_to(PACKAGE).parts))
        for path in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
