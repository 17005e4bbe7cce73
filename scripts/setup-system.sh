#!/usr/bin/env bash
# Installs the system packages the service and its tests run against, where missing.
# Debian/Ubuntu only; needs root (or sudo). Idempotent: does nothing when all are present.
set -euo pipefail

# chromium, chromium-driver: the browser tests (tests/e2e/test_browser.py) drive a real headless Chromium.
packages=(libmagic1 redis-server nginx-light python3-venv ca-certificates prometheus chromium chromium-driver)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    # nginx-light is one of several nginx builds; any of them will do.
    if [ "$pkg" = nginx-light ] && command -v nginx >/dev/null 2>&1; then continue; fi
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing system packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged services must not hold the ports or sockets the project starts its own on.
for unit in nginx redis-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
    $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
  fi
done
