#!/usr/bin/env bash
# Puts `promtool` (checks deploy/prometheus/alerts.yml in the tests) into the virtualenv's bin/.
#
# It comes from Debian's `prometheus` package, but only that one binary: the package is
# downloaded (`apt-get download`, no root, nothing installed) and unpacked into a temporary
# directory, so no Prometheus server is installed or started on the machine.
set -euo pipefail
dest=${1:?usage: fetch-promtool.sh VENV_BIN_DIR}
[ -x "$dest/promtool" ] && exit 0
if command -v promtool >/dev/null 2>&1; then
  ln -sf "$(command -v promtool)" "$dest/promtool"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "setup: fetching promtool from Debian's prometheus package (unpacked into $dest only)"
(cd "$work" && apt-get download prometheus >/dev/null 2>&1)
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" "$dest/promtool"
