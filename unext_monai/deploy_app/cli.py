"""Command line of the MONAI Deploy app: ``python -m unext_monai.deploy_app -i IN -o OUT -m MODEL``.

Everything a user can get wrong is checked here, before the MONAI Deploy SDK, holoscan and torch are imported (they
take seconds): the arguments, the model path, and every input file (decoded in full; unreadable ones are reported and
left out), and every output path (an existing file is never replaced without ``--overwrite``). The run writes
``OUT/report.json`` (:class:`unext_monai.data.inputs.InferenceReport`), one entry per file with what became of it, and
the exit status says whether every input was segmented:

- 0: every input segmented;
- 1: at least one input skipped (not a readable image) or failed during inference, or none to segment;
- 2: bad arguments (nothing run).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "resolve_model", "STACK_BYTES"]

logger = logging.getLogger("unext_monai.deploy_app")

#: the thread stack size holoscan asks for (it warns below it)
STACK_BYTES = 32 * 1024 * 1024
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def resolve_model(path: str | os.PathLike) -> Path:
    """``models/model.ts`` of a release folder, of its ``models/`` folder, the given ``.ts`` file, or the one
    ``<name>/model.ts`` of a folder (a MONAI Application Package's ``/opt/holoscan/models``)."""
    p = Path(path).expanduser().resolve()
    for candidate in (p, p / "model.ts", p / "models" / "model.ts"):
        if candidate.is_file():
            return candidate
    packaged = sorted(p.glob("*/model.ts")) if p.is_dir() else []
    if len(packaged) == 1:
        return packaged[0]
    raise FileNotFoundError(f"{p}: no model.ts there (give bundle/NAME, bundle/NAME/models or the .ts file)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m unext_monai.deploy_app",
        description="Segment 2D images with a released UNeXt bundle (MONAI Deploy App SDK). DICOM input gives a "
                    "DICOM Segmentation, NIfTI a NIfTI mask, other pictures a mask PNG and an overlay PNG; "
                    "OUTPUT/report.json says what became of each input. Exit status 0: all segmented, 1: some not, "
                    "2: bad arguments.",
    )
    ap.add_argument("-i", "--input", default=os.environ.get("HOLOSCAN_INPUT_PATH"),
                    help="image file or folder (default: $HOLOSCAN_INPUT_PATH)")
    ap.add_argument("-o", "--output", default=os.environ.get("HOLOSCAN_OUTPUT_PATH"),
                    help="output folder, created if needed (default: $HOLOSCAN_OUTPUT_PATH)")
    ap.add_argument("-m", "--model", default=os.environ.get("HOLOSCAN_MODEL_PATH"),
                    help="release folder bundle/NAME, its models/ folder, or model.ts (default: $HOLOSCAN_MODEL_PATH)")
    ap.add_argument("--overwrite", action="store_true", help="replace output files that exist (refused otherwise)")
    ap.add_argument("--engine", choices=["fp32", "bf16", "pytorch"], default=None,
                    help="model.onnx on ONNX Runtime (fp32) or OpenVINO bfloat16 (bf16), or the TorchScript network "
                         "(pytorch); default: the bundle's inference.json setting")
    ap.add_argument("-l", "--log-level", default="INFO", type=str.upper, choices=_LEVELS)
    return ap


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    missing = [k for k in ("input", "output", "model") if not getattr(args, k)]
    if missing:
        ap.error(f"missing {', '.join('--' + k for k in missing)} (or the HOLOSCAN_*_PATH variables)")
    if not os.path.exists(args.input):
        ap.error(f"--input {args.input}: no such file or folder")
    try:
        model = resolve_model(args.model)
    except FileNotFoundError as e:
        ap.error(f"--model: {e}")
    output = Path(args.output).expanduser().resolve()
    if output.exists() and not output.is_dir():
        ap.error(f"--output {output}: exists and is not a folder")
    return model


def _raise_stack_limit() -> None:
    """Restart this command with the stack size holoscan asks for, when the hard limit allows it.

    Holoscan warns (twice) when the stack limit is below 32 MiB; the limit of a running process's threads is fixed
    at its start, so the soft limit is raised and the same command executed again (before anything heavy is
    imported). Where the hard limit is lower, holoscan's warning stays: raise it with ``ulimit -s 32768``.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= STACK_BYTES:
        return
    if hard != resource.RLIM_INFINITY and hard < STACK_BYTES:
        return
    resource.setrlimit(resource.RLIMIT_STACK, (STACK_BYTES, hard))
    argv = getattr(sys, "orig_argv", None) or [sys.executable, "-m", "unext_monai.deploy_app", *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])


def _quiet_platform_messages(log_level: str) -> None:
    """Silence what a user of this app cannot act on: holoscan's own log (its CUDA-driver check on a machine without
    a GPU; ``HOLOSCAN_LOG_LEVEL`` set by the user wins), ``LoadImage`` trying the bundle's readers in turn, and
    highdicom's account of the attributes it copies (``unext_monai`` silences the upstream notices it knows on
    import). ``-l DEBUG`` shows all of them."""

    if log_level == "DEBUG":
        return
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR")
    logging.getLogger("LoadImage").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the app on ``argv`` (default: the command line, which may restart with a larger stack limit)."""
    from_command_line = argv is None
    ap = _parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else list(argv))
    model = _check_args(ap, args)
    if from_command_line:
        _raise_stack_limit()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from unext_monai.data.inputs import plan_inference

    try:
        report = plan_inference(args.input, args.output, overwrite=args.overwrite, model=str(model), dicom_seg=True,
                                allow_empty=True)
    except ValueError as e:
        ap.error(str(e))
    if report.items:
        _quiet_platform_messages(args.log_level)
        from unext_monai.bundle_scripts import bundle_scripts
        from unext_monai.deploy_app.app import UNeXtSegmentationApp

        sdk_level = "WARN" if args.log_level == "WARNING" else args.log_level  # the SDK's own spelling
        app_argv = [sys.executable, "unext_monai.deploy_app", "-i", str(Path(args.input).resolve()),
                    "-o", str(Path(args.output).resolve()), "-m", str(model), "-l", sdk_level]
        try:
            with bundle_scripts(model):  # the code the bundle's configs name (``scripts.transforms...``)
                UNeXtSegmentationApp(report=report, engine=args.engine, argv=app_argv).run()
        except BaseException as e:
            report.finish(e)
            raise
    counts = report.finish()
    print(f"{counts['segmented']} of {counts['total']} input(s) segmented, {counts['skipped']} skipped, "
          f"{counts['failed']} failed; report: {report.path}")
    return 0 if counts["segmented"] == counts["total"] and counts["total"] > 0 else 1
