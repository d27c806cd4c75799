#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages, .venv, a CPU torch wheel on CPU-only
# machines, then the project itself. A second run reuses everything that is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
STAMP=$VENV/.installed

have() { command -v "$1" >/dev/null 2>&1; }

# 1. Chromium: kaleido renders PNG/SVG figures with it; browser tests drive it.
if ! have chromium && ! have chromium-browser && ! have google-chrome; then
    if have apt-get; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
        echo "setup: installing chromium (for PNG/SVG export)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    else
        echo "setup: warning: no Chromium/Chrome found; PNG/SVG export will fail (HTML works)" >&2
    fi
fi

# 2. The virtual environment.
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"

# 3. torch first, so nothing later pulls a multi-GB CUDA build on a CPU-only machine.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    if have nvidia-smi; then
        $PIP install "torch==$TORCH_VERSION"
    else
        # A local or mirrored CPU wheel (torch==X+cpu) first; else PyTorch's CPU index.
        $PIP install "torch==$TORCH_VERSION+cpu" 2>/dev/null \
            || $PIP install "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
    fi
fi

# 4. The project and its tools; redone only when pyproject.toml changes.
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    $PIP install -q -e ".[dev]"
    touch "$STAMP"
fi
