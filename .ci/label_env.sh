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
ENV_WANT="$(cat "$ROOT/.ci/label_env.sh" "$ROOT/.ci/env_lib.sh" "$REQUIREMENTS" | sha256sum | cut -d' ' -f1)"
PKG_WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
LOG="$VENV/.pip-install.log"
ENV_LABEL="label env"
# shellcheck source=env_lib.sh
source "$ROOT/.ci/env_lib.sh"

check() {
    "$VENV/bin/python" -c "import monailabel.main, monailabel.tasks.infer.basic_infer, monailabel.tasks.train.bundle, \
monailabel.tasks.scoring.epistemic_v2, monailabel.datastore.local, unext_monai" 2>/dev/null
}

if reuse_package_env; then
    exit 0
fi
start=$(date +%s)
new_venv
pip_install torch==2.13.0
pip_install --no-deps monailabel==0.8.5
pip_install torch==2.13.0 -r "$REQUIREMENTS"
install_package
echo "$ENV_WANT" > "$ENV_STAMP"
echo "label env: built $VENV in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)" \
    "(torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
