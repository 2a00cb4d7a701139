"""genrun: run large language models over datasets, configured with Hydra."""

from genrun.api import generate, generation_init, multimodal_generate, multiturn_generate, vllm_shutdown

__version__ = "0.1.0"
__all__ = ["generation_init", "generate", "multimodal_generate", "multiturn_generate", "vllm_shutdown"]
