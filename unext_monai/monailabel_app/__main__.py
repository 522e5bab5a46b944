"""``python -m unext_monai.monailabel_app DEST [--overwrite]``: copy the MONAI Label app to DEST."""

from __future__ import annotations

import argparse
import sys

from unext_monai.monailabel_app import copy_app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unext_monai.monailabel_app",
                                 description="Copy the UNeXt MONAI Label app (main.py, lib/) to a folder to serve.")
    ap.add_argument("dest", help="the app folder to create")
    ap.add_argument("--overwrite", action="store_true", help="replace an app already there")
    args = ap.parse_args(argv)
    try:
        dest = copy_app(args.dest, overwrite=args.overwrite)
    except FileExistsError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"MONAI Label app copied to {dest}; start it with:\n"
          f"  python -m monailabel.main start_server --app {dest} --studies STUDIES --conf bundle bundle/NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())
