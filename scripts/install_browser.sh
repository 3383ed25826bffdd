#!/usr/bin/env bash
# Debian's chromium for the viewer's browser test (Playwright drives it; its own browser download needs a CDN).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "[setup] installing chromium (apt) for the viewer test"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
