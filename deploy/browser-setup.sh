#!/usr/bin/env bash
# Makes the dashboard's browser tests possible: Debian's `chromium` and `chromium-driver` (the
# browser builds that Playwright downloads are out of reach here; the tests drive Debian's
# chromium through Playwright's `executable_path`). Idempotent: installs only what is missing;
# without them the browser tests skip and say why.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ "${#need[@]}" -eq 0 ]; then
  echo "browser-setup: chromium and chromium-driver present" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "browser-setup: missing ${need[*]}; run as root to install them" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser-setup: missing ${need[*]} and no apt-get (not a Debian system)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "browser-setup: installing ${need[*]}" >&2
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "browser-setup: installed ${need[*]}" >&2
