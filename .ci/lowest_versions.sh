#!/usr/bin/env bash
# The lowest versions pyproject.toml allows for rlhfx's direct dependencies, in an environment
# of their own, with the fast tests run there: a floor set below what the code needs fails
# here instead of in the middle of a user's first run.
#
#   bash .ci/lowest_versions.sh DIR install   # DIR/venv, rlhfx from a copy of the tree in DIR
#   bash .ci/lowest_versions.sh DIR test      # the fast tests, in that copy
#
# torch stays the CPU build installed first (2.13.0 lies on this machine's disk): resolving it
# lowest would download a multi-GB CUDA build, and what torch rlhfx needs is checked by the
# floor's own reasons in pyproject.toml. uv resolves the rest (`--resolution lowest-direct`).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$1"
PHASE="$2"
VENV="$DIR/venv"
SRC="$DIR/src"
start=$(date +%s)
if [ "$PHASE" = install ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q torch==2.13.0 uv
  # Installing builds inside the source tree: a copy keeps the main checkout untouched.
  mkdir -p "$SRC"
  git ls-files -z | xargs -0 cp --parents -t "$SRC"
  "$VENV/bin/python" -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" >"$DIR/torch.txt"
  links=()
  [ -d /opt/wheels ] && links=(--find-links /opt/wheels)
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --resolution lowest-direct \
    --override "$DIR/torch.txt" "${links[@]}" "$SRC[dev]"
  "$VENV/bin/python" -c "import importlib.metadata as m; print('lowest:', ', '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'accelerate', 'pydantic', 'numpy', 'pyarrow', 'matplotlib', 'tokenizers')))"
  echo "lowest-versions environment installed in $(( $(date +%s) - start )) s"
elif [ "$PHASE" = test ]; then
  cd "$SRC"
  # Tests that use each dependency's API (Trainer stages and their resume, TRL's trainers,
  # accelerate's FSDP2 arguments, peft, datasets/pyarrow readers, click's test runner,
  # pydantic configs), without the long training loops and subprocess-heavy CLI tests:
  # about 10 min of CPU on a loaded 2-core machine, 2-3 min on a quiet one.
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    -m "not slow and not install" -k "not real_process and not import_torch and not test_version" \
    tests/test_cli.py tests/test_core_recipe.py tests/test_components_cli.py \
    tests/test_trainer_args.py tests/test_raft_unit.py tests/test_data.py tests/test_lora.py \
    tests/test_reward_model.py tests/test_sft.py tests/test_dpo.py tests/test_fused_decode.py \
    tests/test_decode_kernels.py \
    tests/test_trainer_resume.py::test_resume_between_logging_steps_keeps_the_loss_curve \
    "tests/test_trainer_resume.py::test_metrics_after_a_crash_and_resume_equal_an_uninterrupted_run[sft]"
  echo "lowest-versions tests took $(( $(date +%s) - start )) s"
else
  echo "usage: $0 DIR install|test" >&2
  exit 2
fi
