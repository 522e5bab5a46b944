"""``python -m unext_monai.monailabel_app DEST [--overwrite]``: copy the MONAI Label app to DEST, to serve."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

APP_DIR = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str] | None = None) -> int:
    """Copy ``main.py``, ``lib/`` and ``requirements.txt``; 1 (nothing copied) where DEST holds an app already."""
    ap = argparse.ArgumentParser(prog="python -m unext_monai.monailabel_app", description=__doc__)
    ap.add_argument("dest", help="the app folder to create")
    ap.add_argument("--overwrite", action="store_true", help="replace an app already there")
    args = ap.parse_args(argv)
    dest = os.path.abspath(args.dest)
    if os.path.exists(os.path.join(dest, "main.py")) and not args.overwrite:
        print(f"{dest} already holds an app (main.py); --overwrite replaces it", file=sys.stderr)
        return 1
    os.makedirs(dest, exist_ok=True)
    for name in ("main.py", "requirements.txt"):
        shutil.copy2(os.path.join(APP_DIR, name), os.path.join(dest, name))
    shutil.copytree(os.path.join(APP_DIR, "lib"), os.path.join(dest, "lib"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    print(f"MONAI Label app copied to {dest}; start it with:\n"
          f"  python -m monailabel.main start_server --app {dest} --studies STUDIES --conf bundle bundle/NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())
