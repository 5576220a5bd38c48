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

# The demo OpenID Provider's packages (examples/demo-oidc, npm `oidc-provider`), installed
# from its lockfile when missing or when the lockfile changed.
ensure_demo_oidc() {
    npm_ci_once examples/demo-oidc "the demo OpenID Provider"
}

# `npm ci` in $1 (for $2) when its lockfile changed since the last install.
npm_ci_once() {
    local dir=$1
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "Node.js and npm are needed for $2 (e.g. apt-get install nodejs npm)" >&2
        exit 1
    fi
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.installed-from" 2>/dev/null; then
        echo "installing the packages of $2 (npm ci in $dir)"
        (cd "$dir" && npm ci --silent --no-audit --no-fund)
        cp "$dir/package-lock.json" "$dir/node_modules/.installed-from"
    fi
}

# Debian's Chromium and ChromeDriver, for the console's browser tests.
ensure_browser() {
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing chromium and chromium-driver"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
        else
            echo "missing chromium and chromium-driver (install them, e.g. with apt-get)" >&2
            exit 1
        fi
    fi
    npm_ci_once tests/browser "the browser tests' accessibility check (axe-core)"
}
