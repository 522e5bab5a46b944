#!/usr/bin/env bash
# Build the MONAI Label virtual environment used by tests/test_monailabel_app.py and docs/integrations.md:
# the real, unmodified monailabel 0.8.5 with its own torch/torchvision pair, plus this package (editable).
# Idempotent: the env is rebuilt only when this script changes (or UNEXT_ENV_REBUILD=1); this package is re-installed
# into it when pyproject.toml or the checkout's location changes. Location: $UNEXT_LABEL_VENV, default <repo>/.venv-label.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${UNEXT_LABEL_VENV:-$ROOT/.venv-label}"
ENV_STAMP="$VENV/.unext-env-complete"
PKG_STAMP="$VENV/.unext-package-installed"
ENV_WANT="$(sha256sum "$ROOT/.ci/label_env.sh" | cut -d' ' -f1)"
PKG_WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
LOG="$VENV/.pip-install.log"

check() { "$VENV/bin/python" -c "import monailabel, monailabel.transform.post, torchvision, unext_monai" 2>/dev/null; }
# pip's output goes to a log (mostly warnings about this machine's local package mirrors); shown on failure
pip_install() {
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -40 >&2
        echo "label env: pip install $* failed (log: $LOG)" >&2
        exit 1
    fi
}
# this package (its code and the app under unext_monai/monailabel_app), keeping the torch pair
install_package() {
    pip_install -e "$ROOT" torch==2.14.1 torchvision==0.29.1
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
# torchvision must match torch: monailabel imports it at start-up (monailabel/transform/post.py)
pip_install torch==2.14.1 torchvision==0.29.1
pip_install monailabel==0.8.5 "pydicom<3" "pynetdicom<3" "dicomweb-client[gcp]>=0.59.1,<0.60"
install_package
echo "$ENV_WANT" > "$ENV_STAMP"
echo "label env: built $VENV in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
