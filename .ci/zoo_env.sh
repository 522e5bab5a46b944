#!/usr/bin/env bash
# Build the virtual environment in which tests/test_zoo_checks.py runs the MONAI model zoo's checks on bundle/*:
# what the zoo's CI installs for a bundle (torch, monai and numpy at the versions metadata.json states, then every
# package of required_packages_version, all from the package index) plus jsonschema for verify_metadata, and NOT
# unext_monai: a packaged bundle must run on its own scripts/.
# Idempotent: rebuilt only when this script or a bundle's metadata.json changes (or UNEXT_ENV_REBUILD=1).
# Location: $UNEXT_ZOO_VENV, default <repo>/.venv-zoo.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${UNEXT_ZOO_VENV:-$ROOT/.venv-zoo}"
STAMP="$VENV/.unext-env-complete"
LOG="$VENV/.pip-install.log"
ENV_LABEL="zoo env"
# shellcheck source=env_lib.sh
source "$ROOT/.ci/env_lib.sh"
WANT="$(cat "$ROOT/.ci/zoo_env.sh" "$ROOT/.ci/env_lib.sh" "$ROOT"/bundle/*/configs/metadata.json | sha256sum | cut -d' ' -f1)"

if [ "${UNEXT_ENV_REBUILD:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "zoo env: reusing $VENV"
    exit 0
fi
# the requirements of every bundle, as the zoo's ci/get_bundle_requirements.py derives them; one version per package
REQS="$(python3 - "$ROOT"/bundle/*/configs/metadata.json <<'PY'
import json, sys
pins = {}
for path in sys.argv[1:]:
    meta = json.load(open(path))
    wanted = {"torch": meta["pytorch_version"], "monai": meta["monai_version"], "numpy": meta["numpy_version"],
              **meta.get("optional_packages_version", {}), **meta.get("required_packages_version", {})}
    for name, version in wanted.items():
        if pins.setdefault(name, version) != version:
            sys.exit(f"{path}: {name}=={version}, but another bundle wants {pins[name]}")
print(" ".join(f"{n}=={v}" for n, v in pins.items()))
PY
)"
TORCH="$(echo "$REQS" | tr ' ' '\n' | grep '^torch==')"
start=$(date +%s)
new_venv
# torch first, pinned: an open range would pull a CUDA build
pip_install "$TORCH"
# shellcheck disable=SC2086
pip_install $REQS jsonschema
# from / and without PYTHONPATH: a checkout on the path would make unext_monai importable from anywhere else
if (cd / && env -u PYTHONPATH "$VENV/bin/python" -c "import unext_monai") 2>/dev/null; then
    echo "zoo env: unext_monai is importable in $VENV; it must not be" >&2
    exit 1
fi
"$VENV/bin/python" -c "import monai.bundle, jsonschema, fire; print('zoo env: monai', monai.__version__)"
echo "$WANT" > "$STAMP"
echo "zoo env: built $VENV in $(( $(date +%s) - start )) s with $REQS"
