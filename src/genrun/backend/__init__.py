"""Backends: one file each, behind the small interface in genrun.backend.base."""

from genrun.backend.base import Backend, Completion, Failure

# Names users give to generation_init(backend=...) and backend=... on the command line.
TARGETS = {
    "vllm": "genrun.backend.vllm.VLLMBackend",
    "openai": "genrun.backend.openai.OpenAIBackend",
    "hf": "genrun.backend.hf.HFBackend",
}

__all__ = ["Backend", "Completion", "Failure", "TARGETS"]
