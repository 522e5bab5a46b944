# Sourced, not run, by .ci/run and .ci/{label,deploy,zoo}_env.sh: the steps they share, so that each script says
# only what its environment holds. The caller sets ENV_LABEL (how messages name the env), VENV (the env's folder:
# for .ci/run the fresh env it makes and then activates) and LOG (where pip's output goes); the package-env steps
# also need ROOT, ENV_STAMP, ENV_WANT, PKG_STAMP, PKG_WANT and a `check` function.

# pip install into $VENV; its output (mostly warnings about this machine's local package mirrors) is appended to $LOG
# and its end shown when an install fails, which ends the calling script
pip_install() {
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -40 >&2
        echo "$ENV_LABEL: pip install $* failed (log: $LOG)" >&2
        exit 1
    fi
}

# a new, empty $VENV with the current pip
new_venv() {
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    pip_install --upgrade pip
}

# For the envs that hold this package (editable) beside their own pins (MONAI Label, MONAI Deploy):
# install it keeping the torch and MONAI pins, check the env imports what it is for, and stamp it
install_package() {
    pip_install -e "$ROOT" torch==2.13.0 monai==1.6.1
    check
    echo "$PKG_WANT" > "$PKG_STAMP"
}

# true when $VENV was completed for this $ENV_WANT (and no rebuild is asked: UNEXT_ENV_REBUILD=1); this package is
# then re-installed into it when pyproject.toml or the checkout's location changed, or the env no longer imports
reuse_package_env() {
    [ "${UNEXT_ENV_REBUILD:-0}" != 1 ] && [ -f "$ENV_STAMP" ] && [ "$(cat "$ENV_STAMP")" = "$ENV_WANT" ] || return 1
    if [ ! -f "$PKG_STAMP" ] || [ "$(cat "$PKG_STAMP")" != "$PKG_WANT" ] || ! check; then
        echo "$ENV_LABEL: re-installing unext-monai into $VENV"
        install_package
    fi
    echo "$ENV_LABEL: reusing $VENV"
}
