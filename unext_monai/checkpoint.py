"""Safe checkpoint loading and crash-proof checkpoint writing for the bundle's configs.

- :class:`ModelCheckpointLoader`: MONAI's ``CheckpointLoader`` that reads files with ``torch.load(weights_only=True)``
  (no code from the file runs) and, before loading, compares the checkpoint's network with the bundle's: a checkpoint
  made for another channel count or width, or for another architecture, fails with one message that says which.
- :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` whose files are written to a temporary file and renamed
  into place, and whose superseded files are deleted only after the new one is complete. MONAI's own saver writes in
  place (``DiskSaver(atomic=False)``) and ignite deletes the previous checkpoint *before* writing the next one, so a
  process killed while saving loses both the old and the new checkpoint.
- :func:`load_checkpoint_file`, :func:`describe_unext_state`, :func:`check_model_state`: the pieces, for scripts.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Randomizable, Transform

from unext_monai.distributed import is_rank0
from unext_monai.io import load_checkpoint_file as _load_weights_only
from unext_monai.io import write_atomic
from unext_monai.networks.weights import NEGLIGIBLE_WEIGHT, zero_negligible_weights

__all__ = [
    "RandomStates",
    "BestModelState",
    "ModelCheckpointLoader",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "load_checkpoint_file",
    "describe_unext_state",
    "check_model_state",
    "switched_on",
]

logger = logging.getLogger("unext_monai")

# prefixes that wrappers add to state-dict keys: DataParallel / DDP, torch.compile
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# keys whose shapes give a UNeXt's constructor arguments
_UNEXT_KEYS = (
    "down_1.conv.weight",
    "down_2.conv.weight",
    "down_3.conv.weight",
    "down_4.patch_embed.weight",
    "down_5.patch_embed.weight",
    "down_4.block.mlp.fc1.weight",
    "final_conv.weight",
)
# keys of the paper's own code (UNeXt-pytorch), which needs converting first
_REFERENCE_KEYS = ("encoder1.weight", "patch_embed3.proj.weight", "final.weight")


def _strip_wrappers(state: Mapping[str, Any], target: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The state dict without ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) key prefixes, unless
    the keys of ``target`` (the network's state dict) carry the same prefix."""
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if target and all(k.startswith(prefix) for k in target):
                continue
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def describe_unext_state(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``UNeXt`` constructor arguments a state dict was made with, from its tensor shapes; ``None`` if it is not
    a state dict of :class:`unext_monai.UNeXt`.

    Returns ``{"spatial_dims", "in_channels", "out_channels", "features", "mlp_ratio", "deep_supervision"}``.
    """
    if not isinstance(state, Mapping):
        return None
    state = _strip_wrappers(state)
    if not all(isinstance(state.get(k), torch.Tensor) and state[k].dim() >= 3 for k in _UNEXT_KEYS):
        return None
    down_1, final = state["down_1.conv.weight"], state["final_conv.weight"]
    features = tuple(
        int(state[k].shape[0])
        for k in ("down_1.conv.weight", "down_2.conv.weight", "down_3.conv.weight", "down_4.patch_embed.weight",
                  "down_5.patch_embed.weight")
    )
    return {
        "spatial_dims": int(down_1.dim() - 2),
        "in_channels": int(down_1.shape[1]),
        "out_channels": int(final.shape[0]),
        "features": features,
        "mlp_ratio": float(state["down_4.block.mlp.fc1.weight"].shape[0]) / features[3],
        "deep_supervision": any(k.startswith("heads.") for k in state),
    }


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        module = module.module
    return getattr(module, "_orig_mod", module)  # torch.compile


def _format(desc: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={desc[k]!r}" if not isinstance(desc[k], tuple) else f"{k}={desc[k]}" for k in keys)


def _differences(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], strict: bool) -> list[str]:
    """Missing/unexpected keys (when ``strict``) and shape mismatches, as short phrases."""
    out = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if strict and missing:
        out.append(f"missing {len(missing)} key(s) such as {missing[:3]}")
    if strict and unexpected:
        out.append(f"{len(unexpected)} unexpected key(s) such as {unexpected[:3]}")
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if shapes:
        out.append(f"{len(shapes)} shape mismatch(es) (checkpoint vs network) such as {shapes[:3]}")
    return out


def check_model_state(
    network: torch.nn.Module, state: Any, source: str = "checkpoint", strict: bool = True
) -> dict[str, torch.Tensor]:
    """Check that ``state`` loads into ``network`` and return it ready for ``load_state_dict``.

    Key prefixes added by DataParallel/DDP (``module.``) or ``torch.compile`` (``_orig_mod.``) are removed. The
    deep-supervision heads (``heads.*``) of a checkpoint trained with ``deep_supervision=True`` are dropped when the
    network has none (they are not used at inference), and a network with heads keeps its own initial heads when the
    checkpoint has none (fine-tuning released weights with deep supervision), each with a log line.

    Raises:
        ValueError: naming ``source``: not a state dict; not a UNeXt checkpoint (or a UNeXt-pytorch one, to be
            converted first) while the network is a UNeXt; a UNeXt checkpoint of other channels, widths, spatial
            dimensions, MLP ratio or deep supervision than the network (both listed); or, for other networks, the
            missing/unexpected keys and shape mismatches.
    """
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ValueError(
            f"{source}: expected a state dict (names -> tensors) for the network, got {type(state).__name__}"
        )
    net = _unwrap(network)
    expected = net.state_dict()
    state = _strip_wrappers(state, expected)
    if not _differences(state, expected, strict):
        return state
    net_desc = describe_unext_state(expected)
    if net_desc is None:  # not a UNeXt: a generic account of the mismatch
        raise ValueError(
            f"{source}: does not fit the bundle's network {type(net).__name__}: "
            + "; ".join(_differences(state, expected, strict))
            + "; set network_def to match or use another checkpoint"
        )
    ckpt_desc = describe_unext_state(state)
    if ckpt_desc is None:
        if all(k in state for k in _REFERENCE_KEYS):
            raise ValueError(
                f"{source}: a UNeXt-pytorch (archs.UNext) checkpoint, not this bundle's UNeXt: convert it first with "
                "unext_monai.from_unext_pytorch(path) and save its state_dict()"
            )
        keys, absent = list(state), [k for k in _UNEXT_KEYS if k not in state]
        lacks = ", ".join(absent[:2]) + (", ..." if len(absent) > 2 else "")
        raise ValueError(
            f"{source}: not a UNeXt checkpoint (no {lacks}; it holds "
            f"{len(keys)} entries such as {keys[:3]}); the bundle's network_def is a UNeXt with "
            f"{_format(net_desc, ['in_channels', 'out_channels', 'features'])}"
        )
    if ckpt_desc["deep_supervision"] and not net_desc["deep_supervision"]:
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
        ckpt_desc = {**ckpt_desc, "deep_supervision": False}
        logger.info(f"{source}: dropping the deep-supervision heads (heads.*), which inference does not use")
        if not _differences(state, expected, strict):
            return state
    elif net_desc["deep_supervision"] and not ckpt_desc["deep_supervision"]:
        # released weights are the inference network's (no heads): fine-tuning with deep supervision starts the
        # heads from the network's own initial values
        heads = {k: v for k, v in expected.items() if k.startswith("heads.")}
        if not _differences({**state, **heads}, expected, strict):
            logger.info(f"{source}: no deep-supervision heads (heads.*) in the checkpoint: they keep their initial "
                        "weights")
            return {**state, **heads}
    shown = ["in_channels", "out_channels", "features"]
    shown += [k for k in ("spatial_dims", "mlp_ratio", "deep_supervision") if ckpt_desc[k] != net_desc[k]]
    if any(ckpt_desc[k] != net_desc[k] for k in shown):
        raise ValueError(
            f"{source}: checkpoint is for a network with {_format(ckpt_desc, shown)} but the bundle's network_def has "
            f"{_format(net_desc, shown)}; set network_def to match or use another checkpoint"
        )
    raise ValueError(
        f"{source}: a UNeXt checkpoint with the bundle's {_format(net_desc, shown)} whose tensors still do not fit "
        "(another version of the network?): " + "; ".join(_differences(state, expected, strict))
    )


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = None) -> Any:
    """:func:`unext_monai.io.load_checkpoint_file` (``weights_only=True``, errors that name the file), and a file that
    is neither of ``torch.save``'s formats (a zip archive; a pickle in the legacy format) is refused as not a
    checkpoint: PyTorch's weights-only unpickler reports a text or a picture as a pickle that holds code."""
    name = os.fspath(path)
    if os.path.isfile(name) and os.path.getsize(name):
        with open(name, "rb") as f:
            head = f.read(2)
        if head != b"PK" and head[:1] != b"\x80":  # a zip archive; a pickle of protocol 2 or later
            raise ValueError(f"{name}: not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)")
    return _load_weights_only(name, map_location)


def _zero_negligible_module_weights(modules: Iterable[Any], source: str) -> None:
    """:func:`zero_negligible_weights` on the parameters and buffers of each ``torch.nn.Module`` of ``modules``."""
    for module in modules:
        if isinstance(module, torch.nn.Module):
            found = zero_negligible_weights([*module.parameters(), *module.buffers()])
            if found:
                logger.info(f"{source}: {found} weight values below {NEGLIGIBLE_WEIGHT:g} set to 0 (float32 CPU "
                            "arithmetic on them and their products is many times slower)")


def switched_on(objects: Mapping[str, Any]) -> dict[str, Any]:
    """``objects`` without the entries that are ``None``: parts a config switched off (``"_disabled_": true``, e.g.
    ``train#weight_average``) are neither saved nor loaded."""
    return {key: obj for key, obj in objects.items() if obj is not None}


class ModelCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` with safe loading and clear errors; same arguments, same config entries.

    The file is read with :func:`load_checkpoint_file` (``weights_only=True``: no code from the file runs; empty,
    truncated and foreign files fail naming the file). Every ``torch.nn.Module`` in ``load_dict`` is checked with
    :func:`check_model_state` before anything is loaded, so a checkpoint of another architecture or channel count
    fails with one message that gives the checkpoint's and the bundle's network settings. A missing entry of
    ``load_dict`` (e.g. resuming from a model-only ``model.pt``) fails saying which, unless the object is marked
    ``optional``. Entries that are ``None`` (switched off in the config) are left out. ``strict_shape=False`` keeps
    MONAI's behaviour (layers of other shapes are skipped). The loaded networks' weight values too small to matter
    are set to 0 (:func:`unext_monai.networks.weights.zero_negligible_weights`): they make float32 CPU inference many
    times slower. A learning-rate scheduler keeps the length it was built with (``T_max``, from this run's
    ``max_epochs``): a resume with another ``max_epochs`` carries the schedule on from where it is to its end at the
    new last epoch, instead of cycling the checkpoint's schedule.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = inspect.signature(CheckpointLoader.__init__).bind(self, *args, **kwargs)
        bound.arguments["load_dict"] = switched_on(bound.arguments["load_dict"])
        super().__init__(*bound.args[1:], **bound.kwargs)

    def __call__(self, engine: Any) -> None:
        path = os.fspath(self.load_path)
        if not self.strict_shape:
            load_checkpoint_file(path, self.map_location)  # the clear errors; MONAI's loader then skips by shape
            super().__call__(engine)
            _zero_negligible_module_weights(self.load_dict.values(), path)
            return
        checkpoint = load_checkpoint_file(path, self.map_location)
        if not isinstance(checkpoint, Mapping):
            raise ValueError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
        first = next(iter(self.load_dict))
        if len(self.load_dict) == 1 and first not in checkpoint:  # a plain state dict, as model.pt
            checkpoint = {first: checkpoint}
        else:
            checkpoint = dict(checkpoint)
        optional = [k for k, obj in self.load_dict.items() if k not in checkpoint and getattr(obj, "optional", False)]
        for key in optional:
            logger.warning(f"{path}: no '{key}' in the checkpoint (written by an older version, or with it switched "
                           "off): resuming without it")
        load_dict = {k: v for k, v in self.load_dict.items() if k not in optional}
        missing = [k for k in load_dict if k not in checkpoint]
        if missing:
            if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
                held = "it is a model-only state dict, as model.pt"
            else:
                held = f"it holds {sorted(map(str, checkpoint))[:8]}"
            raise ValueError(
                f"{path}: the checkpoint has no {missing} ({held}); resuming training needs a checkpoint_epoch=N.pt "
                "written by the training run"
            )
        for key, obj in load_dict.items():
            if isinstance(obj, torch.nn.Module):
                checkpoint[key] = check_model_state(obj, checkpoint[key], source=path, strict=self.strict)
        prior_max_epochs = engine.state.max_epochs
        lengths = {k: obj.T_max for k, obj in load_dict.items() if hasattr(obj, "T_max")}
        Checkpoint.load_objects(to_load=load_dict, checkpoint=checkpoint, strict=self.strict)
        for key, t_max in lengths.items():
            load_dict[key].T_max = t_max
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"{path}: the checkpoint is at epoch {engine.state.epoch}, past max_epochs={prior_max_epochs}; raise "
                "max_epochs to train further"
            )
        engine.state.max_epochs = prior_max_epochs
        _zero_negligible_module_weights(load_dict.values(), path)
        self.logger.info(f"Restored all variables from {path}")


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` that never leaves a damaged file nor deletes a good one before its successor exists.

    Each file is written to ``.<name>.<random>.part`` in the same folder (created with the umask's permissions, so
    other users may read it as with a plain write), flushed to disk, then renamed over ``<name>``. Files that ignite
    asks to remove are deleted only after the next file is complete. A ``.part`` file left by a killed process is
    removed when the same file is next written.

    Args:
        dirname: folder of the checkpoints, created if needed.
        filename: a fixed file name for every save (as MONAI's ``key_metric_filename``), or ``None``.
        stale: after the first save, other files in ``dirname`` whose names match this pattern are deleted (logged).
        save_on_rank, kwargs: as ``DiskSaver``.
    """

    def __init__(
        self,
        dirname: str | Path,
        filename: str | None = None,
        stale: re.Pattern | None = None,
        save_on_rank: int = 0,
        **kwargs: Any,
    ):
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank,
                         **kwargs)
        self.filename = filename
        self.stale = stale
        self._to_remove: list[str] = []
        self._first = True

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        super().__call__(checkpoint, name, metadata)
        pending, self._to_remove = self._to_remove, []
        for old in pending:
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)
        if self._first and self.stale is not None and self.dirname.is_dir():
            # files of this name pattern that this run did not write: the one a resumed run started from, or those of
            # an earlier run in the same folder, which a later resume would otherwise pick up as the newest
            for f in sorted(self.dirname.iterdir()):
                if f.name != name and self.stale.match(f.name):
                    f.unlink(missing_ok=True)
                    logger.info(f"removed {f}: an older checkpoint that this run supersedes ({name} written)")
        self._first = False

    def remove(self, filename: str) -> None:
        self._to_remove.append(self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        try:
            write_atomic(path, lambda tmp: func(checkpoint, tmp, **self.kwargs))
        except (OSError, RuntimeError) as e:  # a full disk fails inside torch.save: "unexpected pos 896 vs 790"
            free = shutil.disk_usage(self.dirname).free // 2**20
            raise OSError(f"{path}: the checkpoint could not be written ({type(e).__name__}: {e}); {free} MiB free on "
                          "its disk (no space left?). The previous checkpoints are kept.") from e


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing through :class:`AtomicDiskSaver`; ``save_dict`` entries that
    are ``None`` (switched off in the config) are left out.

    Killing the process at any moment leaves the previous checkpoint and the previous best ``model.pt`` loadable
    (or the new ones, complete): never a truncated file, never none.

    Once the interval checkpoint (``checkpoint_epoch=N.pt``) of this run is written, other interval checkpoints of the
    same name pattern in ``save_dir`` are deleted (logged): the file a resumed run started from, and those of an
    earlier run in the same folder, which ``--resume`` would otherwise take for the newest (a fresh run into a folder
    holding ``checkpoint_epoch=30.pt`` of an older run, killed at epoch 5, would resume the older run).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = inspect.signature(CheckpointSaver.__init__).bind(self, *args, **kwargs)
        bound.arguments["save_dict"] = switched_on(bound.arguments["save_dict"])
        super().__init__(*bound.args[1:], **bound.kwargs)
        self.key_metric_name = bound.arguments.get("key_metric_name")
        self.key_metric_filename = bound.arguments.get("key_metric_filename")
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is None:
                continue
            fixed = getattr(checkpoint.save_handler, "filename", None)
            stale = None
            if checkpoint is self._interval_checkpoint:
                name = next(iter(self.save_dict)) if len(self.save_dict) == 1 else "checkpoint"
                prefix = f"{checkpoint.filename_prefix}_" if checkpoint.filename_prefix else ""
                unit = "epoch" if self.epoch_level else "iteration"
                stale = re.compile(rf"^{re.escape(prefix + name)}_{unit}=\d+\.pt$")
            checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed, stale=stale)

    def metrics_completed(self, engine: Any) -> None:
        """Save the key-metric checkpoint, unless the key metric is undefined (NaN: no validation item had a
        lesion), which ranks against nothing: the previous best file stays, with a warning."""
        name = self.key_metric_name if isinstance(self.key_metric_name, str) else engine.state.key_metric_name
        value = engine.state.metrics.get(name)
        if isinstance(value, float) and math.isnan(value):
            logger.warning(f"{name} is undefined at epoch {engine.state.epoch} (no validation item has a lesion): "
                           f"no best-model file written for it")
            return
        super().metrics_completed(engine)


def _randomizables(root: Any) -> list[Randomizable]:
    """Every ``Randomizable`` reachable from ``root`` (a transform, a ``Compose`` or a list of them) through the
    transforms' attributes, in a fixed order, each once: ``RandAffined`` holds ``RandAffine`` which holds
    ``RandAffineGrid``, each with its own generator."""
    found: list[Randomizable] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if depth > 6 or id(obj) in seen:
            return
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
            return
        if not isinstance(obj, Transform):
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable):
            found.append(obj)
        for value in vars(obj).values():
            visit(value, depth + 1)

    visit(root, 0)
    return found


def _numpy_state_to_torch(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_from_torch(state: Mapping[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])


class RandomStates:
    """The random number generators of a training run as one checkpoint entry, so that a resumed run draws the same
    numbers as an uninterrupted one: Python's, NumPy's and PyTorch's global generators (CPU, and CUDA when present)
    and the private generator of every random MONAI transform in ``transforms`` (MONAI seeds them once, when the
    DataLoader is made; ``set_determinism`` at start-up does not reach them).

    Put it in the resumable checkpoint's ``save_dict``/``load_dict`` (``"rng"``). The state holds only tensors, numbers
    and strings, so the checkpoint still loads with ``weights_only=True``. Checkpoints of older versions lack it:
    :class:`ModelCheckpointLoader` then resumes without it, with a warning (``optional``).

    Args:
        transforms: the training pipeline (``Compose``) or a list of transforms.
    """

    optional = True

    def __init__(self, transforms: Any) -> None:
        self.transforms = _randomizables(transforms)

    def state_dict(self) -> dict[str, Any]:
        py_version, py_state, py_gauss = random.getstate()
        return {
            "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
            "numpy": _numpy_state_to_torch(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "transforms": [_numpy_state_to_torch(t.R.get_state()) for t in self.transforms],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError(
                f"the checkpoint holds the random states of {len(state['transforms'])} random transforms, the training "
                f"pipeline has {len(self.transforms)}: resume with the train#random_transforms of the interrupted run"
            )
        python = state["python"]
        random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
        np.random.set_state(_numpy_state_from_torch(state["numpy"]))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for transform, transform_state in zip(self.transforms, state["transforms"]):
            transform.R.set_state(_numpy_state_from_torch(transform_state))


class BestModelState:
    """The best model, its record in the key-metric saver and the evaluator's best metric, as one checkpoint entry.

    The key-metric saver writes the best weights to ``model.pt`` (a plain state dict, as inference and the release
    load it). The resumable checkpoint, written after it in the same epoch, carries this entry: a copy of
    ``model.pt``'s weights together with the saver's record and the evaluator's ``best_metric`` /
    ``best_metric_epoch``. On resume all of them are restored from that one file, and ``model.pt`` is rewritten
    from it when it differs (a run killed after writing a newer ``model.pt`` but before its checkpoint), so the best
    model and its record never disagree, and the log tells the true best after any resume.

    Args:
        saver: the key-metric ``CheckpointSaver`` (``save_key_metric=True``, e.g. ``validate#best_saver``).
        evaluator: the evaluator whose key metric picks the best (``validate#evaluator``).
    """

    def __init__(self, saver: Any, evaluator: Any) -> None:
        self.saver = saver
        self.evaluator = evaluator

    def _model_path(self) -> Path:
        if not getattr(self.saver, "key_metric_filename", None):
            raise ValueError("BestModelState needs a key-metric saver with a fixed key_metric_filename (model.pt)")
        return Path(self.saver.save_dir) / self.saver.key_metric_filename

    def state_dict(self) -> dict[str, Any]:
        checkpoint = self.saver._key_metric_checkpoint
        record = checkpoint.state_dict() if checkpoint is not None else {}
        path = self._model_path()
        model = load_checkpoint_file(path, "cpu") if record.get("_saved") and path.is_file() else None
        state = self.evaluator.state
        return {
            "saver": record,
            "best_metric": float(getattr(state, "best_metric", -1)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
            "model": model,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "saver" not in state:  # written by an older version: the saver's record only
            state = {"saver": dict(state), "model": None}
        if state["saver"]:
            self.saver.load_state_dict(state["saver"])
        if "best_metric" in state:
            self.evaluator.state.best_metric = state["best_metric"]
            self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if state["model"] is not None and is_rank0():  # the process that writes the checkpoints
            path = self._model_path()
            current = load_checkpoint_file(path, "cpu") if path.is_file() else None
            if current is None or current.keys() != state["model"].keys() or any(
                not torch.equal(current[k], v) for k, v in state["model"].items()
            ):
                write_atomic(path, lambda tmp: torch.save(state["model"], tmp))
                logger.info(f"{path}: restored the best model of epoch {state.get('best_metric_epoch')} from the "
                            "checkpoint (the file held other weights)")
