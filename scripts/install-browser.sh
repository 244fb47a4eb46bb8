#!/usr/bin/env bash
# Chromium for the browser tests, from the system's package manager (Playwright's own browser
# download is not used). Does nothing when a chromium is already installed or we cannot install.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser tests (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
else
  echo "note: chromium not found; browser tests will be skipped (install it with your package manager)" >&2
fi
exit 0
