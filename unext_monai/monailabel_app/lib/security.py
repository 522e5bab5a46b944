"""What MONAI Label 0.8.5 leaves open and this app closes (issue 36): ids and tags are joined into paths unchecked,
``/infer`` reads any path, failed requests keep their uploads, bodies have no size limit, and any client may
replace the served model."""

from __future__ import annotations

import fnmatch
import functools
import inspect
import json
import os
import sys
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from unext_monai.monailabel_app import UPLOAD


def _plain(name: Any) -> bool:
    """A file name, not a path: no separator or NUL, not '', '.' or '..'."""
    return isinstance(name, str) and name not in ("", ".", "..") and not {"/", "\\", "\0"} & set(name)


def check_tag(tag: Any) -> None:
    if not _plain(tag):
        raise HTTPException(422, f"label tag {tag!r} is not a plain name")


class StudiesDatastore(LocalDatastore):
    """``LocalDatastore`` whose ids and tags name files inside the studies folder only (the stock one joins them into
    paths unchecked: ``../``, absolute paths and symlinks reach any file). Other ids are unknown: '' (404)."""

    def _confined(self, path: str) -> str:
        """``path`` with symlinks resolved when that lies inside the studies folder, else ''."""
        path = os.path.realpath(path) if path else ""
        return path if path.startswith(os.path.realpath(self._datastore_path) + os.sep) else ""

    def _list_files(self, path, patterns):
        # a file that resolves outside the studies folder (a symlink out of it) is no image or label of it
        return {k: v for k, v in super()._list_files(path, patterns).items() if self._confined(os.path.join(path, v))}

    def get_image_uri(self, image_id: str) -> str:
        return self._confined(super().get_image_uri(image_id)) if _plain(image_id) else ""

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        ok = _plain(label_id) and _plain(label_tag)
        return self._confined(super().get_label_uri(label_id, label_tag)) if ok else ""

    def _check_write(self, folder: str, file_id: str, src: str) -> None:
        name = f"{file_id}{self._to_id(os.path.basename(src))[1]}"
        if not (_plain(file_id) and self._confined(os.path.join(folder, name))
                and any(fnmatch.fnmatch(name, p) for p in self._extensions)):
            raise HTTPException(422, f"{name!r} is not stored: ids are plain names, files one of {self._extensions}")

    def add_image(self, image_id, image_filename, image_info):
        image_id = image_id or self._to_id(os.path.basename(image_filename))[0]
        self._check_write(self._datastore.image_path(), image_id, image_filename)
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id, label_filename, label_tag, label_info):
        self._known(image_id)
        check_tag(label_tag)
        self._check_write(self._datastore.label_path(label_tag), image_id, label_filename)
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_image(self, image_id):
        self._known(image_id)
        super().remove_image(image_id)

    def _known(self, image_id: str) -> None:
        if not self.get_image_uri(image_id):
            raise HTTPException(404, f"no image {image_id!r} in the datastore")


def guard_server(max_upload_bytes: int) -> None:
    """Body size limit (FastAPI's own, 413), uploads removed whatever the answer, ``/infer`` told its own upload,
    no model replaced by upload; a no-op outside the server (MONAI Label's CLI, tests)."""
    server = getattr(sys.modules.get("monailabel.app"), "app", None)
    if server is None:
        return
    if not hasattr(server, "max_body_size"):
        raise RuntimeError("the upload limit needs FastAPI's max_body_size: install fastapi>=0.165")
    server.max_body_size = max_upload_bytes
    server.middleware_stack = None  # built before the app (at start-up): rebuilt with the limit on the next request
    from monailabel.endpoints import datastore, infer, model, wsi_infer

    # each app (again after POST /reload) wraps the stock functions, which the endpoints look up on every call
    infer.run_inference = _own_upload_only(inspect.unwrap(infer.run_inference))
    for module, name in ((wsi_infer, "run_wsi_inference"), (datastore, "add_image"), (datastore, "save_label")):
        setattr(module, name, _removing_uploads(inspect.unwrap(getattr(module, name))))
    # PUT /model/<name> overwrites the served model.pt with any upload, DELETE moves it aside
    model.update_model = model.delete_model = _model_replaced_by_training_only


def _model_replaced_by_training_only(*args, **kwargs):
    raise HTTPException(405, "the served model is replaced by training only", headers={"Allow": "GET"})


def _removing_uploads(endpoint):
    """The endpoint, its queued removal of the uploads' temporary files run when it fails too (FastAPI runs
    background tasks only after a successful answer)."""

    @functools.wraps(endpoint)
    def wrapped(background_tasks, *args, **kwargs):
        try:
            return endpoint(background_tasks, *args, **kwargs)
        except BaseException:
            for task in background_tasks.tasks:
                task.func(*task.args, **task.kwargs)
            background_tasks.tasks.clear()
            raise

    return wrapped


def _own_upload_only(run_inference):
    """``/infer``, which merges the client's ``params`` over its upload's path and reads sessions from client-named
    folders: params naming files and sessions are refused, and :data:`UPLOAD` says whether a file came."""

    @functools.wraps(run_inference)
    def wrapped(background_tasks, model, image="", session_id="", params="{}", file=None, label=None, output=None):
        if session_id:
            raise HTTPException(406, "sessions are not offered by this server")
        named = {"image", "label", "session"} & set(json.loads(params or "{}"))  # bad JSON: 500, as MONAI Label's
        if named:
            raise HTTPException(422, f"params cannot set {sorted(named)}: give a datastore id or upload the file")
        token = UPLOAD.set(file is not None)
        try:
            return run_inference(background_tasks, model, image, session_id, params, file, label, output)
        finally:
            UPLOAD.reset(token)

    return _removing_uploads(wrapped)
