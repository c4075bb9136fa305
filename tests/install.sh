#!/usr/bin/env bash
# Installs everything the test suite needs into the current Python, from a checkout.
# torch is pinned to 2.13.0 (the CPU build on our machines): a bare `torch` requirement would
# pull the newest CUDA wheels, and the `msst` package pins torch<2.12, so msst goes in without
# its dependencies and the ones its code imports are added by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
pip() { python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"; }

pip torch==2.13.0
# Building the registry/compat wheels in the tests (--no-build-isolation) needs these in this Python.
pip setuptools wheel
echo "torch==2.13.0" > /tmp/bsmamba2-constraints.txt
# ./compat installs regularly (not -e): only a wheel install puts its .pth hook into site-packages.
pip -c /tmp/bsmamba2-constraints.txt ./registry ./compat -e ".[test]"
# The LoRA tests use the real loralib and peft (peft pulls transformers; torch stays pinned).
pip -c /tmp/bsmamba2-constraints.txt "loralib>=0.1.2" "peft>=0.14"
# The real MSST package, for the compatibility and separation tests.
pip --no-deps msst==0.1.0 torch-log-wmse==1.1.0
pip -c /tmp/bsmamba2-constraints.txt omegaconf librosa wandb rotary-embedding-torch
# torch-l1-snr requires torchaudio, and pip's newest torchaudio does not load with torch 2.13: install it
# without dependencies; tests/test_snr_losses.py compares its time-domain losses with ours (torchaudio stand-in).
pip --no-deps torch-l1-snr==0.2.1

# museval imports stempeg, which needs the ffmpeg and ffprobe programs.
if ! command -v ffprobe >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "tests/install.sh: museval needs ffmpeg; install it (e.g. sudo apt-get install ffmpeg)" >&2
        exit 1
    fi
fi

# The web app's tests: gradio (the [app] extra), selenium, and a real headless browser from Debian
# (chromium + chromium-driver; nothing is downloaded by selenium itself).
pip -c /tmp/bsmamba2-constraints.txt "gradio>=6" "gradio_client>=2" "selenium>=4.10"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-liberation >/dev/null
    else
        echo "tests/install.sh: the browser test needs chromium and chromium-driver (sudo apt-get install chromium chromium-driver)" >&2
    fi
fi
