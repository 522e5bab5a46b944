#!/usr/bin/env bash
# Build the MONAI Deploy virtual environment used by tests/test_deploy_app.py and docs/integrations.md:
# monai-deploy-app-sdk 4.0.0 (holoscan runs its graph on CPU) with the CPU torch, the app's own requirements
# (unext_monai/deploy_app/requirements.txt, what its MONAI Application Package installs), holoscan-cli 3.11.0 (the
# last release with MONAI Deploy's packager, `monai-deploy package`; the SDK's unpinned dependency resolves to 5.x,
# which has none), plus this package (editable).
# Kept apart from the main env: there even `import monai` imports the SDK, holoscan, pydicom and highdicom.
# Idempotent: the env is rebuilt only when this script or the requirements change (or UNEXT_ENV_REBUILD=1); this
# package is re-installed into it when pyproject.toml or the checkout's location changes.
# Location: $UNEXT_DEPLOY_VENV, default <repo>/.venv-deploy.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${UNEXT_DEPLOY_VENV:-$ROOT/.venv-deploy}"
ENV_STAMP="$VENV/.unext-env-complete"
PKG_STAMP="$VENV/.unext-package-installed"
REQUIREMENTS="$ROOT/unext_monai/deploy_app/requirements.txt"
ENV_WANT="$(cat "$ROOT/.ci/deploy_env.sh" "$ROOT/.ci/env_lib.sh" "$REQUIREMENTS" | sha256sum | cut -d' ' -f1)"
PKG_WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
LOG="$VENV/.pip-install.log"
ENV_LABEL="deploy env"
# shellcheck source=env_lib.sh
source "$ROOT/.ci/env_lib.sh"

check() {
    "$VENV/bin/python" -c "import monai.deploy.core, holoscan, highdicom, holoscan_cli.packager, unext_monai.deploy_app.app" \
        2>/dev/null
}

if reuse_package_env; then
    exit 0
fi
start=$(date +%s)
new_venv
# the CPU build first (pinned; an open range would pull a CUDA build), then the SDK beside it
pip_install torch==2.13.0
pip_install torch==2.13.0 monai==1.6.1 -r "$REQUIREMENTS" holoscan-cli==3.11.0
install_package
echo "$ENV_WANT" > "$ENV_STAMP"
echo "deploy env: built $VENV in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
