#!/usr/bin/env bash
# Set-up used by the README and by CI: system packages with apt, then a fresh venv in ./.venv with
# omnisdk and every extra at the versions in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg: audio/video tooling for torchaudio and users' files; espeak-ng: spoken digits in OmniWorld;
# chromium: the app's browser tests (Playwright drives this one and downloads no browser).
SYSTEM_PACKAGES=(ffmpeg espeak-ng sox chromium)
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${SYSTEM_PACKAGES[@]}" >/dev/null
else
    echo "apt-get not found: install ${SYSTEM_PACKAGES[*]} with your package manager" >&2
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e '.[all,dev]'
echo "omnisdk installed in $(pwd)/.venv"
