#!/usr/bin/env bash
# The web console's browser tests (tests/browser) drive Debian's Chromium through Playwright;
# Playwright never downloads a browser build of its own here. Install Chromium from the
# distribution's packages when it is missing (scripts/test.sh calls this; CI starts clean).
set -euo pipefail

CHROMIUM="${DISTILLERY_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: no $CHROMIUM and no apt-get; install Chromium and set DISTILLERY_CHROMIUM" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "ensure-browser: installing chromium with apt-get" >&2
$SUDO apt-get update -qq
# With its recommended packages: the fonts the pages (and their screenshots) are drawn with.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "ensure-browser: chromium did not install at $CHROMIUM" >&2; exit 1; }
