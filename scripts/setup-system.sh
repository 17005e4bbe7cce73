#!/usr/bin/env bash
# Installs the system packages the service and its tests run against, where missing.
# Debian/Ubuntu only; needs root (or sudo) only when something is missing. Idempotent.
#
# What it changes on this machine, and nothing else: `apt-get install` of the packages below
# that are missing (it says which before installing). It never stops, disables or reconfigures
# a service: Debian starts the packaged nginx and redis-server units on install, and they keep
# running; the project runs its own redis-server (unix socket, no TCP port), nginx (its own
# port and prefix) and S3 server (free loopback ports) from its work directory.
set -euo pipefail

# openssl: per-run TLS certificates for the local S3 server's internal gRPC (devstack/seaweed.py).
# chromium, chromium-driver: the browser tests (tests/e2e/test_browser.py) drive a real headless Chromium.
# npm: those tests fetch Uppy's prebuilt bundle from the npm registry (into a cache, not the tree).
# libvips-tools: `make bench` compares the image pipeline with vipsthumbnail producing the same files.
packages=(libmagic1 redis-server nginx-light python3-venv ca-certificates openssl chromium chromium-driver npm libvips-tools)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    # nginx-light is one of several nginx builds; any of them will do.
    if [ "$pkg" = nginx-light ] && command -v nginx >/dev/null 2>&1; then continue; fi
    # Any npm will do (one installed with Node.js from elsewhere included).
    if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: system packages present (${packages[*]}); nothing to install"
  exit 0
fi

echo "setup: about to install these Debian packages with apt-get: ${missing[*]}"
echo "setup: (the distribution may start their services, e.g. nginx on port 80 and redis on"
echo "setup:  127.0.0.1:6379; they are left running: the project uses its own instances)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: installed ${missing[*]}"
