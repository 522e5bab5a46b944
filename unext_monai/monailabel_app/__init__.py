"""A MONAI Label app for the released UNeXt bundle (2D lesion segmentation), shipped with the package.

The app folder is this package's directory: ``main.py`` (the ``MONAILabelApp``), ``lib/`` (its infer and train
tasks) and ``requirements.txt`` (what it needs beside torch and monailabel). MONAI Label writes ``logs/`` and
``model/`` into the app folder it serves, so copy the app out of the installed package first::

    python -m unext_monai.monailabel_app ./unext_label_app
    python -m monailabel.main start_server --app ./unext_label_app --studies STUDIES --conf bundle bundle/NAME

See ``docs/integrations.md``. Nothing here imports ``monailabel``: the app modules are loaded by MONAI Label itself.
"""

from __future__ import annotations

import os
import shutil
from contextvars import ContextVar

__all__ = ["APP_DIR", "UPLOAD", "copy_app"]

#: the folder MONAI Label's ``--app`` takes
APP_DIR = os.path.dirname(os.path.abspath(__file__))
#: whether the ``/infer`` request being served brought the file it names (``lib/security.py``); kept here because
#: MONAI Label imports the app's ``lib/`` anew on ``POST /reload`` while the wrappers it installed stay
UPLOAD: ContextVar[bool] = ContextVar("unext_monailabel_upload", default=False)


def copy_app(dest: str | os.PathLike, overwrite: bool = False) -> str:
    """Copy the app (``main.py``, ``lib/``, ``requirements.txt``) to ``dest`` and return its absolute path.

    Raises:
        FileExistsError: ``dest`` already holds a ``main.py`` and ``overwrite`` is false.
    """
    dest = os.path.abspath(os.fspath(dest))
    if os.path.exists(os.path.join(dest, "main.py")) and not overwrite:
        raise FileExistsError(f"{dest} already holds an app (main.py); pass overwrite=True to replace it")
    os.makedirs(dest, exist_ok=True)
    for name in ("main.py", "requirements.txt"):
        shutil.copy2(os.path.join(APP_DIR, name), os.path.join(dest, name))
    shutil.copytree(os.path.join(APP_DIR, "lib"), os.path.join(dest, "lib"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest
