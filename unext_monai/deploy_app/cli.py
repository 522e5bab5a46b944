"""``python -m unext_monai.deploy_app -i IN -o OUT -m MODEL``: the arguments, inputs and outputs are checked before
the SDK loads; ``OUT/report.json`` says what became of each input. Exit status: 0 every input segmented; 1 any input
skipped or failed, or none; 2 bad arguments (nothing run)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

#: the thread stack size holoscan asks for (it warns, of crashes, below it)
STACK_BYTES = 32 * 1024 * 1024


def resolve_model(path: str | os.PathLike) -> Path:
    """``models/model.ts`` of a release folder, of its ``models/`` folder, the given ``.ts`` file, or the one
    ``<name>/model.ts`` of a folder (a MONAI Application Package's ``/opt/holoscan/models``)."""
    p = Path(path).expanduser().resolve()
    found = [c for c in (p, p / "model.ts", p / "models" / "model.ts") if c.is_file()]
    found = found or (sorted(p.glob("*/model.ts")) if p.is_dir() else [])
    if len(found) != 1:
        raise FileNotFoundError(f"{p}: no model.ts there (give bundle/NAME, bundle/NAME/models or the .ts file)")
    return found[0]


def _raise_stack_limit() -> None:
    """Run this command again with the stack limit holoscan asks for, where the hard limit allows it: the threads'
    stack size is fixed at the process's start (otherwise ``ulimit -s 32768`` does it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < STACK_BYTES and (hard == unlimited or hard >= STACK_BYTES):
        resource.setrlimit(resource.RLIMIT_STACK, (STACK_BYTES, hard))
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main(argv: list[str] | None = None) -> int:
    """Run the app on ``argv`` (default: the command line, which may start again with a larger stack limit)."""
    ap = argparse.ArgumentParser(prog="python -m unext_monai.deploy_app", description=__doc__)
    for flag, name, what in (("-i", "input", "image file or folder"), ("-o", "output", "output folder"),
                             ("-m", "model", "bundle/NAME, its models/, or model.ts")):
        variable = f"HOLOSCAN_{name.upper()}_PATH"
        ap.add_argument(flag, f"--{name}", default=os.environ.get(variable), help=f"{what} (default ${variable})")
    ap.add_argument("--overwrite", action="store_true", help="replace output files that exist (refused otherwise)")
    ap.add_argument("--engine", choices=["fp32", "bf16", "pytorch"], default=None,
                    help="model.onnx beside model.ts on ONNX Runtime (fp32) or OpenVINO bfloat16 (bf16), or the "
                         "network (pytorch); default: the bundle's inference.json setting")
    ap.add_argument("-l", "--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = ap.parse_args(argv)
    missing = [f"--{k}" for k in ("input", "output", "model") if not getattr(args, k)]
    if missing:
        ap.error(f"missing {', '.join(missing)} (or the HOLOSCAN_*_PATH variables)")
    if not os.path.exists(args.input):
        ap.error(f"--input {args.input}: no such file or folder")
    try:
        model = resolve_model(args.model)
    except FileNotFoundError as e:
        ap.error(f"--model: {e}")
    if argv is None:
        _raise_stack_limit()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from unext_monai.data.inputs import plan_inference

    try:
        report = plan_inference(args.input, args.output, overwrite=args.overwrite, model=str(model), dicom_seg=True,
                                allow_empty=True)
    except ValueError as e:  # an output folder in the input folder, or an output file there already
        ap.error(str(e))
    if report.items:
        if args.log_level != "DEBUG":  # what a user cannot act on: holoscan's CUDA check, reader attempts, highdicom
            os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR")
            logging.getLogger("LoadImage").setLevel(logging.WARNING)
            logging.getLogger("highdicom").setLevel(logging.WARNING)
        from unext_monai.bundle_scripts import bundle_scripts
        from unext_monai.deploy_app.app import UNeXtSegmentationApp

        try:
            with bundle_scripts(model):  # the code the bundle's configs name (``scripts.transforms...``)
                UNeXtSegmentationApp(report=report, model=model, engine=args.engine).run()
        except BaseException as e:
            report.finish(e)
            raise
    counts = report.finish()
    print(f"{counts['segmented']} of {counts['total']} input(s) segmented, {counts['skipped']} skipped, "
          f"{counts['failed']} failed; report: {report.path}")
    return 0 if counts["segmented"] == counts["total"] > 0 else 1
