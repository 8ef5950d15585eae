"""The built-in rollout engines, registered as any third-party engine is: `hf` (transformers'
generate on the policy) and `vllm` (a colocated vLLM engine; needs `rlhfx[vllm]`)."""

from rlhfx import hookimpl


@hookimpl
def rlhfx_register_rollout_engines(register):
    from .hf import HFEngine
    from .vllm import VLLMEngine

    register(HFEngine)
    register(VLLMEngine)
