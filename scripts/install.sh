#!/usr/bin/env bash
# Installs pixgrep into ./.venv on Debian 12 (bookworm) or newer.
#   scripts/install.sh          the product: embedded Milvus Lite, RapidOCR, USE embedder
#   scripts/install.sh --dev    plus everything the test suite uses (tesseract, torch CPU, systemd tooling,
#                               PostgreSQL server binaries that the tests start in a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

apt_pkgs=(python3 python3-venv python3-dev gcc pkg-config libsystemd-dev)
if [ "$dev" = 1 ]; then
  apt_pkgs+=(tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-chi-tra fonts-noto-cjk systemd systemd-container dbus
    postgresql chromium chromium-driver)
fi
if command -v apt-get >/dev/null; then
  # Wait up to 10 min for another apt/dpkg (unattended-upgrades at boot) instead of failing at once.
  apt_wait=(-o DPkg::Lock::Timeout=600)
  $sudo apt-get "${apt_wait[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt_wait[@]}" install -y -qq --no-install-recommends \
    "${apt_pkgs[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$dev" = 1 ]; then
  # The CPU build: a bare `torch` would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[tesseract,ml,systemd,postgres,preview,dev]'
else
  .venv/bin/python -m pip install -q -e '.[systemd]'
fi
echo "pixgrep installed: $(pwd)/.venv/bin/pixgrep"
