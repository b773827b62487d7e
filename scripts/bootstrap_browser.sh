#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium at /usr/bin/chromium for the
# report's browser test (tests/test_report.py renders the HTML report and
# checks that its images load). Idempotent: nothing happens when it is
# there already. Needs root (or sudo) and Debian's apt registry.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap_browser: /usr/bin/chromium is missing and there is no apt-get here; install Chromium by hand (tests/test_report.py skips without it)" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo -n)
  else
    echo "bootstrap_browser: installing chromium needs root; run as root or install sudo" >&2
    exit 1
  fi
fi
echo "bootstrap_browser: installing chromium (Debian package)" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { "${sudo[@]}" apt-get update -q \
       && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q \
            --no-install-recommends chromium; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "bootstrap_browser: apt-get could not install chromium (output above)" >&2
  exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "bootstrap_browser: apt-get finished but /usr/bin/chromium is missing" >&2
  exit 1
fi
