"""genrun: run large language models over datasets, configured with Hydra.

The package holds one package per concept (see the README's "Layout"); at the top stay the
faces users call: `genrun.api` (the seed's functions, re-exported here), `genrun.cli`,
`genrun.serve` and `genrun.errors`. The five functions are imported on first use, so that
`import genrun` (the CLI's `--cfg job`) loads nothing else.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["generation_init", "generate", "multimodal_generate", "multiturn_generate", "vllm_shutdown"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from genrun import api

        return getattr(api, name)
    raise AttributeError(f"module 'genrun' has no attribute {name!r}")
