"""The code a packaged bundle carries: the modules of ``unext_monai`` its configs use, copied into ``scripts/``.

A model zoo bundle runs with MONAI and the packages its ``metadata.json`` lists; code of its own travels in the
bundle's ``scripts/`` package, imported with the bundle folder on ``sys.path``. :func:`vendored_files` gives that
package for a set of packaged configs: every module of ``unext_monai`` the configs name, the modules those import, and
their packages' ``__init__`` files, with the package's own absolute imports (``from unext_monai.io import ...``) made
relative (``from ..io import ...``), so that ``scripts.transforms`` is ``unext_monai.transforms``. The copy is
generated, never edited: the package stays the one source, and ``tests/test_release.py`` checks that each released
bundle's ``scripts/`` equals what the package gives today.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from collections.abc import Iterable
from typing import Any

from unext_monai.bundle_scripts import SCRIPTS

__all__ = ["PACKAGE", "SCRIPTS", "config_strings", "vendored_files", "rewrite_config"]

PACKAGE = "unext_monai"
_FROM_PACKAGE = re.compile(rf"\bfrom\s+{PACKAGE}((?:\.\w+)*)\s+import\b")


def config_strings(config: Any) -> Iterable[str]:
    """Every string in a parsed JSON config (values and keys, at any depth)."""
    if isinstance(config, str):
        yield config
    elif isinstance(config, dict):
        for k, v in config.items():
            yield from config_strings(k)
            yield from config_strings(v)
    elif isinstance(config, list):
        for v in config:
            yield from config_strings(v)


def rewrite_config(config: Any) -> Any:
    """``config`` with every reference to ``unext_monai`` turned into one to the bundle's ``scripts`` copy."""
    if isinstance(config, str):
        return re.sub(rf"\b{PACKAGE}\b", SCRIPTS, config)
    if isinstance(config, dict):
        return {rewrite_config(k): rewrite_config(v) for k, v in config.items()}
    if isinstance(config, list):
        return [rewrite_config(v) for v in config]
    return config


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is not a package
        return False


def _module_of(dotted: str) -> str:
    """The longest prefix of ``unext_monai.a.b.C`` that is a module."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if _is_module(".".join(parts[:n])):
            return ".".join(parts[:n])
    raise ValueError(f"{dotted}: not a module of {PACKAGE}")


def _source_file(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"{module}: no Python source file")
    return spec.origin


def _is_package(module: str) -> bool:
    return os.path.basename(_source_file(module)) == "__init__.py"


def _imported_modules(module: str, tree: ast.Module) -> set[str]:
    """The ``unext_monai`` modules that ``module``'s source imports (at any depth: also inside functions)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    raise ValueError(f"{module}: `import {alias.name}` cannot be made relative; use `from ... import`")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != PACKAGE:
                continue
            found.add(node.module)
            for alias in node.names:  # `from unext_monai.data import inputs` imports a submodule
                if _is_module(f"{node.module}.{alias.name}"):
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise ValueError(f"{module}: relative imports are not expected in {PACKAGE}")
    return found


def _closure(modules: Iterable[str]) -> dict[str, ast.Module]:
    """The modules, everything they import from the package, and every package ``__init__`` on the way."""
    todo, seen = list(modules), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        with open(_source_file(name), encoding="utf-8") as f:
            seen[name] = ast.parse(f.read(), filename=_source_file(name))
        parts = name.split(".")
        todo += [".".join(parts[:n]) for n in range(1, len(parts))]
        todo += sorted(_imported_modules(name, seen[name]))
    return seen


def _relative(module: str, target: str) -> str:
    """``from unext_monai.io`` inside ``module`` -> ``from ..io`` (the copy works under any package name)."""
    package = module.split(".") if _is_package(module) else module.split(".")[:-1]
    return "." * len(package) + ".".join(target.split(".")[1:])


def _rewritten_source(module: str, header: str) -> str:
    with open(_source_file(module), encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith(PACKAGE):
            i = node.lineno - 1
            rel = _relative(module, node.module)
            lines[i], n = _FROM_PACKAGE.subn(f"from {rel} import", lines[i], count=1)
            if n != 1:
                raise ValueError(f"{module}:{node.lineno}: cannot rewrite the import of {node.module}")
    return header + "".join(lines)


def vendored_files(configs: Iterable[Any], version: str, named_as: str = PACKAGE) -> dict[str, str]:
    """The ``scripts/`` package for ``configs`` (parsed JSON configs that refer to ``unext_monai``, or to
    ``scripts`` with ``named_as="scripts"``: a packaged bundle's configs).

    Returns:
        ``{path relative to the bundle folder: file text}``, e.g. ``{"scripts/__init__.py": ..., ...}``, sorted.

    Raises:
        ValueError: a name in the configs that is no module of the package, or an import the copy cannot keep.
    """
    pattern = re.compile(rf"\b{named_as}(?:\.\w+)*")
    named = {_module_of(PACKAGE + m.group(0)[len(named_as):])
             for c in configs for s in config_strings(c) for m in pattern.finditer(s)}
    if not named:
        raise ValueError(f"the configs do not use {PACKAGE}: nothing to copy")
    header = (f"# Generated from {PACKAGE} {version} by `python -m {PACKAGE}.release`: edit the package, not this "
              "copy.\n")
    files = {}
    for module in _closure(named | {PACKAGE}):
        rel = module.split(".")[1:]
        parts = [SCRIPTS, *rel, "__init__.py"] if _is_package(module) else [SCRIPTS, *rel[:-1], rel[-1] + ".py"]
        path = "/".join(parts)
        files[path] = _rewritten_source(module, header)
    return dict(sorted(files.items()))
