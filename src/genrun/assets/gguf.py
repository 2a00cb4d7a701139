"""GGUF files (as llama.cpp, Ollama and LM Studio keep models) as transformers folders."""

from __future__ import annotations

from pathlib import Path

from genrun.errors import UserError


def gguf_to_transformers(gguf: Path, out: Path) -> None:
    """Read a GGUF file with transformers (dequantized, float32) and save it as a normal folder."""
    import torch
    import transformers

    load = {"gguf_file": gguf.name}
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, **load)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **load)
    except ImportError as exc:  # the gguf package
        raise UserError(f"reading {gguf.name} needs the gguf package: pip install gguf ({exc})") from exc
    # save_pretrained refuses a model loaded from GGUF until the (de)quantizer is taken off.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
