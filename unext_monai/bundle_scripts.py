"""Importing a packaged bundle's ``scripts`` package, the code its configs name (``scripts.transforms...``): the
bundle's own copy with its folder on ``sys.path`` (:func:`bundle_on_path`), or for a ``model.ts`` without its bundle
folder (a MONAI Application Package's ``models/<name>/model.ts``) the installed ``unext_monai`` the copy was made from
(:func:`scripts_from_package`); :func:`bundle_scripts` picks the one that applies. :func:`output_classes` reads
the classes its metadata names."""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

__all__ = ["SCRIPTS", "bundle_on_path", "scripts_from_package", "bundle_scripts", "bundle_folder_of", "output_classes"]

#: the package name a bundle's configs import its code by, as in the model zoo
SCRIPTS = "scripts"
_PACKAGE = "unext_monai"

logger = logging.getLogger(__name__)


def _unload_scripts() -> None:
    for name in [m for m in sys.modules if m == SCRIPTS or m.startswith(f"{SCRIPTS}.")]:
        del sys.modules[name]


#: one block at a time may swap ``scripts``: MONAI Label runs infer tasks in threads (epistemic scoring)
_SWAP = threading.RLock()


@contextlib.contextmanager
def bundle_on_path(bundle_dir: str | os.PathLike) -> Iterator[None]:
    """Inside the block, ``import scripts`` imports ``bundle_dir``'s ``scripts`` package: the bundle folder is first
    on ``sys.path`` and any ``scripts`` imported before (another bundle's) is unloaded on entry. What the block
    imported stays loaded after it (objects made inside may import lazily); blocks in other threads wait."""
    bundle_dir = os.path.abspath(bundle_dir)
    with _SWAP:
        _unload_scripts()
        sys.path.insert(0, bundle_dir)
        try:
            yield
        finally:
            sys.path.remove(bundle_dir)


class _PackageAsScripts(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``scripts`` and ``scripts.X`` resolve to the installed ``unext_monai`` and ``unext_monai.X``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != SCRIPTS and not fullname.startswith(f"{SCRIPTS}."):
            return None
        real = importlib.util.find_spec(_PACKAGE + fullname[len(SCRIPTS):])
        if real is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=real.submodule_search_locations is not None)

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def create_module(self, spec):
        module = importlib.import_module(_PACKAGE + spec.name[len(SCRIPTS):])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # the real module is already executed; the import system gave it the alias's spec: give its own back
        module.__spec__ = self._specs.pop(module.__name__)


@contextlib.contextmanager
def scripts_from_package() -> Iterator[None]:
    """Inside the block, ``import scripts.X`` gives the installed ``unext_monai.X`` (for a ``model.ts`` without its
    bundle folder); any ``scripts`` imported before is unloaded on entry, as in :func:`bundle_on_path`."""
    finder = _PackageAsScripts()
    with _SWAP:
        _unload_scripts()
        sys.meta_path.insert(0, finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)


def bundle_folder_of(model_file: str | os.PathLike) -> Path | None:
    """The bundle folder of ``<bundle>/models/<file>`` when it holds a ``scripts`` package, else ``None``."""
    bundle = Path(model_file).resolve().parent.parent
    return bundle if (bundle / SCRIPTS / "__init__.py").is_file() else None


@contextlib.contextmanager
def bundle_scripts(model_file: str | os.PathLike) -> Iterator[None]:
    """The ``scripts`` of ``model_file``'s bundle importable inside the block: the bundle's own copy where the file
    lies in its bundle folder, the installed package's otherwise (logged)."""
    bundle = bundle_folder_of(model_file)
    if bundle is not None:
        with bundle_on_path(bundle):
            yield
        return
    from unext_monai import __version__

    logger.info(f"{model_file}: no bundle folder with scripts/ around it; the configs' `{SCRIPTS}` is the installed "
                f"unext_monai {__version__}")
    with scripts_from_package():
        yield


def output_classes(meta: dict) -> list[str]:
    """The foreground classes of a packaged bundle's ``metadata.json`` in class-number order: its output's
    ``channel_def`` without ``background``."""
    channels = next(iter(meta["network_data_format"]["outputs"].values()))["channel_def"]
    return [v for _, v in sorted(channels.items(), key=lambda kv: int(kv[0])) if v.lower() != "background"]
