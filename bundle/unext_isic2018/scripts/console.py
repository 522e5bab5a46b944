"""What a user sees on the console: an error of input or settings as its message alone (:func:`plain_errors`), a
mistyped override refused (:func:`check_command_line`), and none of the upstream warnings a user cannot act on
(:func:`quiet_upstream_noise`, applied on import: each filter matches one known message of one package: MONAI's absent
nvImageCodec plugin, PIL's read-only arrays, MONAI's and scikit-image's own deprecations, undefined HD95 and the NumPy
notes on summarising them, ignite's "resuming from iteration 0" on every fresh run).
"""

from __future__ import annotations

import ast
import difflib
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["plain_errors", "check_command_line", "quiet_upstream_noise"]


def quiet_upstream_noise() -> None:
    warnings.filterwarnings("ignore", message=r"NvImgCodecPydicomReader: nvImageCodec decoder", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*get_mask_edges:always_return_as_numpy", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Parameter `min_size` is deprecated")
    # a 2D picture in DICOM (secondary capture, ultrasound) has no patient orientation: nothing to act on
    warnings.filterwarnings("ignore", message=r"PydicomReader: ImageOrientationPatient")
    warnings.filterwarnings("ignore", message=r"the (ground truth|prediction) of class \d+ is all 0")
    for message in (r"Mean of empty slice", r"Degrees of freedom <= 0 for slice", r"All-NaN slice encountered"):
        warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
    dropped = {"monai.data.nvimgcodec_pydicom_plugin": "nvImageCodec is not available",
               "ignite.engine.engine.SupervisedTrainer": "resuming from iteration 0,",
               "ignite.engine.engine.SupervisedEvaluator": "resuming from iteration 0,"}
    for name, fragment in dropped.items():
        logging.getLogger(name).addFilter(lambda record, f=fragment: f not in record.getMessage())


def plain_errors() -> None:
    """Set ``sys.excepthook`` so that a run failing on its input or settings (a ``ValueError`` or ``OSError`` in the
    chain) ends on that message, without the tracebacks MONAI's config parser wraps it in; others keep theirs."""

    def hook(kind: type, error: BaseException, tb: Any) -> None:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, (ValueError, OSError)):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            return sys.__excepthook__(kind, error, tb)
        print(f"{type(cause).__name__}: {cause}", file=sys.stderr)

    sys.excepthook = hook


def _keys(config: Any, prefix: str = "") -> list[str]:
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else []
    return [k for key, value in items for k in (f"{prefix}{key}", *_keys(value, f"{prefix}{key}#"))]


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` naming each ``--key value`` override of ``python -m monai.bundle run`` that names no config
    entry (MONAI adds it silently: ``--max_epoch 2`` would run the whole schedule; the nearest key is named) or gives a
    true/false entry anything but ``True`` or ``False`` (``false`` is a text, which counts as true). Other callers
    pass overrides as they mean them and are not checked."""
    argv = list(sys.argv if argv is None else argv)
    if argv[1:2] != ["run"] or not os.path.normpath(argv[0]).endswith(os.path.join("monai", "bundle", "__main__.py")):
        return
    from monai.bundle import ConfigParser, ConfigWorkflow
    from monai.bundle.scripts import run

    values, tokens = {}, argv[2:]
    for i, token in enumerate(tokens):
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            nxt = tokens[i + 1] if i + 1 < len(tokens) else "--"
            values[key.replace("-", "_")] = value if eq else ("True" if nxt.startswith("--") else nxt)
    if "args_file" in values:
        values = {**ConfigParser.load_config_file(values["args_file"]), **values}
    own = {*inspect.signature(ConfigWorkflow.__init__).parameters, *inspect.signature(run).parameters} - {"override"}
    if "config_file" not in values:
        return
    files = values["config_file"]
    files = ast.literal_eval(files) if isinstance(files, str) and files.startswith("[") else files
    files = files.split(",") if isinstance(files, str) else list(files)
    config = ConfigParser(ConfigParser.load_config_files(files))
    known = set(_keys(config.get()))
    problems = []
    for key, token in values.items():
        if key in own:
            continue
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            problems.append(f"--{key} is no entry of {', '.join(files)}" + (f" (did you mean --{near[0]}?)" if near
                                                                             else ""))
        elif isinstance(config[key], bool) and token not in ("True", "False", True, False):  # fire reads these only
            problems.append(f"--{key} {token}: a true/false entry takes True or False")
    if problems:
        raise ValueError("; ".join(problems) + ". Nothing was run.")
