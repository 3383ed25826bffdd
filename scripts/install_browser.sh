#!/usr/bin/env bash
# Debian's chromium for the viewer's browser test (Playwright drives it; Playwright's own browser download needs a
# CDN, which an on-prem machine may not reach). Idempotent: nothing to do when /usr/bin/chromium is there.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "[setup] installing chromium (apt) for the viewer test"
$SUDO apt-get update -qq
# env inside sudo: sudo drops the caller's environment, and a debconf prompt would hang an unattended `make test`.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
[ -x /usr/bin/chromium ] || { echo "[setup] apt installed chromium but /usr/bin/chromium is missing" >&2; exit 1; }
