#!/usr/bin/env bash
# Installs torch into the given Python's environment without ever pulling a CUDA build
# onto a machine that has no NVIDIA GPU. Order of preference:
#   1. torch is already importable: nothing to do (a user's own environment);
#   2. pip can see a local build of the pinned release (find-links or a local index,
#      as on our CI machines): install it;
#   3. no NVIDIA driver: the CPU-only wheel from PyTorch's CPU index;
#   4. otherwise the default (CUDA) build from PyPI.
set -euo pipefail
py=${1:-python3}
version=${TORCH_VERSION:-2.13.0}
if "$py" -c 'import torch' 2>/dev/null; then
    echo "torch $("$py" -c 'import torch; print(torch.__version__)') already installed"
    exit 0
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
if "$py" -m pip download --no-deps --no-index -q -d "$probe" "torch==$version" >/dev/null 2>&1; then
    "$py" -m pip install -q "torch==$version"
elif ! command -v nvidia-smi >/dev/null 2>&1; then
    "$py" -m pip install -q "torch==$version" \
        --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
else
    "$py" -m pip install -q "torch==$version"
fi
"$py" -c 'import torch; print("installed torch", torch.__version__)'
