#!/usr/bin/env bash
# Build the MONAI Label virtual environment used by tests/test_monailabel_app.py and docs/integrations.md:
# the real, unmodified monailabel 0.8.5 beside torch 2.13.0 and without torchvision, plus this package (editable).
# monailabel is installed without its dependency list, then the app's own requirements
# (unext_monai/monailabel_app/requirements.txt: what the server and the app import; it says what is left out and why).
# torch is pinned first: on this project's machines pip takes the CPU build from the local wheel; elsewhere PyPI's
# x86_64 torch 2.13.0 is a CUDA build (the app runs on either; the CPU build is about 4 GB smaller).
# Idempotent: the env is rebuilt only when this script or the requirements change (or UNEXT_ENV_REBUILD=1); this
# package is re-installed into it when pyproject.toml or the checkout's location changes.
# Location: $UNEXT_LABEL_VENV, default <repo>/.venv-label.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${UNEXT_LABEL_VENV:-$ROOT/.venv-label}"
REQUIREMENTS="$ROOT/unext_monai/monailabel_app/requirements.txt"
ENV_STAMP="$VENV/.unext-env-complete"
PKG_STAMP="$VENV/.unext-package-installed"
ENV_WANT="$(cat "$ROOT/.ci/label_env.sh" "$REQUIREMENTS" | sha256sum | cut -d' ' -f1)"
PKG_WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
LOG="$VENV/.pip-install.log"

check() {
    "$VENV/bin/python" -c "import monailabel.main, monailabel.tasks.infer.basic_infer, monailabel.tasks.train.bundle, \
monailabel.tasks.scoring.epistemic_v2, monailabel.datastore.local, unext_monai" 2>/dev/null
}
# pip's output goes to a log (mostly warnings about this machine's local package mirrors); shown on failure
pip_install() {
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -40 >&2
        echo "label env: pip install $* failed (log: $LOG)" >&2
        exit 1
    fi
}
# this package (its code and the app under unext_monai/monailabel_app), keeping the torch and MONAI pins
install_package() {
    pip_install -e "$ROOT" torch==2.13.0 monai==1.6.1
    check
    echo "$PKG_WANT" > "$PKG_STAMP"
}

if [ "${UNEXT_ENV_REBUILD:-0}" != 1 ] && [ -f "$ENV_STAMP" ] && [ "$(cat "$ENV_STAMP")" = "$ENV_WANT" ]; then
    if [ ! -f "$PKG_STAMP" ] || [ "$(cat "$PKG_STAMP")" != "$PKG_WANT" ] || ! check; then
        echo "label env: re-installing unext-monai into $VENV"
        install_package
    fi
    echo "label env: reusing $VENV"
    exit 0
fi
start=$(date +%s)
rm -rf "$VENV"
python3 -m venv "$VENV"
pip_install --upgrade pip
pip_install torch==2.13.0
pip_install --no-deps monailabel==0.8.5
pip_install torch==2.13.0 -r "$REQUIREMENTS"
install_package
echo "$ENV_WANT" > "$ENV_STAMP"
echo "label env: built $VENV in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)" \
    "(torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
