# Shared helpers of scripts/demo and scripts/test (sourced, not run).

# Installs Debian packages: directly as root, through sudo otherwise; or says what to run.
install_debian() {
  if [ "$(id -u)" = 0 ]; then
    echo "installing $* (apt-get)..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  elif command -v sudo >/dev/null 2>&1; then
    echo "installing $* (sudo apt-get)..." >&2
    sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    echo "missing: $*. Install it with: apt-get install -y $*" >&2
    exit 1
  fi
}

# PostgreSQL's server binaries (initdb, pg_ctl), as the embedded default and the tests use them.
need_postgres() {
  if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    return 0
  fi
  install_debian postgresql
}

# Debian's chromium, for the dashboard's headless-browser test (collector/tests/browser.rs).
need_chromium() {
  if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ]; then
    return 0
  fi
  install_debian chromium
}

# Python 3 with venv, Node.js with npm, and curl: the agent's tests with the real
# OpenTelemetry SDKs (agent/tests/clients) and against the real collector (agent/tests/collector).
need_sdk_tools() {
  local missing=()
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then install_debian "${missing[@]}"; fi
}

# MariaDB's server binaries (mariadbd, mariadb-install-db), for the agent's database-probe tests
# (agent/tests/probes.rs), which run their own primary and replica on loopback ports.
need_mariadb() {
  if [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null 2>&1; then
    return 0
  fi
  install_debian mariadb-server
}

# Redis 7's server, for the board's tests (board/tests: each starts its own on a loopback port) and
# the demo stack's cache.
need_redis() {
  if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || [ -n "${REDIS_SERVER:-}" ]; then
    return 0
  fi
  install_debian redis-server
}

need_cargo() {
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo is missing: install Rust (https://rustup.rs) and run this again" >&2
    exit 1
  }
}
