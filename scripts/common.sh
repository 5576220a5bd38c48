# Shared by scripts/demo and scripts/test: a persistent build directory outside the clone,
# and the system libraries the build links against (libpq for PostgreSQL, OpenSSL for JOSE).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vpr-broker/target}"

ensure_system_libraries() {
    local missing=()
    for pkg in libpq-dev libssl-dev pkg-config; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing ${missing[*]}"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
        else
            echo "missing system packages: ${missing[*]} (install them, e.g. with apt-get)" >&2
            exit 1
        fi
    fi
}
