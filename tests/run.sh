#!/usr/bin/env bash
# Installs what the end-to-end tests need, then runs every test of the workspace.
#
# Installs, each only when missing or out of date: Debian's chromium (for the
# sample page test), the Node clients of tests/js and examples (npm ci), and
# the Python gRPC packages of tests/python/requirements.txt. Safe to run again.
# Arguments are passed on to `cargo test --workspace`, such as a test name filter.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() {
  echo "tests/run.sh: $*" >&2
}

# Runs a command as root, through sudo when this shell is not root.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    sudo "$@"
  fi
}

install_chromium() {
  if [ -x /usr/bin/chromium ]; then
    return
  fi
  log "installing Debian's chromium"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

# Runs `npm ci` in $1 unless node_modules already matches package-lock.json.
install_node_modules() {
  local dir=$1
  local stamp="$dir/node_modules/.package-lock.installed"
  if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
    return
  fi
  log "npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$dir/package-lock.json" "$stamp"
}

install_python_packages() {
  log "pip install -r tests/python/requirements.txt"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/python/requirements.txt
}

install_chromium
install_node_modules tests/js
install_node_modules examples
install_node_modules bench/reference
install_python_packages

log "cargo test --workspace $*"
cargo test --workspace --no-fail-fast "$@"
