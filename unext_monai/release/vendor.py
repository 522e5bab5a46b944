"""The code a packaged bundle carries in ``scripts/``: the modules of ``unext_monai`` its configs name, those they
import from the package (at any depth) and their packages' ``__init__`` files, with the package's absolute imports
made relative (``from unext_monai.io import`` becomes ``from .io import``). Generated, never edited:
``tests/test_released_bundles.py`` checks each released bundle's copy against the package."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable

from unext_monai import __version__
from unext_monai.bundle_scripts import SCRIPTS

__all__ = ["PACKAGE", "vendored_files"]

PACKAGE = "unext_monai"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source(module: str) -> str | None:
    """The source file of the package's ``module``; ``None`` for a name that is no module (a class, a function)."""
    path = os.path.join(os.path.dirname(_PACKAGE_DIR), *module.split("."))
    return next((f for f in (path + ".py", os.path.join(path, "__init__.py")) if os.path.isfile(f)), None)


def vendored_files(config_texts: Iterable[str]) -> dict[str, str]:
    """``{path in the bundle: text}`` of the ``scripts/`` package that packaged configs (texts naming ``scripts.X``,
    as :func:`~unext_monai.release.configs.packaged_configs` gives them) use, sorted by path."""
    todo = [PACKAGE]
    for text in config_texts:
        for name in re.findall(rf"\b{SCRIPTS}(?:\.\w+)*", text):
            parts = [PACKAGE, *name.split(".")[1:]]
            todo += [next(m for m in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if _source(m))]
    header = (f"# This package is generated from {PACKAGE} {__version__} by `python -m {PACKAGE}.release`: edit the "
              "package, not this copy.\n")
    files: dict[str, str] = {}
    done: set[str] = set()
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        path = _source(module)
        parts = module.split(".")
        todo += [".".join(parts[:n]) for n in range(1, len(parts))]
        # a relative import starts from the module's package: the module itself where it is a package's __init__
        depth = len(parts) if path.endswith("__init__.py") else len(parts) - 1
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        for node in ast.walk(ast.parse("".join(lines), filename=path)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == PACKAGE:
                # `from unext_monai.data import inputs` imports a module too
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names
                                        if _source(f"{node.module}.{a.name}"))]
                relative = "." * depth + node.module[len(PACKAGE) + 1:]
                i = node.lineno - 1
                lines[i] = re.sub(rf"\bfrom\s+{re.escape(node.module)}\s+import\b", f"from {relative} import", lines[i],
                                  count=1)
        rel = os.path.relpath(path, _PACKAGE_DIR)
        files[f"{SCRIPTS}/{rel}"] = (header if rel == "__init__.py" else "") + "".join(lines)
    return dict(sorted(files.items()))
