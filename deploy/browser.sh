#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian, for the live page's browser test
# (tests/integration/test_live_page.py, driven by selenium). Debian's packages, never a browser
# downloaded by selenium-manager: the test runs offline and with the distribution's updates.
#
#   deploy/browser.sh install   # apt-get install chromium chromium-driver when missing (root)
#   deploy/browser.sh status    # paths and versions
set -euo pipefail

name=browser stop_timeout=1 stop_poll=1
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # die, need, apt_install

case ${1:-} in
  install)
    need chromium chromium
    need chromedriver chromium-driver
    ;;
  status)
    for cmd in chromium chromedriver; do
      command -v "$cmd" >/dev/null || die "$cmd not found: deploy/browser.sh install"
      echo "$name: $(command -v "$cmd"): $("$cmd" --version 2>/dev/null | head -n 1)"
    done
    ;;
  *) echo "usage: $0 install | status" >&2; exit 2 ;;
esac
