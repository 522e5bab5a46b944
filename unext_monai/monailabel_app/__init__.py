"""A MONAI Label app for a released UNeXt bundle: ``main.py``, ``lib/`` and ``requirements.txt`` of this folder,
copied out by ``python -m unext_monai.monailabel_app DEST`` (MONAI Label writes into the app folder it serves).
See ``docs/integrations.md``. Nothing here imports ``monailabel``: MONAI Label loads the app modules itself."""

from contextvars import ContextVar

#: whether the ``/infer`` request being served brought the file it names (``lib/security.py``); kept here because
#: MONAI Label imports the app's ``lib/`` anew on ``POST /reload`` while the wrappers it installed stay
UPLOAD: ContextVar[bool] = ContextVar("unext_monailabel_upload", default=False)
